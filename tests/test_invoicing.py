"""What an order owes: the invoice-receipt payload, its total against what was paid, holds and nones."""

from __future__ import annotations

import dataclasses
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

from config.settings import DEFAULT_TAX_NAMES, _tax_names
from connector.invoicing import TaxSettings, plan_receipt, proprietary_uid
from connector.orders import Line
from connector.platforms import shopify

FIXTURES = Path(__file__).parent / "fixtures" / "shopify"
TAXES = TaxSettings(_tax_names(DEFAULT_TAX_NAMES, []))
TODAY = date(2026, 11, 24)


def load(name: str, **changes):
    payload = json.loads((FIXTURES / name).read_text())
    payload.update(changes)
    return shopify.to_order(payload, store="test-store.myshopify.com", tax_id_keys=shopify.DEFAULT_TAX_ID_KEYS)


def test_a_paid_tax_included_order_becomes_one_invoice_receipt_that_totals_what_was_paid():
    order = load("paid_b2c_tax_included.json")
    plan = plan_receipt(order, TAXES, today=TODAY)

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
    plan = plan_receipt(order, TAXES, today=TODAY)
    [item] = [i for i in plan.create_body["invoice"]["items"] if i["name"] == line.key]
    assert item["unit_price"] == Decimal("8.1220")
    assert item["quantity"] == 3


def test_tax_excluded_prices_are_sent_as_they_are():
    order = load("paid_tax_excluded.json")
    plan = plan_receipt(order, TAXES, today=TODAY)
    assert plan.verdict == "issue"
    prices = sorted(i["unit_price"] for i in plan.create_body["invoice"]["items"])
    assert prices == sorted(line.unit_price for line in order.lines if line.unit_price)
    assert plan.computed_total == order.total


def test_line_discounts_become_percentages_and_the_total_still_matches():
    order = load("paid_with_discount_and_nif.json")
    plan = plan_receipt(order, TAXES, today=TODAY)
    assert plan.verdict == "issue"
    assert any(item.get("discount") for item in plan.create_body["invoice"]["items"])
    assert plan.computed_total == order.total


def test_a_valid_nif_is_sent_and_the_buyer_is_named():
    order = load("paid_with_discount_and_nif.json")
    client = plan_receipt(order, TAXES, today=TODAY).create_body["invoice"]["client"]
    assert client["fiscal_id"] == order.customer.tax_id.replace(" ", "").removeprefix("PT")
    assert client["name"]
    assert client["country"] == "Portugal"
    assert client["code"] == order.customer.key


def test_an_invalid_nif_is_never_sent():
    order = load("paid_with_discount_and_nif.json")
    order = dataclasses.replace(order, customer=dataclasses.replace(order.customer, tax_id="123456780"))
    client = plan_receipt(order, TAXES, today=TODAY).create_body["invoice"]["client"]
    assert "fiscal_id" not in client


def test_a_customer_without_a_name_is_the_final_consumer():
    order = load("paid_b2c_tax_included.json")
    order = dataclasses.replace(order, customer=dataclasses.replace(order.customer, name="", company=None))
    client = plan_receipt(order, TAXES, today=TODAY).create_body["invoice"]["client"]
    assert client["name"] == "Consumidor final"


def test_a_foreign_customer_gets_ix_country_name():
    order = load("paid_foreign_customer.json")
    client = plan_receipt(order, TAXES, today=TODAY).create_body["invoice"]["client"]
    assert client["country"] == "Spain"


def test_mixed_rates_use_each_rates_tax_name():
    plan = plan_receipt(load("paid_mixed_rates.json"), TAXES, today=TODAY)
    assert {i["tax"]["name"] for i in plan.create_body["invoice"]["items"]} == {"IVA6", "IVA23"}
    assert plan.verdict == "issue"


def test_the_customer_is_emailed_at_the_order_address():
    order = load("paid_b2c_tax_included.json")
    plan = plan_receipt(order, TAXES, today=TODAY)
    assert plan.email_body["message"]["client"] == {"email": order.customer.email, "save": "0"}
    assert order.name in plan.email_body["message"]["subject"]


def test_an_order_not_paid_owes_nothing_and_says_why():
    plan = plan_receipt(load("authorized_not_paid.json"), TAXES, today=TODAY)
    assert plan.verdict == "none"
    assert "not paid" in plan.reasons[0]
    assert plan.requests() == []


def test_a_test_order_owes_nothing():
    plan = plan_receipt(load("paid_b2c_tax_included.json", test=True), TAXES, today=TODAY)
    assert plan.verdict == "none"
    assert "test order" in plan.reasons[0]


def test_a_rate_without_a_tax_name_is_held_never_sent_with_ixs_default_tax():
    order = load("paid_b2c_tax_included.json")
    lines = tuple(dataclasses.replace(line, tax_rate=Decimal("21")) for line in order.lines)
    plan = plan_receipt(dataclasses.replace(order, lines=lines), TAXES, today=TODAY)
    assert plan.verdict == "hold"
    assert "21 %" in plan.reasons[0]
    assert plan.requests() == []


def test_a_total_that_does_not_match_what_was_paid_is_held_with_both_amounts():
    order = load("paid_b2c_tax_included.json")
    order = dataclasses.replace(order, total=order.total + Decimal("0.01"))
    plan = plan_receipt(order, TAXES, today=TODAY)
    assert plan.verdict == "hold"
    assert str(order.total) in plan.reasons[0] and str(plan.computed_total) in plan.reasons[0]


def test_a_line_with_several_taxes_is_held():
    order = load("paid_b2c_tax_included.json")
    bad = Line(key="X", description="Thing", unit_price=Decimal("10"), quantity=Decimal(1),
               tax_rate=Decimal("28"), tax_problem="this line carries several taxes")
    plan = plan_receipt(dataclasses.replace(order, lines=order.lines + (bad,)), TAXES, today=TODAY)
    assert plan.verdict == "hold"
    assert "several taxes" in plan.reasons[0]


def test_a_vat_exempt_line_is_held_until_exemption_reasons_exist():
    order = load("paid_b2c_tax_included.json")
    lines = (dataclasses.replace(order.lines[0], tax_rate=Decimal(0)),) + order.lines[1:]
    plan = plan_receipt(dataclasses.replace(order, lines=lines), TAXES, today=TODAY)
    assert plan.verdict == "hold"
    assert "exemption" in plan.reasons[0]


def test_another_currency_is_held():
    order = dataclasses.replace(load("paid_b2c_tax_included.json"), currency="USD")
    plan = plan_receipt(order, TAXES, today=TODAY)
    assert plan.verdict == "hold"
    assert "USD" in plan.reasons[0]
