"""Shopify behind the platform interface: webhooks (`webhook`), orders (`orders`) and refunds (`refunds`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.orders import printable
from connector.platforms.common import Change, LoadError
from connector.platforms.shopify.orders import DEFAULT_TAX_ID_KEYS, MONEY_SIDES, load_error, to_order
from connector.platforms.shopify.refunds import to_refund
from connector.platforms.shopify.webhook import (
    CANCEL_TOPIC,
    PAID_TOPIC,
    REFUND_TOPIC,
    delivery,
    event_key,
    store,
    topic,
    verify,
)

NAME = "shopify"
TITLE = "Shopify"
SECRET_SETTING = "SHOPIFY_WEBHOOK_SECRET"
# A later partial refund is a credit note, not a reason not to invoice.
PAID_STATUSES = ("paid", "partially_refunded")
# The keys the REST API wraps the one object it returns in (`{"order": {…}}`), which a person may paste.
API_ENVELOPES = ("order", "refund")


def changes(payload: Mapping, topic: str, settings: Any = None) -> list[Change]:
    """What one Shopify event means: orders/paid a sale (or nothing, when it is not paid after all),
    refunds/create a refund, orders/cancelled a cancellation and a refund for each refund that gave
    money back. Raises LoadError for a refund or a cancelled order that cannot be read."""
    if topic == PAID_TOPIC:
        return [_paid(payload)]
    if topic == REFUND_TOPIC:
        return [Change(kind="refund", order_id=_id(payload, "order_id", "refund"),
                       refund_id=_id(payload, "id", "refund"))]
    if topic == CANCEL_TOPIC:
        order = to_order(payload, store="", money="presentment")
        refunds = []
        for entry in payload.get("refunds") or []:
            refund = to_refund(entry, store="", taxes_included=order.taxes_included, order=payload)
            if refund.amount > 0:
                refunds.append(Change(kind="refund", order_id=order.order_id, refund_id=refund.refund_id))
        return [Change(kind="cancellation", order_id=order.order_id), *refunds]
    return [Change(kind="none", reason=f"The connector does not act on '{printable(topic)}' events.")]


def _paid(payload: Mapping) -> Change:
    status = payload.get("financial_status") if isinstance(payload, Mapping) else None
    order_id = str(payload.get("id")) if isinstance(payload, Mapping) else ""
    if not isinstance(status, str) or status in PAID_STATUSES:
        return Change(kind="sale", order_id=order_id)  # a status that is no text: to_order says why
    if status == "refunded":
        return Change(kind="none", order_id=order_id,
                      reason="The order was fully refunded before it was invoiced.")
    return Change(kind="none", order_id=order_id,
                  reason=f"The order is not paid (its payment status is '{printable(status)}').")


def _id(payload: Mapping, key: str, what: str) -> str:
    value = payload.get(key) if isinstance(payload, Mapping) else None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise load_error({key: ["Not a valid id."]}, what=what)
    return str(value)


def snapshot(change: Change, payload: Mapping, api: Any = None) -> dict:
    """A refund's source data, all in the event already: the refunds/create body itself, or the entry of
    the cancelled order's `refunds[]` (no API call)."""
    if payload.get("id") is not None and str(payload.get("id")) == change.refund_id and "order_id" in payload:
        return dict(payload)
    for entry in payload.get("refunds") or []:
        if isinstance(entry, Mapping) and str(entry.get("id")) == change.refund_id:
            return dict(entry)
    raise load_error({"refunds": [f"refund {change.refund_id} is not in the event"]}, what="refund")


def unwrap(payload: Mapping) -> Mapping:
    """The object inside the REST API's envelope (`{"order": {…}}`, `{"refund": {…}}`), else the payload."""
    for key in API_ENVELOPES:
        if set(payload) == {key} and isinstance(payload[key], Mapping):
            return payload[key]
    return payload


def api_client(config: Mapping[str, Any], store: str) -> None:
    """Shopify's refunds come whole in their webhooks: `snapshot` needs no API client."""
    return None


__all__ = [
    "TITLE",
    "API_ENVELOPES",
    "CANCEL_TOPIC",
    "DEFAULT_TAX_ID_KEYS",
    "MONEY_SIDES",
    "NAME",
    "PAID_STATUSES",
    "PAID_TOPIC",
    "REFUND_TOPIC",
    "SECRET_SETTING",
    "LoadError",
    "api_client",
    "changes",
    "delivery",
    "event_key",
    "snapshot",
    "store",
    "to_order",
    "to_refund",
    "topic",
    "unwrap",
    "verify",
]
