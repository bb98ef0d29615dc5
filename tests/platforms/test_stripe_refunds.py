"""Stripe refunds: found in their event, and loaded as amount-only credits of their payment intent."""

import json
from decimal import Decimal
from pathlib import Path

import pytest

from connector.platforms import common, stripe

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"


def load(name):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def refund_of(name, topic):
    event = load(name)
    [change] = stripe.changes(event, topic, None)
    return change, stripe.snapshot(change, event, None)


def test_a_refund_listed_by_charge_refunded_is_an_amount_only_credit_of_its_payment():
    change, snapshot = refund_of("charge_refunded_partial.json", "charge.refunded")
    refund = stripe.to_refund(snapshot, store="s")
    assert (refund.refund_id, refund.order_id, refund.currency, refund.amount) == (
        change.refund_id, "pi_3QhT7uAbCdEfGh1J0kLmNoPq", "EUR", Decimal("18.45"))
    [line] = refund.lines
    assert (line.key, line.kind, line.amount) == ("refund-adjustment", "adjustment", Decimal("18.45"))


def test_a_refund_created_event_is_its_own_snapshot():
    change, snapshot = refund_of("refund_created.json", "refund.created")
    assert snapshot["id"] == change.refund_id
    refund = stripe.to_refund(snapshot, store="s", order=load("checkout_session_completed_paid.json"))
    assert refund.amount == Decimal("56.33") and refund.order_name == "pi_3QhT7uAbCdEfGh1J0kLmNoPq"


def test_a_sale_of_a_session_with_all_its_lines_in_euros_is_the_session_as_it_is():
    event = load("checkout_session_completed_paid.json")
    [change] = stripe.changes(event, "checkout.session.completed", None)
    assert stripe.snapshot(change, event, None) == event["data"]["object"]


def test_a_refund_not_in_the_event_is_refused_with_the_reason():
    event = load("charge_refunded_partial.json")
    change = common.Change(kind="refund", order_id="pi_3QhT7uAbCdEfGh1J0kLmNoPq", refund_id="re_missing")
    with pytest.raises(common.PlatformRefused, match="not in the event"):
        stripe.snapshot(change, event, None)


def test_a_refund_of_another_payment_than_the_session_given_is_refused():
    _, snapshot = refund_of("refund_created.json", "refund.created")
    snapshot["payment_intent"] = "pi_someone_else"
    with pytest.raises(common.LoadError, match="another payment"):
        stripe.to_refund(snapshot, store="s", order=load("checkout_session_completed_paid.json"))


def test_a_zero_decimal_refund_is_in_whole_units():
    refund = stripe.to_refund({"id": "re_1", "object": "refund", "amount": 1500, "currency": "jpy",
                               "payment_intent": "pi_1", "status": "succeeded"}, store="s")
    assert refund.amount == Decimal("1500") and refund.currency == "JPY"


def test_a_refund_that_is_not_one_is_a_load_error_naming_fields():
    with pytest.raises(common.LoadError) as raised:
        stripe.to_refund({"id": "re_1", "amount": "12.00", "currency": "eur"}, store="s")
    assert "amount" in str(raised.value) and raised.value.what == "refund"
    with pytest.raises(common.LoadError, match="payment_intent"):
        stripe.to_refund({"id": "re_1", "amount": 100, "currency": "eur"}, store="s")


def test_a_pasted_refund_is_told_from_a_session():
    assert stripe.is_refund(load("refund_created.json"))
    assert not stripe.is_refund(load("checkout_session_completed_paid.json"))
