"""Stripe refunds: the refund object a refund change needs (`snapshot`), loaded into an amount-only `Refund`.

A Stripe refund gives back an amount on a payment, never lines: the credit note spreads it over the
invoice's VAT rates in proportion to the sale, as for amount-only refunds of the other platforms.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

from connector.orders import Refund, RefundLine, printable
from connector.platforms import common
from connector.platforms.stripe import orders
from connector.platforms.stripe.orders import PLATFORM, event_object, major

_ZERO = Decimal(0)


def is_refund(payload: Any) -> bool:
    """Whether a pasted object is a Stripe refund (the bare object, or an event about one)."""
    obj = event_object(payload)
    return isinstance(obj, Mapping) and obj.get("object") == "refund"


def snapshot(change: common.Change, payload: Mapping, api: Any) -> dict:
    """What the change needs: for a refund, the refund object the event carries; otherwise the event itself.

    A `refund.created` event is its refund; a `charge.refunded` event lists its refunds in `refunds.data`.
    """
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
    raise common.PlatformRefused(f"Stripe refund {change.refund_id} is not in the event; it must be read from "
                                 "Stripe")


class _RefundSchema(common.LenientSchema):
    id = fields.String(required=True, validate=validate.Regexp(r"^re_[0-9A-Za-z_]{1,250}$"))
    amount = fields.Integer(strict=True, required=True, validate=validate.Range(min=0, max=10**14))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    payment_intent = fields.Raw(allow_none=True, load_default=None)
    charge = fields.Raw(allow_none=True, load_default=None)
    status = common.text()
    created = fields.Integer(strict=True, allow_none=True, load_default=None, validate=validate.Range(min=0))


_REFUND_SCHEMA = _RefundSchema()


def _error(message: str, path: str) -> common.LoadError:
    return common.LoadError({path: [message]}, what="refund", platform=PLATFORM)


def to_refund(snapshot: Mapping, *, store: str, money: str = "presentment", taxes_included: bool | None = None,
              order: Mapping | None = None) -> Refund:
    """Load a Stripe refund object into an amount-only `Refund` of its payment intent.

    Its one "refund-adjustment" line is the whole amount, which the credit note spreads over the
    invoice's VAT rates. `order`: the session (with its lines) when at hand, for the order's name and a
    check that the refund is of its payment and in its currency. `money` and `taxes_included` are
    accepted for the interface's sake: a refund is one amount in one currency.

    Raises:
        LoadError: the payload is not a well-formed Stripe refund (its `what` is "refund"), or `order`
            is not a well-formed session (its `what` is "order").
    """
    try:
        data = _REFUND_SCHEMA.load(printable(event_object(snapshot)))
    except ValidationError as error:
        raise common.LoadError(error.normalized_messages(), what="refund", platform=PLATFORM) from None
    intent = orders._id(data["payment_intent"], "pi_")
    if intent is None:
        raise _error("the refund names no payment intent, so no Checkout Session it could credit",
                     "payment_intent")
    currency = data["currency"].upper()
    sale = orders.to_order(order, store=store) if order is not None else None
    if sale is not None:
        session = orders.event_object(order)
        if orders._id(session.get("payment_intent"), "pi_") != intent:
            raise _error("the refund is of another payment than the session given", "payment_intent")
        if sale.currency != currency:
            raise _error("the refund is in another currency than the session given", "currency")
    amount = major(data["amount"], currency)
    lines = (RefundLine(key="refund-adjustment", description="Refund adjustment", quantity=Decimal(1),
                        amount=amount, tax_rate=_ZERO, kind="adjustment"),) if amount else ()
    return Refund(
        platform="stripe",
        store=store,
        refund_id=data["id"],
        order_id=intent,
        order_name=sale.name if sale is not None else None,
        currency=currency,
        lines=lines,
        amount=amount,
        created_at=orders._utc(data["created"]),
    )
