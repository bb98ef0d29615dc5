"""Shopify refunds (`refunds/create`, and the entries of an order's `refunds[]`) loaded into a `Refund`."""

import copy
import json
from decimal import Decimal
from pathlib import Path

import pytest

from connector.orders import Refund, RefundLine
from connector.platforms import shopify

FIXTURES = Path(__file__).parent.parent / "fixtures" / "shopify"
STORE = "loja-exemplo.myshopify.com"
D = Decimal


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def product(key, description, quantity, amount, rate):
    return RefundLine(key=key, description=description, quantity=D(quantity), amount=D(amount), tax_rate=D(rate))


def shipping(description, amount, rate):
    return RefundLine(key="shipping", description=description, quantity=D(1), amount=D(amount), tax_rate=D(rate),
                      kind="shipping")


def adjustment(amount):
    return RefundLine(key="refund-adjustment", description="Refund adjustment", quantity=D(1), amount=D(amount),
                      tax_rate=D(0), kind="adjustment")


def refund(refund_id, order_id, amount, lines, created_at, *, fee="0", currency="EUR"):
    return Refund(platform="shopify", store=STORE, refund_id=str(refund_id), order_id=str(order_id),
                  order_name=None, currency=currency, lines=tuple(lines), amount=D(amount), restocking_fee=D(fee),
                  created_at=created_at)


MUG = "Caneca de cerâmica"
# Each refund fixture, the paid fixture of the order it refunds, and the Refund it loads to (presentment money).
EXPECTED = {
    "refund_full_b2c.json": ("paid_b2c_tax_included.json", refund(
        1012345678002, 5801234567001, "59.86",
        [product("CAN-CER-01", MUG, 3, "29.97", 23),
         product("AVL-AZ-M", "Avental de linho — Azul / M", 1, "24.90", 23),
         shipping("Envio standard (CTT)", "4.99", 23)],
        "2026-11-28T10:04:11+00:00")),
    "refund_partial_one_line.json": ("paid_b2c_tax_included.json", refund(
        1012345678003, 5801234567001, "9.99", [product("CAN-CER-01", MUG, 1, "9.99", 23)],
        "2026-11-29T15:20:03+00:00")),
    "refund_shipping_only.json": ("paid_madeira.json", refund(
        1012345678004, 5801234567015, "7.90", [shipping("Shipping", "7.90", 22)], "2026-12-01T09:30:00+00:00")),
    "refund_amount_only.json": ("paid_with_discount_and_nif.json", refund(
        1012345678005, 5801234567002, "10.00", [adjustment("10.00")], "2026-12-02T11:00:00+00:00")),
    "refund_with_restocking_fee.json": ("paid_b2b_nif_in_company.json", refund(
        1012345678006, 5801234567019, "147.00",
        [product("CAD-ERGO", "Cadeira de escritório Ergo — Preto", 1, "149.00", 23)],
        "2026-12-03T16:45:00+00:00", fee="2.00")),
    "refund_mixed_rates.json": ("paid_mixed_rates.json", refund(
        1012345678007, 5801234567004, "24.50",
        [product("LIV-OS-MAIAS", "Livro: Os Maias", 1, "18.50", 6),
         product("MARC-PELE", "Marcador de livro em pele", 1, "6.00", 23)],
        "2026-12-04T10:10:10+00:00")),
    "refund_tax_excluded.json": ("paid_tax_excluded.json", refund(
        1012345678008, 5801234567003, "61.50",
        [product("KIT-FER-20", "Kit de ferramentas", 1, "61.50", 23)],
        "2026-12-05T12:00:00+00:00")),
    "refund_shipping_tax_added.json": ("paid_b2c_tax_included.json", refund(
        1012345678010, 5801234567001, "14.98",
        [product("CAN-CER-01", MUG, 1, "9.99", 23), shipping("Shipping", "4.99", 23)],
        "2026-12-07T10:00:00+00:00")),
    "refund_usd_presentment.json": ("paid_usd_presentment.json", refund(
        1012345678009, 5801234567024, "10.83", [product("CAN-CER-01", MUG, 1, "10.83", 23)],
        "2026-12-06T08:00:00+00:00", currency="USD")),
}


def test_topics():
    assert (shopify.REFUND_TOPIC, shopify.CANCEL_TOPIC) == ("refunds/create", "orders/cancelled")


def test_every_refund_fixture_is_expected_and_commented():
    assert sorted(p.name for p in FIXTURES.glob("refund_*.json")) == sorted(EXPECTED)
    for name in [*EXPECTED, "cancelled_unpaid.json", "cancelled_after_payment.json"]:
        assert load(name)["_comment"].strip()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_refund_fixture_loads_to_the_expected_refund(name):
    _, expected = EXPECTED[name]

    assert shopify.to_refund(load(name), store=STORE) == expected


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_refund_lines_match_the_lines_of_their_order(name):
    order_file, _ = EXPECTED[name]
    payload = load(name)
    order = shopify.to_order(load(order_file), store=STORE)
    loaded = shopify.to_refund(payload, store=STORE)

    assert loaded.order_id == order.order_id
    by_key = {line.key: line for line in order.lines}
    for line in loaded.lines:
        if line.kind == "adjustment":
            continue
        ordered = by_key[line.key]  # the same key as the invoice's item
        assert line.tax_rate == ordered.tax_rate
        assert line.quantity <= ordered.quantity
        assert line.kind == ("shipping" if ordered.kind == "shipping" else "product")
        if line.kind == "product":
            assert line.description == ordered.description
    # And the refund line item points at the order line it names.
    ids = {item["id"] for item in load(order_file)["line_items"]}
    assert all(item["line_item_id"] in ids for item in payload["refund_line_items"])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_lines_less_what_was_kept_is_what_went_back(name):
    loaded = shopify.to_refund(load(name), store=STORE)

    assert sum(line.amount for line in loaded.lines) - loaded.restocking_fee == loaded.amount
    assert all(line.amount >= 0 for line in loaded.lines)
    assert loaded.restocking_fee >= 0


def test_a_full_refund_gives_back_the_order_total():
    order = shopify.to_order(load("paid_b2c_tax_included.json"), store=STORE)
    loaded = shopify.to_refund(load("refund_full_b2c.json"), store=STORE)

    assert loaded.amount == order.total == sum(line.amount for line in loaded.lines)
    assert {line.key for line in loaded.lines} == {line.key for line in order.lines}


# --- lines without ids ------------------------------------------------------------------------------


def _without_ids(payload, keep=("sku", "variant_id", "product_id")):
    """`payload`'s line items (an order's, or a refund's copies) without ids, nor the fields not in `keep`."""
    items = payload.get("line_items") or [entry["line_item"] for entry in payload.get("refund_line_items", [])]
    for item in items:
        item.pop("id", None)
        for name in {"sku", "variant_id", "product_id"} - set(keep):
            item[name] = None
    return payload


@pytest.mark.parametrize("keep", [("sku",), ("variant_id",), ()], ids=["by sku", "by variant", "by place"])
def test_a_refund_of_lines_without_ids_matches_the_keys_of_its_order(keep):
    order_payload = _without_ids(load("paid_b2c_tax_included.json"), keep)
    refund_payload = _without_ids(load("refund_full_b2c.json"), keep)
    for entry in refund_payload["refund_line_items"]:
        entry.pop("line_item_id")

    order = shopify.to_order(order_payload, store=STORE)
    loaded = shopify.to_refund(refund_payload, store=STORE, order=order_payload)

    assert [line.key for line in loaded.lines] == [line.key for line in order.lines]
    assert loaded.amount == order.total == D("59.86")


def test_a_refund_line_whose_copy_lacks_the_id_is_matched_by_its_line_item_id():
    order_payload = load("paid_b2c_tax_included.json")
    for item in order_payload["line_items"]:
        item.update(sku=None, variant_id=None, product_id=None)  # keyed by id alone
    refund_payload = _without_ids(load("refund_partial_one_line.json"), keep=())  # line_item_id kept

    order = shopify.to_order(order_payload, store=STORE)
    loaded = shopify.to_refund(refund_payload, store=STORE, order=order_payload)

    line_id = refund_payload["refund_line_items"][0]["line_item_id"]
    assert loaded.lines[0].key == f"shopify-line-{line_id}" == order.lines[0].key


def test_a_refund_line_that_says_nothing_of_which_line_it_is_is_refused():
    payload = _without_ids(load("refund_partial_one_line.json"), keep=())

    with pytest.raises(shopify.LoadError, match=r"refund_line_items\.0\.line_item\.id: the line has no id"):
        shopify.to_refund(payload, store=STORE)


# --- shipping ------------------------------------------------------------------------------------------


def test_shipping_in_refund_shipping_lines_is_not_counted_again_from_its_order_adjustment():
    payload = load("refund_full_b2c.json")
    assert payload["refund_shipping_lines"] and payload["order_adjustments"][0]["kind"] == "shipping_refund"

    loaded = shopify.to_refund(payload, store=STORE)

    shipped = [line for line in loaded.lines if line.kind == "shipping"]
    assert shipped == [shipping("Envio standard (CTT)", "4.99", 23)]


def test_shipping_as_an_order_adjustment_of_an_older_api_version():
    payload = load("refund_shipping_only.json")
    assert "refund_shipping_lines" not in payload

    loaded = shopify.to_refund(payload, store=STORE)

    # -7.90 and -1.42: the absolute value, and 1.42 is 22 % (Madeira) of 7.90 tax included, not 23 %.
    assert loaded.lines == (shipping("Shipping", "7.90", 22),)
    assert loaded.amount == D("7.90") and loaded.restocking_fee == 0


def test_a_tax_inclusive_refund_with_shipping_as_shopify_documents_it_is_the_right_credit_note():
    from connector.plans import plan_credit_note
    from tests.test_plans import SETTINGS

    order_payload = load("paid_b2c_tax_included.json")
    sale = shopify.to_order(order_payload, store=STORE)
    loaded = shopify.to_refund(load("refund_shipping_tax_added.json"), store=STORE, order=order_payload)

    plan = plan_credit_note(loaded, sale, SETTINGS, left_to_credit=sale.total)

    assert plan.verdict == "issue", plan.reasons
    items = plan.create_body["invoice"]["items"]
    assert [(i["name"], i["quantity"], i["tax"]["name"]) for i in items] == [
        ("CAN-CER-01", D(1), "IVA23"), ("shipping", D(1), "IVA23")]
    # 4.06 + 0.93 = 4.99 given back for the shipping, at 23 %: its net unit price is 4.99 / 1.23.
    assert items[1]["unit_price"] == D("4.0569")
    assert plan.computed_total == D("14.98") == loaded.amount


def _shipping_adjustment(amount, tax, refunded):
    """refund_partial_one_line.json (9.99 at 23 %) also refunding shipping as a shipping_refund adjustment."""
    payload = load("refund_partial_one_line.json")
    payload["order_adjustments"] = [{"kind": "shipping_refund", "amount": amount, "tax_amount": tax}]
    payload["transactions"][0]["amount"] = refunded
    return payload


@pytest.mark.parametrize(("amount", "tax", "refunded", "given_back", "rate", "fee"), [
    ("-4.06", "-0.93", "14.98", "4.99", 23, "0.00"),  # tax added to the amount, as documented
    ("-4.99", "-0.93", "14.98", "4.99", 23, "0.00"),  # tax inside the amount, as some payloads send it
    # 0.06 is 6 % of 1.00 added and, to the cent, 6 % inside 1.00: only the transactions tell which.
    ("-1.00", "-0.06", "11.05", "1.06", 6, "0.00"),
    ("-1.00", "-0.06", "10.99", "1.00", 6, "0.00"),
    ("-4.06", "-0.93", "13.98", "4.99", 23, "1.00"),  # a euro kept back: the rate tells
    ("-4.99", "-0.93", "13.98", "4.99", 23, "1.00"),
    ("-6.48", "-1.42", "16.99", "7.90", 22, "0.90"),  # Madeira's 22 % is a rate the tax can be
    ("-4.00", "-0.24", "14.23", "4.24", 6, "0.00"),
])
def test_a_shipping_adjustment_is_read_the_way_that_adds_up(amount, tax, refunded, given_back, rate, fee):
    loaded = shopify.to_refund(_shipping_adjustment(amount, tax, refunded), store=STORE, taxes_included=True)

    assert loaded.lines == (product("CAN-CER-01", MUG, 1, "9.99", 23), shipping("Shipping", given_back, rate))
    assert (loaded.amount, loaded.restocking_fee) == (D(refunded), D(fee))


def test_a_shipping_adjustment_no_reading_makes_sense_of_is_held_with_its_rate():
    from connector.plans import plan_credit_note
    from tests.test_plans import SETTINGS

    order_payload = load("paid_b2c_tax_included.json")
    sale = shopify.to_order(order_payload, store=STORE)
    # 2.00 of tax on 4.00: neither 50 % (added) nor 100 % (inside) is a VAT rate, and 12.99 adds up to neither.
    payload = _shipping_adjustment("-4.00", "-2.00", "12.99")

    loaded = shopify.to_refund(payload, store=STORE, order=order_payload)
    plan = plan_credit_note(loaded, sale, SETTINGS, left_to_credit=sale.total)

    assert loaded.lines[-1] == shipping("Shipping", "6.00", 50)  # the documented reading
    assert plan.verdict == "hold"
    assert any("VAT at 50 %" in reason for reason in plan.reasons)


def test_shipping_rate_follows_the_refund_s_own_lines_first():
    payload = load("refund_partial_one_line.json")
    payload["order_adjustments"] = [{"kind": "shipping_refund", "amount": "-4.99", "tax_amount": "-0.93"}]
    payload["transactions"][0]["amount"] = "14.98"

    loaded = shopify.to_refund(payload, store=STORE)

    assert loaded.lines[-1] == shipping("Shipping", "4.99", 23)
    assert loaded.amount == D("14.98")


def test_shipping_without_tax_is_at_zero():
    payload = load("refund_shipping_only.json")
    payload["order_adjustments"][0]["tax_amount"] = "0.00"
    payload["order_adjustments"][0]["tax_amount_set"] = None

    assert shopify.to_refund(payload, store=STORE).lines == (shipping("Shipping", "7.90", 0),)


def _with_net_shipping(adjustment_tax):
    """refund_tax_excluded.json also refunding the order's 5.00 net shipping, as API 2025-04 sends it."""
    payload = load("refund_tax_excluded.json")
    order = load("paid_tax_excluded.json")
    money = {"shop_money": {"amount": "5.00", "currency_code": "EUR"},
             "presentment_money": {"amount": "5.00", "currency_code": "EUR"}}
    line = order["shipping_lines"][0]
    payload["refund_shipping_lines"] = [
        {"id": 1, "shipping_line_id": line["id"], "subtotal_amount_set": money, "shipping_line": line},
    ]
    if adjustment_tax:
        payload["order_adjustments"] = [
            {"kind": "shipping_refund", "amount": "-5.00", "tax_amount": adjustment_tax},
        ]
    payload["transactions"][0]["amount"] = "67.65"
    return payload


@pytest.mark.parametrize("adjustment_tax", [None, "-1.15"], ids=["from the shipping line", "from the adjustment"])
def test_a_refund_shipping_line_without_its_tax_amount(adjustment_tax):
    # Not every version sends tax_amount_set: the tax is then the adjustment's, else the shipping line's share.
    loaded = shopify.to_refund(_with_net_shipping(adjustment_tax), store=STORE)

    assert loaded.lines[-1] == shipping("Envio standard (CTT)", "6.15", 23)
    assert (loaded.amount, loaded.restocking_fee) == (D("67.65"), 0)


def test_a_shipping_rate_read_from_its_amounts_alone():
    payload = _with_net_shipping("-1.15")
    payload["refund_shipping_lines"][0]["shipping_line"]["tax_lines"] = []
    payload["refund_line_items"] = []
    payload["transactions"][0]["amount"] = "6.15"

    assert shopify.to_refund(payload, store=STORE).lines == (shipping("Envio standard (CTT)", "6.15", 23),)


# --- amounts ---------------------------------------------------------------------------------------------


def test_amount_only_refund_is_one_adjustment_line():
    loaded = shopify.to_refund(load("refund_amount_only.json"), store=STORE)

    assert loaded.lines == (adjustment("10.00"),)
    assert (loaded.amount, loaded.restocking_fee) == (D("10.00"), 0)


def test_a_refund_of_more_than_its_lines_adds_the_excess_as_an_adjustment():
    payload = load("refund_partial_one_line.json")
    payload["transactions"][0]["amount"] = "12.49"

    loaded = shopify.to_refund(payload, store=STORE)

    assert loaded.lines == (product("CAN-CER-01", MUG, 1, "9.99", 23), adjustment("2.50"))
    assert (loaded.amount, loaded.restocking_fee) == (D("12.49"), 0)


def test_restocking_fee_is_what_the_shop_kept():
    loaded = shopify.to_refund(load("refund_with_restocking_fee.json"), store=STORE)

    assert loaded.amount == D("147.00")
    assert loaded.restocking_fee == D("2.00")
    assert [line.amount for line in loaded.lines] == [D("149.00")]  # no adjustment line: nothing extra went back


def test_only_successful_refund_transactions_count():
    payload = load("refund_mixed_rates.json")
    paid = payload["transactions"][0]
    payload["transactions"] = [
        {**paid, "amount": "20.00"},
        {**paid, "id": 1, "amount": "4.50"},
        {**paid, "id": 2, "amount": "24.50", "status": "failure"},
        {**paid, "id": 3, "amount": "24.50", "status": "pending"},
        {**paid, "id": 4, "amount": "24.50", "kind": "void"},
        {**paid, "id": 5, "amount": "24.50", "kind": "suggested_refund"},
    ]

    loaded = shopify.to_refund(payload, store=STORE)

    assert (loaded.amount, loaded.restocking_fee) == (D("24.50"), 0)


def test_without_transactions_the_lines_are_what_went_back():
    payload = load("refund_mixed_rates.json")
    del payload["transactions"]

    loaded = shopify.to_refund(payload, store=STORE)

    assert (loaded.amount, loaded.restocking_fee, loaded.currency) == (D("24.50"), 0, "EUR")


def test_an_empty_transaction_list_means_no_money_went_back():
    # E.g. an order edit that took an item off, or a cancelled order that was never paid.
    payload = load("refund_mixed_rates.json")
    payload["transactions"] = []

    loaded = shopify.to_refund(payload, store=STORE)

    assert loaded.amount == 0
    assert loaded.restocking_fee == D("24.50")
    assert len(loaded.lines) == 2


def test_the_existing_refunds_create_fixture():
    loaded = shopify.to_refund(load("refunds_create.json"), store=STORE)

    assert loaded == refund(1012345678001, 5801234567001, "9.99", [product("CAN-CER-01", MUG, 1, "9.99", 23)],
                            "2026-11-27T09:15:42+00:00")


# --- tax included or not -------------------------------------------------------------------------------


def test_tax_excluded_subtotals_get_their_tax_added():
    loaded = shopify.to_refund(load("refund_tax_excluded.json"), store=STORE)

    assert loaded.lines[0].amount == D("50.00") + D("11.50") == loaded.amount


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_order_s_flag_gives_the_same_refund_as_reading_it(name):
    order_file, _ = EXPECTED[name]
    order = load(order_file)

    read = shopify.to_refund(load(name), store=STORE)
    told = shopify.to_refund(load(name), store=STORE, taxes_included=order["taxes_included"])
    with_order = shopify.to_refund(load(name), store=STORE, order=order)

    assert told == read
    assert with_order == Refund(**{**vars(read), "order_name": order["name"]})


def test_a_wrong_flag_is_taken_as_given():
    loaded = shopify.to_refund(load("refund_tax_excluded.json"), store=STORE, taxes_included=True)

    # 50.00 read as gross: 61.50 went back, so 11.50 more than the lines.
    assert [line.amount for line in loaded.lines] == [D("50.00"), D("11.50")]


def test_when_nothing_tells_whether_tax_is_included_the_refund_is_not_guessed():
    payload = load("refund_partial_one_line.json")
    payload["refund_line_items"][0]["line_item"]["tax_lines"][0]["price_set"] = None
    payload["refund_line_items"][0]["line_item"]["tax_lines"][0]["price"] = "0.00"
    payload["refund_line_items"][0]["line_item"]["tax_lines"][0]["rate"] = 0.23
    payload["refund_line_items"][0]["total_tax_set"] = None
    payload["refund_line_items"][0]["total_tax"] = "0.30"  # fits neither reading
    payload["transactions"][0]["amount"] = "5.00"

    with pytest.raises(shopify.LoadError) as error:
        shopify.to_refund(payload, store=STORE)
    assert str(error.value) == (
        "Shopify refund not loaded: taxes_included: cannot tell whether its amounts include tax; "
        "load it with taxes_included from its order"
    )

    assert shopify.to_refund(payload, store=STORE, taxes_included=True).lines[0].amount == D("9.99")


# --- two currencies ------------------------------------------------------------------------------------


def test_usd_presentment_refund_in_the_customer_s_money():
    loaded = shopify.to_refund(load("refund_usd_presentment.json"), store=STORE)

    assert (loaded.currency, loaded.amount, loaded.lines[0].amount) == ("USD", D("10.83"), D("10.83"))


def test_usd_presentment_refund_in_the_shop_s_money():
    order = shopify.to_order(load("paid_usd_presentment.json"), store=STORE, money="shop")
    loaded = shopify.to_refund(load("refund_usd_presentment.json"), store=STORE, money="shop")

    # The USD transaction is converted at the refund's own rate (9.99 EUR for 10.83 USD of lines).
    assert (loaded.currency, loaded.amount, loaded.restocking_fee) == ("EUR", D("9.99"), 0)
    assert loaded.lines == (product("CAN-CER-01", MUG, 1, "9.99", 23),)
    assert loaded.currency == order.currency


def test_a_transaction_amount_set_is_taken_on_the_side_asked_for():
    payload = load("refund_usd_presentment.json")
    payload["transactions"][0]["amount_set"] = {
        "shop_money": {"amount": "9.50", "currency_code": "EUR"},
        "presentment_money": {"amount": "10.83", "currency_code": "USD"},
    }

    loaded = shopify.to_refund(payload, store=STORE, money="shop")

    assert (loaded.currency, loaded.amount, loaded.restocking_fee) == ("EUR", D("9.50"), D("0.49"))


def test_an_amount_only_refund_in_the_other_currency_cannot_be_converted():
    payload = load("refund_usd_presentment.json")
    payload["refund_line_items"] = []

    expected = r"^Shopify refund not loaded: transactions: .*money=presentment"
    with pytest.raises(shopify.LoadError, match=expected):
        shopify.to_refund(payload, store=STORE, money="shop")
    assert shopify.to_refund(payload, store=STORE).amount == D("10.83")


def test_currency_is_none_when_the_payload_names_none():
    payload = load("refund_partial_one_line.json")
    del payload["transactions"]
    payload["refund_line_items"][0]["subtotal_set"] = None
    payload["refund_line_items"][0]["total_tax_set"] = None
    item = payload["refund_line_items"][0]["line_item"]
    payload["refund_line_items"][0]["line_item"] = {k: v for k, v in item.items() if not k.endswith("_set")}
    for tax in payload["refund_line_items"][0]["line_item"]["tax_lines"]:
        del tax["price_set"]
    for key in [k for k in payload if k.endswith("_set")]:
        del payload[key]

    loaded = shopify.to_refund(payload, store=STORE)

    assert (loaded.currency, loaded.amount) == (None, D("9.99"))


def test_refund_transactions_in_two_currencies_are_refused():
    payload = load("refund_mixed_rates.json")
    payload["transactions"].append({**payload["transactions"][0], "id": 9, "currency": "GBP"})

    with pytest.raises(shopify.LoadError, match="transactions: its refund transactions are in different"):
        shopify.to_refund(payload, store=STORE)


# --- orders/cancelled ------------------------------------------------------------------------------------


def test_cancelled_unpaid_order_gave_nothing_back():
    payload = load("cancelled_unpaid.json")
    order = shopify.to_order(payload, store=STORE)

    loaded = shopify.to_refund(payload["refunds"][0], store=STORE, order=payload)

    assert (order.financial_status, payload["cancel_reason"]) == ("voided", "customer")
    assert loaded.amount == 0  # the authorisation was voided: nothing to credit
    assert loaded.order_name == order.name == "#1006"
    assert [line.key for line in loaded.lines] == [line.key for line in order.lines if line.kind == "product"]


def test_cancelled_after_payment_refunds_everything_it_charged():
    payload = load("cancelled_after_payment.json")
    order = shopify.to_order(payload, store=STORE)
    paid = shopify.to_order(load("paid_foreign_customer.json"), store=STORE)

    (loaded,) = [shopify.to_refund(entry, store=STORE) for entry in payload["refunds"]]

    assert (order.financial_status, order.total, payload["cancelled_at"]) == ("refunded", D("64.30"),
                                                                              "2026-11-23T09:05:00+00:00")
    assert order.lines == paid.lines
    assert loaded == Refund(
        platform="shopify", store=STORE, refund_id="1012345678011", order_id="5801234567005", order_name=None,
        currency="EUR",
        lines=(product("GALO-BCL-20", paid.lines[0].description, 1, "19.90", 23),
               product("shopify-variant-45678901200010", "Toalha de mesa bordada — 150 x 250 cm", 1, "34.50", 23),
               shipping("Envío internacional", "9.90", 23)),
        amount=D("64.30"), restocking_fee=D("0.00"), created_at="2026-11-23T09:05:00+00:00",
    )
    assert [line.key for line in loaded.lines] == [line.key for line in paid.lines]


def test_a_trimmed_refunds_entry_is_completed_from_its_order():
    payload = load("refunded_before_issue.json")
    entry = payload["refunds"][0]
    assert "line_item" not in entry["refund_line_items"][0]

    with pytest.raises(shopify.LoadError, match=r"refund_line_items\.0\.line_item: Missing data"):
        shopify.to_refund(entry, store=STORE)
    loaded = shopify.to_refund(entry, store=STORE, order=payload)

    order = shopify.to_order(payload, store=STORE)
    assert loaded.order_name == "#1027"
    assert [(line.key, line.amount, line.tax_rate) for line in loaded.lines] == [
        ("CAN-CER-01", D("19.98"), 23), ("TOA-MES-150", D("29.82"), 23), ("shipping", D("3.99"), 23)]
    assert loaded.amount == order.total == D("53.79")
    assert {line.key for line in loaded.lines} == {line.key for line in order.lines}


def test_an_order_that_is_not_the_refund_s_is_refused():
    with pytest.raises(shopify.LoadError, match="order_id: the order given is not the one the refund"):
        shopify.to_refund(load("refund_full_b2c.json"), store=STORE, order=load("paid_mixed_rates.json"))


# --- malformed refunds -------------------------------------------------------------------------------


def _set(path, value):
    def change(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return payload
    return change


def _delete(path):
    def change(payload):
        node = payload
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
        return payload
    return change


ITEM = ("refund_line_items", 0)
MALFORMED = [
    ("no id", _delete(("id",)), "id: Missing data for required field."),
    ("no order id", _delete(("order_id",)), "order_id: Missing data for required field."),
    ("id as text", _set(("id",), "SECRET-1"), "id: Not a valid integer."),
    ("negative subtotal", _set((*ITEM, "subtotal_set", "presentment_money", "amount"), "-9.99"),
     "refund_line_items.0.subtotal: Must be greater than or equal to 0"),
    ("subtotal not a number", _set((*ITEM, "subtotal_set", "presentment_money", "amount"), "SECRET-nine"),
     "refund_line_items.0.subtotal: Not a valid number."),
    ("huge tax", _set((*ITEM, "total_tax_set", "presentment_money", "amount"), "1e40"),
     "refund_line_items.0.total_tax: Must be greater than or equal to 0"),
    ("NaN tax", _set((*ITEM, "total_tax_set", "presentment_money", "amount"), "NaN"),
     "refund_line_items.0.total_tax: "),
    ("no tax", _delete((*ITEM, "total_tax")), None),  # still has total_tax_set: loads
    ("quantity 0", _set((*ITEM, "quantity"), 0),
     "refund_line_items.0.quantity: Must be greater than or equal to 1"),
    ("quantity as text", _set((*ITEM, "quantity"), "1"), "refund_line_items.0.quantity: Not a valid integer."),
    ("no line item", _delete((*ITEM, "line_item")),
     "refund_line_items.0.line_item: Missing data for required field."),
    ("line item not an object", _set((*ITEM, "line_item"), "SECRET"),
     "refund_line_items.0.line_item._schema: Invalid input type."),
    ("line item id mismatch", _set((*ITEM, "line_item_id"), 14567890123002),
     "refund_line_items.0.line_item_id: line_item_id is not the id of the line_item it carries"),
    ("line item without price", _set((*ITEM, "line_item", "price_set"), None), None),  # plain price is there
    ("line item price gone",
     lambda p: _delete((*ITEM, "line_item", "price"))(_set((*ITEM, "line_item", "price_set"), None)(p)),
     "refund_line_items.0.line_item.price: Missing data for required field."),
    ("line items not a list", _set(("refund_line_items",), {"0": "SECRET"}),
     "refund_line_items: Not a valid list."),
    ("transactions not a list", _set(("transactions",), "SECRET"), "transactions: Not a valid list."),
    ("transaction amount negative", _set(("transactions", 0, "amount"), "-9.99"),
     "transactions.0.amount: Must be greater than or equal to 0"),
    ("transaction currency not ISO", _set(("transactions", 0, "currency"), "EURO"),
     "transactions.0.currency: String does not match expected pattern."),
    ("adjustment amount garbled", _set(("order_adjustments",), [{"kind": "shipping_refund", "amount": "SECRET"}]),
     "order_adjustments.0.amount: Not a valid number."),
    ("shipping tax above the shipping", _set(("order_adjustments",), [
        {"kind": "shipping_refund", "amount": "-1.00", "tax_amount": "-1.00"}]),
     "shipping: a shipping refund's tax is not less than the shipping refunded"),
]


@pytest.mark.parametrize("change,expected", [(c, e) for _, c, e in MALFORMED], ids=[n for n, _, _ in MALFORMED])
def test_malformed_refund_fails_with_one_readable_line(change, expected):
    payload = change(copy.deepcopy(load("refund_partial_one_line.json")))

    if expected is None:
        assert shopify.to_refund(payload, store=STORE).amount == D("9.99")
        return
    with pytest.raises(shopify.LoadError) as error:
        shopify.to_refund(payload, store=STORE)
    message = str(error.value)
    assert message.startswith("Shopify refund not loaded: ")
    assert expected in message
    assert "\n" not in message and "SECRET" not in message  # names fields, never their values
    assert error.value.what == "refund"


@pytest.mark.parametrize("payload", [None, [], "refund", 42, {}], ids=["null", "list", "text", "number", "empty"])
def test_not_a_refund_at_all(payload):
    with pytest.raises(shopify.LoadError, match="^Shopify refund not loaded: "):
        shopify.to_refund(payload, store=STORE)


def test_an_order_body_is_not_a_refund():
    with pytest.raises(shopify.LoadError, match="order_id: Missing data for required field"):
        shopify.to_refund(load("paid_b2c_tax_included.json"), store=STORE)


def test_order_load_errors_still_say_order():
    with pytest.raises(shopify.LoadError, match="^Shopify order not loaded: "):
        shopify.to_order(load("refund_full_b2c.json"), store=STORE)


def test_money_must_be_a_side():
    with pytest.raises(ValueError, match="money must be one of presentment, shop"):
        shopify.to_refund(load("refund_full_b2c.json"), store=STORE, money="usd")


def test_payload_text_is_made_printable():
    payload = load("refund_partial_one_line.json")
    payload["refund_line_items"][0]["line_item"]["title"] = "Caneca\nde\x00cerâmica"

    loaded = shopify.to_refund(payload, store=STORE)

    assert loaded.lines[0].description == "Caneca de cerâmica"
