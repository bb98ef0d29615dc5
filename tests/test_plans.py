"""What an order owes: the invoice-receipt payload, its total against what was paid, holds and nones."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ISSUING
from connector.orders import Line
from connector.plans import Settings, plan_sale, proprietary_uid
from connector.platforms import shopify

FIXTURES = Path(__file__).parent / "fixtures" / "shopify"
SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
TODAY = date(2026, 11, 24)


def load(name: str, **changes):
    payload = json.loads((FIXTURES / name).read_text())
    payload.update(changes)
    return shopify.to_order(payload, store="test-store.myshopify.com", tax_id_keys=shopify.DEFAULT_TAX_ID_KEYS)


def planned(name: str):
    """What the fixture's orders/paid event owes: paid or not as Shopify's status says, then planned."""
    [change] = shopify.changes(json.loads((FIXTURES / name).read_text()), shopify.PAID_TOPIC, SETTINGS)
    return plan_sale(load(name), SETTINGS, today=TODAY, unpaid=change.reason or None)


def test_a_paid_tax_included_order_becomes_one_invoice_receipt_that_totals_what_was_paid():
    order = load("paid_b2c_tax_included.json")
    plan = plan_sale(order, SETTINGS, today=TODAY)

    assert plan.verdict == "issue"
    assert plan.computed_total == plan.expected_total == order.total
    body = plan.create_body
    assert body["proprietary_uid"] == proprietary_uid("shopify", order.store, f"order:{order.order_id}:receipt")
    invoice = body["invoice"]
    assert invoice["date"] == invoice["due_date"] == "24/11/2026"
    assert invoice["reference"] == order.name
    assert "proprietary_uid" not in invoice
    # One item per line plus shipping; prices net of VAT with 4 decimals; tax by the account's name.
    assert len(invoice["items"]) == len([line for line in order.lines if line.unit_price * line.quantity])
    for item in invoice["items"]:
        assert item["tax"] == {"name": "IVA23"}
        assert -item["unit_price"].as_tuple().exponent == 4
    assert invoice["items"][-1]["unit"] == "service"  # shipping


def test_three_at_9_99_including_vat_is_net_8_1220_each():
    order = load("paid_b2c_tax_included.json")
    [line] = [line for line in order.lines if line.unit_price == Decimal("9.99")]
    plan = plan_sale(order, SETTINGS, today=TODAY)
    [item] = [i for i in plan.create_body["invoice"]["items"] if i["name"] == line.key]
    assert item["unit_price"] == Decimal("8.1220")
    assert item["quantity"] == 3


def test_tax_excluded_prices_are_sent_as_they_are():
    order = load("paid_tax_excluded.json")
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "issue"
    prices = sorted(i["unit_price"] for i in plan.create_body["invoice"]["items"])
    assert prices == sorted(line.unit_price for line in order.lines if line.unit_price)
    assert plan.computed_total == order.total


def test_line_discounts_become_percentages_and_the_total_still_matches():
    order = load("paid_with_discount_and_nif.json")
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "issue"
    assert any(item.get("discount") for item in plan.create_body["invoice"]["items"])
    assert plan.computed_total == order.total


def test_a_valid_nif_is_sent_and_the_buyer_is_named():
    order = load("paid_with_discount_and_nif.json")
    client = plan_sale(order, SETTINGS, today=TODAY).create_body["invoice"]["client"]
    assert client["fiscal_id"] == order.customer.tax_id.replace(" ", "").removeprefix("PT")
    assert client["name"]
    assert client["country"] == "Portugal"
    # One IX client per tax number: IX keeps a client's number once it has documents.
    assert client["code"] == f"NIF-{client['fiscal_id']}"


def test_an_invalid_nif_is_never_sent():
    order = load("paid_with_discount_and_nif.json")
    order = dataclasses.replace(order, customer=dataclasses.replace(order.customer, tax_id="123456780"))
    client = plan_sale(order, SETTINGS, today=TODAY).create_body["invoice"]["client"]
    assert "fiscal_id" not in client


def test_a_customer_without_a_name_is_the_final_consumer():
    order = load("paid_b2c_tax_included.json")
    order = dataclasses.replace(order, customer=dataclasses.replace(order.customer, name="", company=None))
    client = plan_sale(order, SETTINGS, today=TODAY).create_body["invoice"]["client"]
    assert client["name"] == "Consumidor final"


def test_a_foreign_customer_gets_ix_country_name():
    order = load("paid_foreign_customer.json")
    client = plan_sale(order, SETTINGS, today=TODAY).create_body["invoice"]["client"]
    assert client["country"] == "Spain"


def test_mixed_rates_use_each_rates_tax_name():
    plan = plan_sale(load("paid_mixed_rates.json"), SETTINGS, today=TODAY)
    assert {i["tax"]["name"] for i in plan.create_body["invoice"]["items"]} == {"IVA6", "IVA23"}
    assert plan.verdict == "issue"


def test_the_customer_is_emailed_at_the_order_address():
    order = load("paid_b2c_tax_included.json")
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.email_body["message"]["client"] == {"email": order.customer.email, "save": "0"}
    assert order.name in plan.email_body["message"]["subject"]


def test_an_order_not_paid_owes_nothing_and_says_why():
    plan = planned("authorized_not_paid.json")
    assert plan.verdict == "none"
    assert "not paid" in plan.reasons[0]
    assert plan.requests() == []


def test_a_test_order_owes_nothing():
    plan = plan_sale(load("paid_b2c_tax_included.json", test=True), SETTINGS, today=TODAY)
    assert plan.verdict == "none"
    assert "test order" in plan.reasons[0]


def test_a_rate_without_a_tax_name_is_held_never_sent_with_ixs_default_tax():
    order = load("paid_b2c_tax_included.json")
    lines = tuple(dataclasses.replace(line, tax_rate=Decimal("21")) for line in order.lines)
    plan = plan_sale(dataclasses.replace(order, lines=lines), SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "21 %" in plan.reasons[0]
    assert plan.requests() == []


def test_a_total_that_does_not_match_what_was_paid_is_held_with_both_amounts():
    order = load("paid_b2c_tax_included.json")
    order = dataclasses.replace(order, total=order.total + Decimal("1.00"))
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert str(order.total) in plan.reasons[0] and str(plan.computed_total) in plan.reasons[0]


def test_a_cent_of_rounding_difference_is_absorbed_in_the_fourth_decimal_of_a_price():
    order = load("paid_b2c_tax_included.json")
    order = dataclasses.replace(order, total=order.total + Decimal("0.01"))
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "issue"
    assert plan.computed_total == order.total


def test_a_line_with_several_taxes_is_held():
    order = load("paid_b2c_tax_included.json")
    bad = Line(key="X", description="Thing", unit_price=Decimal("10"), quantity=Decimal(1),
               tax_rate=Decimal("28"), tax_problem="this line carries several taxes")
    plan = plan_sale(dataclasses.replace(order, lines=order.lines + (bad,)), SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "several taxes" in plan.reasons[0]


def test_a_vat_exempt_line_is_held_until_exemption_reasons_exist():
    order = load("paid_b2c_tax_included.json")
    lines = (dataclasses.replace(order.lines[0], tax_rate=Decimal(0)),) + order.lines[1:]
    plan = plan_sale(dataclasses.replace(order, lines=lines), SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "exemption" in plan.reasons[0]


def test_another_currency_without_a_rate_to_euros_is_held():
    order = dataclasses.replace(load("paid_b2c_tax_included.json"), currency="USD", shop_currency="USD")
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "USD" in plan.reasons[0]


def test_another_currency_is_invoiced_in_it_with_the_rate_from_the_shops_two_totals():
    order = load("paid_usd_presentment.json")
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "issue", plan.reasons
    invoice = plan.create_body["invoice"]
    assert invoice["currency_code"] == "USD"
    assert Decimal(invoice["rate"]) == (order.total / order.shop_total).quantize(Decimal("0.000001"))
    assert plan.computed_total == order.total


CASES = json.loads((FIXTURES / "cases.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case["file"].removesuffix(".json"))
def test_every_realistic_fixture_gives_what_its_case_says(case):
    """tests/fixtures/shopify/cases.json: each realistic order, and what it must produce."""
    plan = planned(case["file"])

    assert plan.verdict == case["expect"], plan.reasons
    assert plan.currency == case["currency"]
    assert plan.expected_total == Decimal(case["paid_total"])
    if plan.verdict == "issue":
        assert plan.computed_total == plan.expected_total
        invoice = plan.create_body["invoice"]
        assert invoice.get("tax_exemption") == case["exemption"]
        assert invoice["client"].get("fiscal_id") == case["fiscal_id"]
    elif plan.verdict == "hold":
        assert plan.reasons and plan.requests() == []
    else:
        assert plan.reasons and plan.requests() == []


def test_a_company_that_typed_its_nif_into_the_company_field_is_named_without_it():
    plan = plan_sale(load("paid_b2b_nif_in_company.json"), SETTINGS, today=TODAY)
    client = plan.create_body["invoice"]["client"]
    assert client["fiscal_id"] not in client["name"]
    assert "NIF" not in client["name"]


def test_exports_outside_the_eu_carry_m05_and_intra_eu_b2b_m16():
    for name, code in (("paid_export_non_eu.json", "M05"), ("paid_intra_eu_b2b.json", "M16")):
        invoice = plan_sale(load(name), SETTINGS, today=TODAY).create_body["invoice"]
        assert invoice["tax_exemption"] == invoice["tax_exemption_reason"] == code
        assert {item["tax"]["name"] for item in invoice["items"]} == {"IVA0"}


def test_a_zero_rate_line_never_goes_out_without_an_exemption_reason():
    plan = plan_sale(load("paid_shipping_untaxed.json"), SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "exemption" in " ".join(plan.reasons)
    store_default = dataclasses.replace(SETTINGS, tax_exemption_reason="M10")
    plan = plan_sale(load("paid_shipping_untaxed.json"), store_default, today=TODAY)
    assert plan.verdict == "issue"
    assert plan.create_body["invoice"]["tax_exemption"] == "M10"


def test_two_exemption_reasons_in_one_order_are_held():
    order = load("paid_export_non_eu.json")
    tip = Line(key="tip", description="Tip", unit_price=Decimal("2.00"), quantity=Decimal(1),
               tax_rate=Decimal(0), kind="tip")
    order = dataclasses.replace(order, lines=order.lines + (tip,), total=order.total + Decimal("2.00"))
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "hold"
    assert "M05" in plan.reasons[0] and "M99" in plan.reasons[0]


def test_an_invalid_nif_is_held_when_the_store_says_so():
    strict = dataclasses.replace(SETTINGS, invalid_tax_id="hold")
    plan = plan_sale(load("paid_invalid_nif.json"), strict, today=TODAY)
    assert plan.verdict == "hold"
    assert "tax number" in plan.reasons[0]
    lenient = plan_sale(load("paid_invalid_nif.json"), SETTINGS, today=TODAY)
    assert lenient.verdict == "issue"
    assert "final consumer" in lenient.notes[0]


def test_test_orders_are_issued_when_the_store_opts_in():
    plan = plan_sale(load("paid_test_order.json"), dataclasses.replace(SETTINGS, issue_test_orders=True),
                     today=TODAY)
    assert plan.verdict == "issue"


def test_a_store_issuing_invoices_gets_an_invoice_in_its_series():
    settings = dataclasses.replace(SETTINGS, document_type="invoice", sequence_id="12345")
    plan = plan_sale(load("paid_b2c_tax_included.json"), settings, today=TODAY)
    assert plan.doc_type == "invoices"
    assert plan.requests()[0]["path"] == "/invoices.json"
    assert plan.create_body["invoice"]["sequence_id"] == "12345"
    assert "Fatura da encomenda" in plan.email_body["message"]["subject"]


def test_madeira_and_azores_rates_use_their_own_tax_names():
    def tax_names(name: str) -> set[str]:
        return {i["tax"]["name"] for i in plan_sale(load(name), SETTINGS).create_body["invoice"]["items"]}

    madeira, azores = tax_names("paid_madeira.json"), tax_names("paid_azores.json")
    assert madeira <= {"IVA22", "IVA12", "IVA5"} and azores <= {"IVA16", "IVA9", "IVA4"}


def test_a_store_that_invoices_in_its_own_currency_gets_the_shop_amounts():
    payload = json.loads((FIXTURES / "paid_usd_presentment.json").read_text())
    order = shopify.to_order(payload, store="s", tax_id_keys=shopify.DEFAULT_TAX_ID_KEYS, money="shop")
    plan = plan_sale(order, dataclasses.replace(SETTINGS, invoice_currency="shop"), today=TODAY)
    assert plan.verdict == "issue", plan.reasons
    assert plan.currency == "EUR"
    assert "currency_code" not in plan.create_body["invoice"]
    assert plan.computed_total == order.shop_total
