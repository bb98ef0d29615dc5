"""WooCommerce: the platform interface (deliveries, signature, what an order state owes, orders and refunds)."""

from __future__ import annotations

from collections.abc import Mapping

from connector.platforms.woocommerce.orders import DEFAULT_TAX_ID_KEYS, changes, to_order
from connector.platforms.woocommerce.refunds import snapshot, to_refund
from connector.platforms.woocommerce.webhook import (
    NAME,
    SECRET_SETTING,
    delivery,
    event_key,
    store,
    topic,
    verify,
)


def unwrap(payload: Mapping) -> Mapping:
    """The order as pasted: WooCommerce's REST API returns the order object itself, with no envelope."""
    return payload


__all__ = [
    "DEFAULT_TAX_ID_KEYS",
    "NAME",
    "SECRET_SETTING",
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
