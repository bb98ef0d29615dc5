"""Shopify: webhooks (`webhook`), orders (`orders`) and refunds (`refunds`) behind the platform interface."""

from __future__ import annotations

from connector.platforms.common import LoadError
from connector.platforms.shopify.orders import DEFAULT_TAX_ID_KEYS, MONEY_SIDES, to_order
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
SECRET_SETTING = "SHOPIFY_WEBHOOK_SECRET"
# The keys the REST API wraps the one object it returns in (`{"order": {…}}`), which a person may paste.
API_ENVELOPES = ("order", "refund")

__all__ = [
    "API_ENVELOPES",
    "CANCEL_TOPIC",
    "DEFAULT_TAX_ID_KEYS",
    "MONEY_SIDES",
    "NAME",
    "PAID_TOPIC",
    "REFUND_TOPIC",
    "SECRET_SETTING",
    "LoadError",
    "delivery",
    "event_key",
    "store",
    "to_order",
    "to_refund",
    "topic",
    "verify",
]
