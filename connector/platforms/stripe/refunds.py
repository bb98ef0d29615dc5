"""Stripe refunds: a refund object (see `sources.snapshot`) loaded into an amount-only `Refund`.

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
    invoice's VAT rates. `order`: the sale's source when at hand (the session, or the payment of no
    session), for the order's name and a check that the refund is of its payment and in its currency.
    `money` and `taxes_included` are accepted for the interface's sake: a refund is one amount in one currency.

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
    name = None
    if order is not None:
        sale = event_object(order)
        if not isinstance(sale, Mapping):
            raise common.LoadError({"order": ["the sale given is not a Checkout Session or a payment"]},
                                   what="order", platform=PLATFORM)
        payment = sale if sale.get("object") == "payment_intent" else {"id": sale.get("payment_intent")}
        if orders._id(payment.get("id"), "pi_") != intent:
            raise _error("the refund is of another payment than the session given", "payment_intent")
        if str(sale.get("currency") or "").upper() != currency:
            raise _error("the refund is in another currency than the session given", "currency")
        name = orders.order_name(sale) if payment is not sale else intent
    amount = major(data["amount"], currency)
    lines = (RefundLine(key="refund-adjustment", description="Refund adjustment", quantity=Decimal(1),
                        amount=amount, tax_rate=_ZERO, kind="adjustment"),) if amount else ()
    return Refund(
        platform="stripe",
        store=store,
        refund_id=data["id"],
        order_id=intent,
        order_name=name,
        currency=currency,
        lines=lines,
        amount=amount,
        created_at=orders._utc(data["created"]),
    )
