"""WooCommerce: the platform interface (deliveries, signature, what an order state owes, orders and refunds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.platforms.woocommerce import poll as polling
from connector.platforms.woocommerce.orders import DEFAULT_TAX_ID_KEYS, changes, to_order
from connector.platforms.woocommerce.orders import PLATFORM as TITLE
from connector.platforms.woocommerce.refunds import is_refund, snapshot, to_refund
from connector.platforms.woocommerce.webhook import (
    NAME,
    SECRET_SETTING,
    UPDATED_TOPIC,
    delivery,
    event_key,
    store,
    topic,
    verify,
)

# WooCommerce has no "paid" topic: a payment arrives as an update whose status is a paid one.
PAID_TOPIC = UPDATED_TOPIC


def api_client(config: Mapping[str, Any], store: str):
    """The REST client of the site the settings' credentials name (refunds' lines are read with it), or None."""
    return polling.api(config, store)


def unwrap(payload: Mapping) -> Mapping:
    """The order as pasted: WooCommerce's REST API returns the order object itself, with no envelope."""
    return payload


__all__ = [
    "DEFAULT_TAX_ID_KEYS",
    "NAME",
    "PAID_TOPIC",
    "TITLE",
    "SECRET_SETTING",
    "api_client",
    "changes",
    "delivery",
    "event_key",
    "is_refund",
    "snapshot",
    "store",
    "to_order",
    "to_refund",
    "topic",
    "unwrap",
    "verify",
]
