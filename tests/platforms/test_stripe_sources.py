"""What the worker reads from Stripe for a sale or a charge's refunds, and the orders loaded from what it read."""

import copy
import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest

from config.settings import ISSUING
from connector.plans import Settings, plan_sale
from connector.platforms import common, stripe
from connector.platforms.common import PlatformRefused, PlatformUnavailable

FIXTURES = Path(__file__).parent.parent / "fixtures" / "stripe"
SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
ONE_LINE = dataclasses.replace(SETTINGS, payment_intent_line="Consultoria", payment_intent_vat_rate=Decimal(6))


def load(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def without_lines(event: dict) -> tuple[dict, list]:
    """The event as Stripe sends it (no `line_items`), and the lines Stripe's API lists for its session."""
    event = copy.deepcopy(event)
    session = event["data"]["object"] if event.get("object") == "event" else event
    return event, session.pop("line_items")["data"]


class StripeDouble:
    """The Stripe API as the snapshot uses it, answering from given objects and counting calls."""

    def __init__(self, lines=(), session=None, intent=None, refunds=(), down=False):
        self.lines, self.session, self.intent, self.refunds = list(lines), session, intent, refunds
        self.down = down
        self.calls: list[tuple] = []

    def _call(self, *call):
        self.calls.append(call)
        if self.down:
            raise PlatformUnavailable("Stripe GET: 503")

    def session_line_items(self, session_id):
        self._call("lines", session_id)
        return copy.deepcopy(self.lines)

    def session_of_payment_intent(self, intent_id):
        self._call("session of", intent_id)
        return copy.deepcopy(self.session)

    def payment_intent_with_charge(self, intent_id):
        self._call("intent", intent_id)
        return copy.deepcopy(self.intent)

    def refunds_of_charge(self, charge_id):
        self._call("refunds", charge_id)
        return copy.deepcopy(list(self.refunds))


def sale_of(event: dict) -> common.Change:
    [change] = [c for c in stripe.changes(event, event["type"], ONE_LINE) if c.kind == "sale"]
    return change


def settled_in_euros(intent_id: str, euros_minor: int) -> dict:
    return {"id": intent_id, "object": "payment_intent", "latest_charge": {
        "id": "ch_1", "object": "charge",
        "balance_transaction": {"id": "txn_1", "object": "balance_transaction", "amount": euros_minor,
                                "currency": "eur", "exchange_rate": 0.0061}}}


def test_a_session_event_is_read_with_every_line_from_stripe_and_issued_to_the_cent():
    event, lines = without_lines(load("checkout_session_completed_paid.json"))
    api = StripeDouble(lines=lines)
    change = sale_of(event)
    assert change.fetched and change.order_id == "pi_3QhT7uAbCdEfGh1J0kLmNoPq"

    source = stripe.snapshot(change, event, api)

    assert api.calls == [("lines", "cs_live_a1B2c3D4e5F6g7H8i9J0kLmNoPqRsTuVwXyZ")]  # EUR: no rate to read
    assert source["line_items"] == {"object": "list", "data": lines, "has_more": False}
    order = stripe.to_order(source, store="s", settings=SETTINGS)
    assert order.order_id == change.order_id
    plan = plan_sale(order, SETTINGS)
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == plan.expected_total == Decimal("74.78")


def test_a_session_in_yen_is_read_with_its_payment_in_euros_for_the_rate():
    session, lines = without_lines(load("session_jpy.json"))
    event = {"id": "evt_1", "object": "event", "type": "checkout.session.completed", "livemode": True,
             "data": {"object": session}}
    api = StripeDouble(lines=lines, intent=settled_in_euros("pi_3QhW2dAbCdEfGh1Yen0Jp", 2745))

    source = stripe.snapshot(sale_of(event), event, api)

    assert [call[0] for call in api.calls] == ["lines", "intent"]
    order = stripe.to_order(source, store="s", settings=SETTINGS)
    assert (order.currency, order.total, order.shop_currency, order.shop_total) == (
        "JPY", Decimal(4500), "EUR", Decimal("27.45"))
    plan = plan_sale(order, SETTINGS)
    assert plan.verdict == "issue", plan.reasons
    assert plan.create_body["invoice"]["currency_code"] == "JPY"
    assert Decimal(plan.create_body["invoice"]["rate"]) == (Decimal(4500) / Decimal("27.45")).quantize(
        Decimal("0.000001"))


def test_a_session_in_yen_without_its_payment_in_euros_is_held_saying_why():
    session, lines = without_lines(load("session_jpy.json"))
    intent = settled_in_euros("pi_3QhW2dAbCdEfGh1Yen0Jp", 2745)
    intent["latest_charge"]["balance_transaction"] = None  # not settled yet
    session = {**session, "payment_intent": intent,
               "line_items": {"object": "list", "data": lines, "has_more": False}}

    plan = plan_sale(stripe.to_order(session, store="s", settings=SETTINGS), SETTINGS)

    assert plan.verdict == "hold" and "JPY" in " ".join(plan.reasons)


def test_without_the_api_a_session_without_lines_is_refused_with_what_the_worker_will_read():
    event, _ = without_lines(load("checkout_session_completed_paid.json"))
    with pytest.raises(PlatformRefused, match="line_items"):
        stripe.snapshot(sale_of(event), event, None)


def test_a_stripe_outage_while_reading_lines_goes_up_to_be_retried():
    event, lines = without_lines(load("checkout_session_completed_paid.json"))
    with pytest.raises(PlatformUnavailable):
        stripe.snapshot(sale_of(event), event, StripeDouble(lines=lines, down=True))


def payment_event(intent: dict) -> dict:
    return {"id": "evt_pi", "object": "event", "type": "payment_intent.succeeded", "livemode": True,
            "data": {"object": intent}}


INTENT = {"id": "pi_3Solo", "object": "payment_intent", "amount": 12300, "amount_received": 12300,
          "currency": "eur", "status": "succeeded", "customer": None, "receipt_email": None, "created": 1763976000,
          "livemode": True, "latest_charge": "ch_solo"}


def test_a_payment_of_no_session_is_one_line_of_the_stores_description_at_its_rate():
    paid = {**INTENT, "latest_charge": {"id": "ch_solo", "object": "charge", "billing_details": {
        "name": "Ana Sousa", "email": "ana@example.pt", "address": {"country": "PT", "city": "Porto"}}}}
    api = StripeDouble(session=None, intent=paid)

    source = stripe.snapshot(sale_of(payment_event(INTENT)), payment_event(INTENT), api)

    assert [call[0] for call in api.calls] == ["session of", "intent"]
    order = stripe.to_order(source, store="s", settings=ONE_LINE)
    [line] = order.lines
    assert (line.description, line.unit_price, line.tax_rate, order.taxes_included) == (
        "Consultoria", Decimal("123.00"), Decimal(6), True)
    assert (order.customer.name, order.customer.email, order.name) == ("Ana Sousa", "ana@example.pt", "pi_3Solo")
    plan = plan_sale(order, ONE_LINE)
    assert plan.verdict == "issue" and plan.computed_total == Decimal("123.00")
    at_default = dataclasses.replace(ONE_LINE, payment_intent_vat_rate=None, default_vat_rate=Decimal(13))
    assert stripe.to_order(source, store="s", settings=at_default).lines[0].tax_rate == 13


def test_a_payment_of_no_session_is_no_order_once_one_line_invoices_are_off():
    with pytest.raises(common.LoadError, match="PAYMENT_INTENT_LINE"):
        stripe.to_order({**INTENT, "latest_charge": None}, store="s", settings=SETTINGS)
    [change] = stripe.changes(payment_event(INTENT), "payment_intent.succeeded", SETTINGS)
    assert change.kind == "none" and "PAYMENT_INTENT_LINE" in change.reason


def test_a_payment_of_a_checkout_session_is_invoiced_from_the_session_with_its_lines():
    event, lines = without_lines(load("checkout_session_completed_paid.json"))
    session = event["data"]["object"]
    intent = {**INTENT, "id": session["payment_intent"]}
    api = StripeDouble(lines=lines, session=session)

    change = sale_of(payment_event(intent))
    source = stripe.snapshot(change, payment_event(intent), api)

    # The session's own event is the same sale: one document, whichever comes first.
    assert change.order_id == sale_of(event).order_id
    assert [call[0] for call in api.calls] == ["session of", "lines"]
    assert stripe.to_order(source, store="s", settings=ONE_LINE).total == Decimal("74.78")


def test_a_charge_that_lists_no_refunds_reads_them_from_stripe_each_as_its_own_event():
    event = load("charge_refunded_partial.json")
    charge = event["data"]["object"]
    listed = charge.pop("refunds")["data"]
    [change] = stripe.changes(event, "charge.refunded", SETTINGS)
    api = StripeDouble(refunds=[{k: v for k, v in r.items() if k != "payment_intent"} for r in listed])

    found = stripe.look_up(change, event, api)

    assert api.calls == [("refunds", charge["id"])]
    assert [(p.event_key, p.topic, p.order_id) for p in found] == [
        (r["id"], "refund.created", charge["payment_intent"]) for r in listed]
    for polled in found:
        [credit] = stripe.changes(json.loads(polled.body), polled.topic, SETTINGS)
        assert (credit.kind, credit.order_id) == ("refund", charge["payment_intent"])
    with pytest.raises(PlatformRefused, match="STRIPE_API_KEY"):
        stripe.look_up(change, event, None)


def test_test_mode_events_owe_nothing_unless_the_store_invoices_test_orders():
    event = load("checkout_session_completed_paid.json")
    event["livemode"] = False
    [change] = stripe.changes(event, "checkout.session.completed", SETTINGS)
    assert change.kind == "none" and "test mode" in change.reason
    invoiced = dataclasses.replace(SETTINGS, issue_test_orders=True)
    assert stripe.changes(event, "checkout.session.completed", invoiced)[0].kind == "sale"
