"""Stripe Checkout Sessions: what each event owes, and sessions with their lines planned to the cent (or yen)."""

import copy
import dataclasses
import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ISSUING
from connector.plans import Settings, plan_sale
from connector.platforms import common, stripe

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"
SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
TODAY = date(2025, 11, 24)


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def kinds(changes):
    return [(change.kind, change.order_id, change.refund_id) for change in changes]


def session_of(event):
    return event["data"]["object"]


# --- what an event owes ------------------------------------------------------------------------------


def test_a_paid_completed_session_is_a_sale_of_the_session():
    assert kinds(stripe.changes(load("checkout_session_completed_paid.json"), "checkout.session.completed",
                                SETTINGS)) == [("sale", "pi_3QhT7uAbCdEfGh1J0kLmNoPq", None)]


def test_a_multibanco_session_owes_nothing_until_its_payment_succeeds():
    [change] = stripe.changes(load("checkout_session_completed_unpaid_multibanco.json"),
                              "checkout.session.completed", SETTINGS)
    assert change.kind == "none"
    assert "delayed method (e.g. Multibanco)" in change.reason
    assert kinds(stripe.changes(load("async_payment_succeeded.json"), "checkout.session.async_payment_succeeded",
                                SETTINGS)) == [("sale", "pi_3QhU1aAbCdEfGh1Mb0Multi", None)]


@pytest.mark.parametrize("topic, words", [("checkout.session.async_payment_failed", "failed"),
                                          ("checkout.session.expired", "expired")])
def test_a_failed_or_expired_session_owes_nothing_and_says_why(topic, words):
    [change] = stripe.changes(load("checkout_session_completed_unpaid_multibanco.json"), topic, SETTINGS)
    assert change.kind == "none" and words in change.reason


def test_a_charge_refunded_is_one_refund_per_listed_refund_of_the_payment_intent():
    event = load("charge_refunded_partial.json")
    assert kinds(stripe.changes(event, "charge.refunded", SETTINGS)) == [
        ("refund", "pi_3QhT7uAbCdEfGh1J0kLmNoPq", "re_3QhX1eAbCdEfGh1Refund01")]
    second = {**session_of(event)["refunds"]["data"][0], "id": "re_3QhZ9zAbCdEfGh1Refund03", "created": 1764400000}
    session_of(event)["refunds"]["data"].insert(0, second)
    assert [c.refund_id for c in stripe.changes(event, "charge.refunded", SETTINGS)] == [
        "re_3QhX1eAbCdEfGh1Refund01", "re_3QhZ9zAbCdEfGh1Refund03"]


def test_a_charge_that_lists_no_refunds_is_a_lookup_of_its_refunds_at_stripe():
    event = load("charge_refunded_partial.json")
    del session_of(event)["refunds"]
    [change] = stripe.changes(event, "charge.refunded", SETTINGS)
    assert (change.kind, change.order_id) == ("lookup", "pi_3QhT7uAbCdEfGh1J0kLmNoPq")
    session_of(event)["id"] = None
    [change] = stripe.changes(event, "charge.refunded", SETTINGS)
    assert change.kind == "none" and "no id" in change.reason


def test_a_refund_created_is_a_refund_of_its_payment_intent_unless_it_failed():
    event = load("refund_created.json")
    assert kinds(stripe.changes(event, "refund.created", SETTINGS)) == [
        ("refund", "pi_3QhT7uAbCdEfGh1J0kLmNoPq", "re_3QhY2fAbCdEfGh1Refund02")]
    session_of(event)["status"] = "failed"
    assert [c.kind for c in stripe.changes(event, "refund.created", SETTINGS)] == ["none"]


def test_other_events_and_garbage_owe_nothing_and_never_raise():
    for payload, topic in [({"id": "evt_1", "object": "event", "data": {"object": {"id": "pi_1"}}},
                            "payment_intent.succeeded"),
                           ([], "checkout.session.completed"), ({"object": "event", "data": 5}, "refund.created"),
                           ({"object": "event", "data": {"object": {"id": 7}}}, "checkout.session.completed"),
                           ({"id": "re_1", "object": "refund"}, "refund.created")]:
        assert [change.kind for change in stripe.changes(payload, topic, SETTINGS)] == ["none"]


# --- money -------------------------------------------------------------------------------------------


def planned(order):
    return plan_sale(order, SETTINGS, today=TODAY)


def test_the_paid_eur_session_is_invoiced_to_the_cent_with_its_discount_shipping_and_nif():
    order = stripe.to_order(load("checkout_session_completed_paid.json"), store="")
    assert order.currency == "EUR" and order.total == Decimal("74.78") and not order.taxes_included
    mug, card, shipping = order.lines
    assert (mug.unit_price, mug.quantity, mug.discount, mug.tax_rate) == (
        Decimal("25.00"), 2, Decimal("5.00"), 23)
    assert (card.unit_price, card.discount) == (Decimal("12.00"), Decimal("1.20"))
    assert (shipping.kind, shipping.unit_price, shipping.tax_rate) == ("shipping", Decimal("5.00"), 23)
    assert order.customer.tax_id == "501964843"
    assert order.customer.company == "Exemplo Comércio, Lda"
    assert order.customer.address.postal_code == "1100-053"
    plan = planned(order)
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("74.78")
    assert plan.create_body["invoice"]["client"]["fiscal_id"] == "501964843"


def test_inclusive_stripe_tax_gives_the_same_total_as_the_prices_shown():
    event = load("checkout_session_completed_paid.json")
    session = session_of(event)
    # The same goods at prices with VAT included: 55.35 and 13.28 after their discounts, shipping 6.15.
    for item, (subtotal, discount, total) in zip(session["line_items"]["data"],
                                                 [(6150, 615, 5535), (1476, 148, 1328)], strict=True):
        item.update(amount_subtotal=subtotal, amount_discount=discount, amount_total=total)
        item["taxes"][0]["rate"]["inclusive"] = True
    session["shipping_cost"]["taxes"][0]["rate"]["inclusive"] = True
    order = stripe.to_order(event, store="")
    assert order.taxes_included
    assert order.lines[0].unit_price == Decimal("30.75") and order.lines[0].discount == Decimal("6.15")
    plan = planned(order)
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("74.78")


def test_one_inclusive_and_one_exclusive_line_still_come_to_amount_total():
    event = load("checkout_session_completed_paid.json")
    card = session_of(event)["line_items"]["data"][1]
    card.update(amount_subtotal=1476, amount_discount=148, amount_total=1328)
    card["taxes"][0]["rate"]["inclusive"] = True
    order = stripe.to_order(event, store="")
    assert order.taxes_included
    plan = planned(order)
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == Decimal("74.78")


def test_a_session_without_stripe_tax_is_at_the_default_rate_with_vat_included():
    order = stripe.to_order(load("async_payment_succeeded.json"), store="")
    [line] = order.lines
    assert order.taxes_included and line.tax_rate == 23 and line.unit_price == Decimal("49.90")
    assert order.customer.tax_id is None
    plan = planned(order)
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("49.90")
    at_13 = dataclasses.replace(SETTINGS, default_vat_rate=Decimal("13"))
    assert stripe.to_order(load("async_payment_succeeded.json"), store="", settings=at_13).lines[0].tax_rate == 13
    exempt = dataclasses.replace(SETTINGS, default_vat_rate=Decimal("0"))
    assert stripe.to_order(load("async_payment_succeeded.json"), store="", settings=exempt).lines[0].tax_rate == 0


def test_a_jpy_session_is_in_whole_yen():
    order = stripe.to_order(load("session_jpy.json"), store="")
    assert order.currency == "JPY" and order.total == Decimal("4500")
    [line] = order.lines
    assert (line.unit_price, line.quantity, line.tax_rate) == (Decimal("1500"), 3, 23)
    assert order.ship_to_country == "JP"
    # A session says nothing of the rate to euros; with one, the invoice comes to the yen paid.
    plan = planned(order)
    assert plan.verdict == "hold" and any("rate to euros" in reason for reason in plan.reasons)
    plan = planned(dataclasses.replace(order, shop_currency="EUR", shop_total=Decimal("27.50")))
    assert plan.verdict == "issue", plan.reasons
    assert plan.expected_total == plan.computed_total == Decimal("4500")


@pytest.mark.parametrize("currency, minor, expected", [("eur", 1999, "19.99"), ("jpy", 500, "500"),
                                                       ("KRW", 12000, "12000"), ("kwd", 12345, "12.345"),
                                                       ("bhd", 1000, "1.000")])
def test_each_currency_has_its_own_minor_unit(currency, minor, expected):
    assert stripe.orders.major(minor, currency) == Decimal(expected)


def test_a_session_without_its_lines_says_they_must_be_fetched_from_stripe():
    with pytest.raises(common.LoadError) as raised:
        stripe.to_order(load("checkout_session_completed_unpaid_multibanco.json"), store="")
    assert "fetched from Stripe" in str(raised.value)
    partial = load("checkout_session_completed_paid.json")
    session_of(partial)["line_items"]["has_more"] = True
    with pytest.raises(common.LoadError, match="every page"):
        stripe.to_order(partial, store="")


def test_a_bare_session_loads_as_its_event_does():
    event = load("checkout_session_completed_paid.json")
    assert stripe.to_order(stripe.unwrap(session_of(event)), store="s") == stripe.to_order(event, store="s")


def test_a_line_with_two_charged_taxes_is_held_with_the_reason():
    event = load("checkout_session_completed_paid.json")
    mug = session_of(event)["line_items"]["data"][0]
    mug["taxes"].append(copy.deepcopy(mug["taxes"][0]))
    plan = planned(stripe.to_order(event, store=""))
    assert plan.verdict == "hold" and any("several taxes" in reason for reason in plan.reasons)


def test_a_test_mode_session_is_a_test_order():
    event = load("checkout_session_completed_paid.json")
    session_of(event)["livemode"] = False
    assert stripe.to_order(event, store="").test
    assert planned(stripe.to_order(event, store="")).verdict == "none"


def test_a_session_whose_lines_do_not_add_up_to_amount_total_is_held_with_both_totals():
    event = load("checkout_session_completed_paid.json")
    session_of(event)["amount_total"] = 7578
    plan = planned(stripe.to_order(event, store=""))
    assert plan.verdict == "hold" and any("75.78" in reason and "74.78" in reason for reason in plan.reasons)


def test_an_eu_vat_number_of_another_state_is_kept_for_intra_eu_sales():
    event = load("checkout_session_completed_paid.json")
    details = session_of(event)["customer_details"]
    details["address"]["country"] = "ES"
    details["tax_ids"] = [{"type": "eu_vat", "value": "ESB58378431"}]
    assert stripe.to_order(event, store="").customer.tax_id == "ESB58378431"
