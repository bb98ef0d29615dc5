"""What the worker reads from Stripe that an event lacks: a session's lines (and its payment in euros), a refund,
a charge's refunds."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from connector.platforms import common
from connector.platforms.polling import Polled, compact_json
from connector.platforms.stripe.orders import _id, event_object
from connector.platforms.stripe.webhook import REFUND_CREATED

NO_API = "STRIPE_API_KEY is not set, so {what} cannot be read from Stripe"


def snapshot(change: common.Change, payload: Mapping, api: Any) -> dict:
    """The source of a change, as it is stored on its document and loaded from there on every later attempt.

    A sale: the Checkout Session with every line (`line_items`, taxes expanded) and, for a currency other
    than the euro, its payment intent expanded down to the balance transaction (the payment in the
    account's currency); or, for a payment intent of no session, the intent with its latest charge. A
    refund: the refund object, from the event. `api` None (preview) reads nothing: what the event lacks
    is then a `PlatformRefused` saying so.
    """
    if change.kind == "sale":
        return _sale(payload, api)
    if change.kind != "refund":
        return dict(payload)
    obj = event_object(payload)
    if isinstance(obj, Mapping) and obj.get("object") == "refund" and obj.get("id") == change.refund_id:
        return dict(obj)
    refunds = obj.get("refunds") if isinstance(obj, Mapping) else None
    for entry in (refunds.get("data") if isinstance(refunds, Mapping) else None) or []:
        if isinstance(entry, Mapping) and entry.get("id") == change.refund_id:
            # A listed refund may omit its payment intent; it is the charge's.
            return {"payment_intent": obj.get("payment_intent"), "charge": obj.get("id"), **entry}
    raise common.PlatformRefused(f"Stripe refund {change.refund_id} is not in the event")


def _sale(payload: Mapping, api: Any) -> dict:
    obj = event_object(payload)
    if not isinstance(obj, Mapping):
        raise common.PlatformRefused("the Stripe event carries no session or payment")
    if obj.get("object") == "payment_intent":
        intent_id = _id(obj.get("id"), "pi_")
        if api is None:
            raise common.PlatformRefused(NO_API.format(what="whether the payment came from a Checkout Session"))
        session = api.session_of_payment_intent(intent_id)
        if session is None:
            # A payment of no Checkout Session: its one line is the store's (PAYMENT_INTENT_LINE).
            return api.payment_intent_with_charge(intent_id)
        # The session's own events are invoiced the same way; whichever comes first, the document is one.
        obj = session
    session = dict(obj)
    if not _whole_lines(session.get("line_items")):
        if api is None:
            raise common.PlatformRefused(LINES_AT_ISSUE)
        session["line_items"] = {"object": "list", "data": api.session_line_items(session["id"]),
                                 "has_more": False}
    intent = session.get("payment_intent")
    currency = session.get("currency")
    if isinstance(currency, str) and currency.lower() != "eur" and not isinstance(intent, Mapping) \
            and _id(intent, "pi_"):
        if api is None:
            raise common.PlatformRefused(NO_API.format(what="the payment's amount in euros"))
        session["payment_intent"] = api.payment_intent_with_charge(intent)
    return session


LINES_AT_ISSUE = ("Stripe's session events carry no lines: the worker reads them from Stripe "
                  "(GET /v1/checkout/sessions/{id}/line_items) when it issues the document")


def _whole_lines(line_items: Any) -> bool:
    """Whether a session holds every one of its lines (a session retrieved with `expand=["line_items"]`)."""
    return isinstance(line_items, Mapping) and line_items.get("has_more") is False \
        and isinstance(line_items.get("data"), list)


def look_up(change: common.Change, payload: Mapping, api: Any) -> list[Polled]:
    """A charge's refunds as Stripe lists them (GET /v1/refunds?charge=…), each as the inbox's event of its
    own: keyed by the refund's id, so the same refund read again (another charge.refunded) is one event."""
    charge = event_object(payload)
    charge_id = charge.get("id") if isinstance(charge, Mapping) else None  # `changes` made sure it is one
    if api is None:
        raise common.PlatformRefused(NO_API.format(what="the charge's refunds"))
    found = []
    for refund in api.refunds_of_charge(charge_id):
        refund_id = _id(refund.get("id"), "re_")
        if refund_id is None:
            continue
        refund = {"payment_intent": change.order_id, **refund}
        created = refund.get("created")
        when = datetime.fromtimestamp(created, UTC) if isinstance(created, int) and 0 <= created < 2**33 \
            else datetime.now(UTC)
        found.append(Polled(event_key=refund_id, topic=REFUND_CREATED, body=compact_json(refund),
                            modified_at=when, order_id=change.order_id))
    return found
