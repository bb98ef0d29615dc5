"""WooCommerce orders: what each order state owes, and the REST order loaded to the cent."""

import copy
import dataclasses
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ISSUING
from connector.plans import Settings, plan_sale
from connector.platforms import common, woocommerce

FIXTURES = Path(__file__).parent.parent / "fixtures" / "woocommerce"
STORE = "loja.exemplo.pt"
SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
TODAY = date(2025, 11, 24)
PAID_FIXTURES = ["paid_b2c_prices_include_tax.json", "paid_b2b_with_nif_meta.json", "refunded_partial.json"]


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def planned(order):
    """The sale as the core plans it once `changes()` said the order is paid (WooCommerce's own rule)."""
    return plan_sale(dataclasses.replace(order, financial_status="paid"), SETTINGS, today=TODAY)


def kinds(changes):
    return [(change.kind, change.refund_id) for change in changes]


# --- what an order state owes ------------------------------------------------------------------------


def test_a_processing_order_with_a_payment_date_is_a_sale():
    assert kinds(woocommerce.changes(load("paid_b2c_prices_include_tax.json"), "order.updated", SETTINGS)) == [
        ("sale", None)]


def test_a_paid_order_with_a_refund_is_the_sale_and_the_refund():
    changes = woocommerce.changes(load("refunded_partial.json"), "order.updated", SETTINGS)
    assert kinds(changes) == [("sale", None), ("refund", "1301")]
    assert {change.order_id for change in changes} == {"1240"}


def test_two_refunds_are_two_changes_whatever_their_order_in_the_payload():
    order = load("refunded_partial.json")
    order["refunds"] = [{"id": 1305, "reason": "", "total": "-7.38"}, *order["refunds"]]
    reversed_order = {**order, "refunds": list(reversed(order["refunds"]))}
    changes = woocommerce.changes(order, "order.updated", SETTINGS)
    assert kinds(changes) == [("sale", None), ("refund", "1301"), ("refund", "1305")]
    assert woocommerce.changes(reversed_order, "order.updated", SETTINGS) == changes


def test_a_completed_order_without_a_payment_date_owes_nothing_and_says_why():
    [change] = woocommerce.changes(load("completed_without_date_paid.json"), "order.updated", SETTINGS)
    assert change.kind == "none"
    assert "#1236" in change.reason and "payment" in change.reason


def test_an_order_on_hold_owes_nothing_until_paid():
    [change] = woocommerce.changes(load("on_hold.json"), "order.created", SETTINGS)
    assert change.kind == "none"
    assert change.reason == "Order #1237 is on hold: nothing is invoiced until it is paid."


@pytest.mark.parametrize("status", ["pending", "failed", "draft", "checkout-draft", "trash", "some-plugin-status"])
def test_unpaid_statuses_owe_nothing_even_with_a_payment_date(status):
    order = {**load("paid_b2c_prices_include_tax.json"), "status": status}
    [change] = woocommerce.changes(order, "order.updated", SETTINGS)
    assert change.kind == "none"
    assert "#1234" in change.reason


def test_the_store_decides_which_statuses_mean_paid():
    order = load("paid_b2c_prices_include_tax.json")
    only_completed = dataclasses.replace(SETTINGS, paid_statuses=("completed",))
    [change] = woocommerce.changes(order, "order.updated", only_completed)
    assert change.kind == "none" and "processing" in change.reason
    completed = {**order, "status": "completed"}
    assert kinds(woocommerce.changes(completed, "order.updated", only_completed)) == [("sale", None)]


def test_a_payment_date_in_the_local_field_only_counts_too():
    order = {**load("paid_b2c_prices_include_tax.json"), "date_paid_gmt": None}
    assert kinds(woocommerce.changes(order, "order.updated", SETTINGS)) == [("sale", None)]


def test_a_refunded_order_is_its_sale_then_its_credit_notes():
    order = {**load("refunded_partial.json"), "status": "refunded"}
    assert kinds(woocommerce.changes(order, "order.updated", SETTINGS)) == [("sale", None), ("refund", "1301")]


def test_a_refunded_order_never_paid_owes_nothing():
    order = {**load("refunded_partial.json"), "status": "refunded", "date_paid": None, "date_paid_gmt": None}
    [change] = woocommerce.changes(order, "order.updated", SETTINGS)
    assert change.kind == "none"


def test_a_cancelled_order_is_a_cancellation_and_its_refunds():
    changes = woocommerce.changes(load("cancelled.json"), "order.updated", SETTINGS)
    assert kinds(changes) == [("cancellation", None), ("refund", "1311")]
    assert {change.order_id for change in changes} == {"1241"}


def test_a_deleted_order_is_a_cancellation():
    # order.deleted carries only the id.
    assert kinds(woocommerce.changes({"id": 1234}, "order.deleted", SETTINGS)) == [("cancellation", None)]


def test_a_restored_order_is_read_by_its_status():
    assert kinds(woocommerce.changes(load("paid_b2c_prices_include_tax.json"), "order.restored", SETTINGS)) == [
        ("sale", None)]


@pytest.mark.parametrize("payload, topic", [
    ({"id": 88, "name": "Caneca", "type": "variable", "price": "12.30"}, "order.updated"),  # a product
    ({"id": 9, "code": "bemvindo10", "amount": "10"}, "order.updated"),  # a coupon
    (load("paid_b2c_prices_include_tax.json"), "product.updated"),
    ({"action": "woocommerce_new_order", "arg": 1234}, "action.woocommerce_new_order"),
    ([1, 2], "order.updated"),
    ("text", "order.updated"),
    ({"id": "1234", "status": "processing"}, "order.updated"),
    ({"id": 1234, "status": 7, "line_items": []}, "order.updated"),
])
def test_what_is_not_an_order_owes_nothing_and_never_raises(payload, topic):
    [change] = woocommerce.changes(payload, topic, SETTINGS)
    assert change.kind == "none"
    assert change.reason


# --- money, to the cent ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAID_FIXTURES)
def test_every_paid_fixture_invoices_exactly_what_was_paid(name):
    payload = load(name)
    plan = planned(woocommerce.to_order(payload, store=STORE))
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal(payload["total"])


def test_a_tax_inclusive_shop_gets_gross_lines_with_the_coupon_as_line_discounts():
    order = woocommerce.to_order(load("paid_b2c_prices_include_tax.json"), store=STORE)
    assert order.taxes_included
    mug, shirt, shipping = order.lines
    assert (mug.unit_price, mug.quantity, mug.discount, mug.tax_rate) == (
        Decimal("12.30"), 2, Decimal("2.46"), 23)
    assert (shirt.unit_price, shirt.discount) == (Decimal("24.99"), Decimal("2.50"))
    assert (shipping.kind, shipping.unit_price, shipping.tax_rate) == ("shipping", Decimal("4.92"), 23)


def test_a_tax_exclusive_shop_gets_net_lines_with_each_lines_rate_and_its_fee():
    order = woocommerce.to_order(load("paid_b2b_with_nif_meta.json"), store=STORE)
    assert not order.taxes_included
    by_key = {line.key: line for line in order.lines}
    assert by_key["PAP-A4-80"].unit_price == Decimal("4.50") and by_key["PAP-A4-80"].tax_rate == 23
    assert by_key["LIV-CONT-PRAT"].tax_rate == 6
    fee = by_key["fee-taxa-de-embalagem"]
    assert (fee.kind, fee.unit_price, fee.tax_rate) == ("fee", Decimal("3.00"), 23)
    items = planned(order).create_body["invoice"]["items"]
    assert {item["tax"]["name"] for item in items} == {SETTINGS.tax_names[Decimal(23)],
                                                        SETTINGS.tax_names[Decimal(6)]}


def test_product_names_are_shown_without_html_entities():
    order = woocommerce.to_order(load("paid_b2b_with_nif_meta.json"), store=STORE)
    assert "Livro «Contabilidade Prática»" in [line.description for line in order.lines]


@pytest.mark.parametrize("name", PAID_FIXTURES)
def test_without_rate_percent_the_rates_are_derived_from_the_amounts(name):
    payload = load(name)
    stated = woocommerce.to_order(payload, store=STORE)
    for tax_line in payload["tax_lines"]:
        del tax_line["rate_percent"]  # stores older than WooCommerce 3.7
    derived = woocommerce.to_order(payload, store=STORE)
    assert [line.tax_rate for line in derived.lines] == [line.tax_rate for line in stated.lines]
    assert planned(derived).computed_total == Decimal(payload["total"])


def test_amounts_too_small_to_tell_a_rate_are_held():
    payload = load("completed_without_date_paid.json")
    payload["tax_lines"][0]["rate_percent"] = None
    [item] = payload["line_items"]
    # 0.10 with 0.02 of tax is 16 %, 22 % or 23 % alike, to the cent.
    item.update(quantity=1, subtotal="0.10", total="0.10", subtotal_tax="0.02", total_tax="0.02",
                taxes=[{"id": 1, "total": "0.02", "subtotal": "0.02"}])
    payload["shipping_lines"] = []
    payload["total"] = "0.12"
    order = woocommerce.to_order(payload, store=STORE)
    assert order.lines[0].tax_problem
    plan = planned(order)
    assert plan.verdict == "hold"
    assert any("Caderno Pautado A5" in reason for reason in plan.reasons)


def test_a_line_under_several_taxes_is_held():
    payload = load("paid_b2b_with_nif_meta.json")
    paper = payload["line_items"][0]
    paper["taxes"] = [{"id": 1, "total": "10.35", "subtotal": "10.35"},
                      {"id": 2, "total": "2.70", "subtotal": "2.70"}]
    paper["total_tax"] = paper["subtotal_tax"] = "13.05"
    plan = planned(woocommerce.to_order(payload, store=STORE))
    assert plan.verdict == "hold"
    assert any("several taxes" in reason for reason in plan.reasons)


def test_a_tax_rate_that_did_not_apply_to_a_line_is_not_a_second_tax():
    payload = load("paid_b2b_with_nif_meta.json")
    payload["line_items"][0]["taxes"].append({"id": 2, "total": "", "subtotal": ""})
    order = woocommerce.to_order(payload, store=STORE)
    assert order.lines[0].tax_rate == 23 and order.lines[0].tax_problem is None


def test_a_negative_fee_is_a_discount_and_the_invoice_still_totals_what_was_paid():
    payload = load("paid_b2b_with_nif_meta.json")
    # A loyalty discount of 8.13 + 1.87 VAT, as WooCommerce adds negative fees.
    payload["fee_lines"].append({"id": 325, "name": "Desconto de fidelização", "tax_class": "",
                                 "tax_status": "taxable", "amount": "-8.13", "total": "-8.13",
                                 "total_tax": "-1.87",
                                 "taxes": [{"id": 1, "total": "-1.87", "subtotal": ""}], "meta_data": []})
    payload["total"] = "93.35"
    order = woocommerce.to_order(payload, store=STORE)
    assert all(line.unit_price >= 0 for line in order.lines)
    assert any(line.discount for line in order.lines)
    plan = planned(order)
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("93.35")


def test_a_negative_fee_in_a_tax_inclusive_shop_adds_up_too():
    payload = load("paid_b2c_prices_include_tax.json")
    payload["fee_lines"] = [{"id": 316, "name": "Desconto", "tax_class": "", "tax_status": "taxable",
                             "amount": "-4.07", "total": "-4.07", "total_tax": "-0.93",
                             "taxes": [{"id": 1, "total": "-0.93", "subtotal": ""}], "meta_data": []}]
    payload["total"] = "44.55"
    plan = planned(woocommerce.to_order(payload, store=STORE))
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == Decimal("44.55")


def test_a_negative_fee_larger_than_the_goods_is_held():
    payload = load("completed_without_date_paid.json")
    payload["fee_lines"] = [{"id": 336, "name": "Vale", "total": "-20.00", "total_tax": "0.00", "taxes": []}]
    payload["total"] = "0.00"
    assert planned(woocommerce.to_order(payload, store=STORE)).verdict == "hold"


def test_a_paid_total_that_the_lines_do_not_make_is_held_with_both_totals():
    payload = {**load("paid_b2c_prices_include_tax.json"), "total": "52.00"}
    plan = planned(woocommerce.to_order(payload, store=STORE))
    assert plan.verdict == "hold"
    assert any("49.55" in reason and "52.00" in reason for reason in plan.reasons)


def test_free_shipping_is_no_line():
    payload = load("paid_b2c_prices_include_tax.json")
    payload["shipping_lines"][0].update(total="0.00", total_tax="0.00",
                                        taxes=[{"id": 1, "total": "", "subtotal": ""}])
    order = woocommerce.to_order(payload, store=STORE)
    assert "shipping" not in [line.kind for line in order.lines]


# --- the order and its buyer -------------------------------------------------------------------------


def test_the_order_is_named_dated_and_placed_as_the_shop_shows_it():
    order = woocommerce.to_order(load("paid_b2c_prices_include_tax.json"), store=STORE)
    assert (order.platform, order.store, order.order_id, order.name) == ("woocommerce", STORE, "1234", "#1234")
    assert order.currency == "EUR" and order.total == Decimal("49.55")
    assert order.created_at == "2025-11-18T14:02:11Z"
    assert order.financial_status == "processing"
    assert order.test is False
    assert order.ship_to_country == "PT"


def test_a_sequential_order_number_names_the_order():
    order = woocommerce.to_order({**load("paid_b2c_prices_include_tax.json"), "number": "2025-0042"}, store=STORE)
    assert order.name == "#2025-0042" and order.order_id == "1234"


def test_the_buyer_comes_from_the_billing_address():
    customer = woocommerce.to_order(load("paid_b2b_with_nif_meta.json"), store=STORE).customer
    assert customer.name == "Rui Mendes"
    assert customer.company == "Papelaria Central, Lda"
    assert customer.email == "compras@papelariacentral.example.pt"
    assert (customer.address.line1, customer.address.city, customer.address.postal_code,
            customer.address.country_code) == ("Avenida da Liberdade, 245", "Lisboa", "1250-143", "PT")
    assert customer.key == "woocommerce-customer-102"


def test_a_guest_is_known_by_their_email_and_goods_go_where_shipped():
    payload = load("refunded_partial.json")
    payload["shipping"]["country"] = "ES"
    order = woocommerce.to_order(payload, store=STORE)
    assert order.customer.key.startswith("woocommerce-email-")
    assert "marta" not in order.customer.key
    assert order.ship_to_country == "ES"


def test_the_nif_is_found_in_the_plugins_meta_however_typed():
    order = woocommerce.to_order(load("paid_b2b_with_nif_meta.json"), store=STORE)
    assert order.customer.tax_id == "501964843"
    client = planned(order).create_body["invoice"]["client"]
    assert client["fiscal_id"] == "501964843"
    assert client["name"] == "Papelaria Central, Lda"


@pytest.mark.parametrize("key", ["billing_nif", "_billing_vat", "vat_number", "_BILLING_NIF "])
def test_each_default_meta_key_is_read(key):
    payload = load("paid_b2b_with_nif_meta.json")
    payload["meta_data"][0].update(key=key, value="508.332.060")
    assert woocommerce.to_order(payload, store=STORE).customer.tax_id == "508332060"


def test_the_stores_own_meta_key_is_read():
    payload = load("paid_b2b_with_nif_meta.json")
    payload["meta_data"][0].update(key="_numero_contribuinte", value="508332060")
    assert woocommerce.to_order(payload, store=STORE).customer.tax_id is None
    order = woocommerce.to_order(payload, store=STORE, tax_id_keys=("_numero_contribuinte",))
    assert order.customer.tax_id == "508332060"


def test_the_nif_is_found_in_the_company_field():
    payload = load("paid_b2b_with_nif_meta.json")
    payload["meta_data"] = []
    payload["billing"]["company"] = "Papelaria Central, Lda - NIF PT501964843"
    assert woocommerce.to_order(payload, store=STORE).customer.tax_id == "501964843"


def test_a_nif_plugin_field_in_the_billing_address_is_read():
    payload = load("paid_b2b_with_nif_meta.json")
    payload["meta_data"] = []
    payload["billing"]["nif"] = "508 332 060"
    assert woocommerce.to_order(payload, store=STORE).customer.tax_id == "508332060"


def test_an_invalid_nif_is_kept_as_typed_for_the_invoice_rules_to_judge():
    payload = load("paid_b2b_with_nif_meta.json")
    payload["meta_data"][0]["value"] = "PT 501 964 844"
    order = woocommerce.to_order(payload, store=STORE)
    assert order.customer.tax_id == "PT 501 964 844"
    plan = planned(order)
    assert plan.create_body["invoice"]["client"].get("fiscal_id") is None
    assert any("not valid" in note for note in plan.notes)


# --- malformed orders --------------------------------------------------------------------------------


@pytest.mark.parametrize("change, field", [
    (lambda o: o.pop("prices_include_tax"), "prices_include_tax"),
    (lambda o: o.update(total="quarenta"), "total"),
    (lambda o: o.update(line_items=[]), "line_items"),
    (lambda o: o["line_items"][0].update(total="-5.00"), "line_items.0.total"),
    (lambda o: o["line_items"][0].update(quantity="2"), "line_items.0.quantity"),
    (lambda o: o.update(currency="euro"), "currency"),
    (lambda o: o.update(id="1234"), "id"),
])
def test_a_malformed_order_is_a_load_error_naming_the_field_and_no_value(change, field):
    payload = copy.deepcopy(load("paid_b2b_with_nif_meta.json"))
    change(payload)
    with pytest.raises(common.LoadError) as caught:
        woocommerce.to_order(payload, store=STORE)
    text = str(caught.value)
    assert text.startswith("WooCommerce order not loaded")
    assert field in text
    for value in ("quarenta", "-5.00", "euro", "501 964 843", "compras@"):
        assert value not in text


@pytest.mark.parametrize("payload", [None, [], "order", {"id": 1234}])
def test_what_is_not_an_order_at_all_is_a_load_error(payload):
    with pytest.raises(common.LoadError):
        woocommerce.to_order(payload, store=STORE)


def test_the_rest_apis_order_is_used_as_it_is():
    payload = load("paid_b2c_prices_include_tax.json")
    assert woocommerce.unwrap(payload) is payload
