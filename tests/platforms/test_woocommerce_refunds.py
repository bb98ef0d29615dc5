"""WooCommerce refunds: the REST refund object as a `Refund` whose lines match the invoice's, and its snapshot."""

import dataclasses
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ISSUING
from connector.plans import Settings, plan_credit_note
from connector.platforms import common, woocommerce

FIXTURES = Path(__file__).parent.parent / "fixtures" / "woocommerce"
STORE = "loja.exemplo.pt"
SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
TODAY = date(2025, 11, 25)


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def paid_sale(order):
    """The sale as the core holds it once `changes()` said it is paid."""
    return dataclasses.replace(woocommerce.to_order(order, store=STORE), financial_status="paid")


def test_refund_lines_carry_the_order_lines_keys_with_positive_tax_included_amounts():
    order = load("refunded_partial.json")
    refund = woocommerce.to_refund(load("refund_line_items.json"), store=STORE, order=order)
    sale_lines = {line.key: line for line in woocommerce.to_order(order, store=STORE).lines}
    mug, shipping = refund.lines
    assert mug.key == "CAN-AZUL" and mug.key in sale_lines
    assert mug.description == sale_lines["CAN-AZUL"].description == "Caneca de Cerâmica – Azul"
    assert (mug.quantity, mug.amount, mug.tax_rate, mug.kind) == (1, Decimal("12.30"), 23, "product")
    assert (shipping.key, shipping.amount, shipping.tax_rate, shipping.kind) == (
        "shipping", Decimal("4.92"), 23, "shipping")
    assert shipping.key in sale_lines
    assert refund.amount == Decimal("17.22") == sum(line.amount for line in refund.lines)
    assert refund.restocking_fee == 0


def test_the_refund_names_its_order_store_and_time():
    order = load("refunded_partial.json")
    refund = woocommerce.to_refund(load("refund_line_items.json"), store=STORE, order=order)
    assert (refund.platform, refund.store, refund.refund_id, refund.order_id) == (
        "woocommerce", STORE, "1301", "1240")
    assert (refund.order_name, refund.currency) == ("#1240", "EUR")
    assert refund.created_at == "2025-11-24T11:02:45Z"


def test_without_its_order_the_refund_is_keyed_alike_from_its_own_fields():
    with_order = woocommerce.to_refund(load("refund_line_items.json"), store=STORE,
                                       order=load("refunded_partial.json"))
    alone = woocommerce.to_refund(load("refund_line_items.json"), store=STORE)
    assert [(line.key, line.amount, line.tax_rate) for line in alone.lines] == [
        (line.key, line.amount, line.tax_rate) for line in with_order.lines]
    assert alone.order_id == "1240"  # from the refund's _links.up


def test_the_order_id_can_be_given_when_the_refund_object_lacks_it():
    payload = load("refund_line_items.json")
    del payload["_links"]
    assert woocommerce.to_refund(payload, store=STORE, order_id="1240").order_id == "1240"
    with pytest.raises(common.LoadError) as caught:
        woocommerce.to_refund(payload, store=STORE)
    assert "order_id" in str(caught.value)


def test_a_refund_of_another_order_than_the_one_given_is_refused():
    other = {**load("refunded_partial.json"), "id": 999}
    with pytest.raises(common.LoadError):
        woocommerce.to_refund(load("refund_line_items.json"), store=STORE, order=other)


def test_a_line_refunded_without_its_quantity_gives_back_its_amount():
    payload = load("refund_line_items.json")
    payload["line_items"][0]["quantity"] = 0
    mug = woocommerce.to_refund(payload, store=STORE, order=load("refunded_partial.json")).lines[0]
    assert (mug.quantity, mug.amount) == (1, Decimal("12.30"))


def test_an_amount_only_refund_is_money_spread_over_the_invoices_rates():
    order = load("refunded_partial.json")
    refund = woocommerce.to_refund(load("refund_amount_only.json"), store=STORE, order=order)
    assert refund.amount == Decimal("5.00")
    assert [line.kind for line in refund.lines] == ["adjustment"]
    assert sum(line.amount for line in refund.lines) == Decimal("5.00")
    plan = plan_credit_note(refund, paid_sale(load("refunded_partial.json")), SETTINGS, Decimal("36.90"), TODAY)
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == Decimal("5.00")
    assert {item["tax"]["name"] for item in plan.create_body["invoice"]["items"]} == {
        SETTINGS.tax_names[Decimal(23)]}


def test_a_refund_with_lines_becomes_a_credit_note_of_exactly_what_went_back():
    order = load("refunded_partial.json")
    refund = woocommerce.to_refund(load("refund_line_items.json"), store=STORE, order=order)
    plan = plan_credit_note(refund, paid_sale(order), SETTINGS, Decimal("36.90"), TODAY)
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("17.22")
    assert [item["name"] for item in plan.create_body["invoice"]["items"]] == ["CAN-AZUL", "shipping"]


def test_less_money_back_than_the_lines_is_a_restocking_fee():
    payload = {**load("refund_line_items.json"), "amount": "15.00"}
    refund = woocommerce.to_refund(payload, store=STORE, order=load("refunded_partial.json"))
    assert refund.amount == Decimal("15.00")
    assert refund.restocking_fee == Decimal("2.22")


def test_a_refunded_fee_matches_the_orders_fee_line():
    order = load("paid_b2b_with_nif_meta.json")
    payload = load("refund_amount_only.json")
    payload.update(amount="3.69", fee_lines=[{
        "id": 1361, "name": "Taxa de embalagem", "tax_class": "", "tax_status": "taxable", "total": "-3.00",
        "total_tax": "-0.69", "taxes": [{"id": 1, "total": "-0.69", "subtotal": ""}],
        "meta_data": [{"id": 13611, "key": "_refunded_item_id", "value": "324"}]}])
    payload["_links"]["up"] = [{"href": "https://loja.exemplo.pt/wp-json/wc/v3/orders/1235"}]
    [fee] = woocommerce.to_refund(payload, store=STORE, order=order).lines
    sale_keys = [line.key for line in woocommerce.to_order(order, store=STORE).lines]
    assert fee.key in sale_keys and fee.amount == Decimal("3.69") and fee.tax_rate == 23


def test_a_refunded_lines_rate_is_derived_when_no_tax_line_states_it():
    payload = load("refund_line_items.json")
    payload["tax_lines"] = []
    refund = woocommerce.to_refund(payload, store=STORE, order_id="1240")
    assert [line.tax_rate for line in refund.lines] == [23, 23]


@pytest.mark.parametrize("change, field", [
    (lambda r: r.pop("amount"), "amount"),
    (lambda r: r.update(amount="-17.22"), "amount"),
    (lambda r: r["line_items"][0].update(total="dez"), "line_items.0.total"),
    (lambda r: r.update(id=None), "id"),
])
def test_a_malformed_refund_is_a_load_error_naming_the_field(change, field):
    payload = load("refund_line_items.json")
    change(payload)
    with pytest.raises(common.LoadError) as caught:
        woocommerce.to_refund(payload, store=STORE, order=load("refunded_partial.json"))
    assert caught.value.what == "refund"
    assert field in str(caught.value) and "dez" not in str(caught.value)


# --- snapshot ----------------------------------------------------------------------------------------


class RestAPI:
    """What the REST client answers GET orders/{id}/refunds/{refund_id} with."""

    def __init__(self, refund):
        self.refund = refund
        self.calls = []

    def get_refund(self, order_id, refund_id):
        self.calls.append((order_id, refund_id))
        return self.refund


def test_a_refunds_snapshot_is_its_rest_object():
    api = RestAPI(load("refund_line_items.json"))
    change = common.Change(kind="refund", order_id="1240", refund_id="1301")
    snapshot = woocommerce.snapshot(change, load("refunded_partial.json"), api)
    assert api.calls == [("1240", "1301")]
    assert woocommerce.to_refund(snapshot, store=STORE).amount == Decimal("17.22")


def test_without_rest_credentials_a_refund_cannot_be_read_and_says_what_is_missing():
    change = common.Change(kind="refund", order_id="1240", refund_id="1301")
    with pytest.raises(common.PlatformRefused) as caught:
        woocommerce.snapshot(change, load("refunded_partial.json"), None)
    assert "WOOCOMMERCE_CONSUMER_KEY" in str(caught.value) and "1301" in str(caught.value)


def test_the_rest_clients_errors_go_up_unchanged():
    class Down(RestAPI):
        def get_refund(self, order_id, refund_id):
            raise common.PlatformUnavailable("WooCommerce GET orders/1240/refunds/1301: HTTP 503")

    change = common.Change(kind="refund", order_id="1240", refund_id="1301")
    with pytest.raises(common.PlatformUnavailable):
        woocommerce.snapshot(change, load("refunded_partial.json"), Down(None))


def test_other_changes_snapshot_the_payload_itself():
    order = load("paid_b2c_prices_include_tax.json")
    assert woocommerce.snapshot(common.Change(kind="sale", order_id="1234"), order, None) == order
