"""Stripe: the platform interface (event signature and key, what a Checkout Session or refund owes, loading)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.platforms.stripe import poll as polling
from connector.platforms.stripe.api import StripeAPI
from connector.platforms.stripe.orders import DEFAULT_TAX_ID_KEYS, changes, to_order
from connector.platforms.stripe.orders import PLATFORM as TITLE
from connector.platforms.stripe.refunds import is_refund, to_refund
from connector.platforms.stripe.sources import look_up, snapshot
from connector.platforms.stripe.webhook import (
    NAME,
    SECRET_SETTING,
    SESSION_COMPLETED,
    delivery,
    event_key,
    topic,
    verify,
)

PAID_TOPIC = SESSION_COMPLETED


def api_client(config: Mapping[str, Any], store: str) -> StripeAPI | None:
    """The Stripe API client the worker reads sessions' lines and charges' refunds with (None without a key)."""
    return polling.api(config, store)


def unwrap(payload: Mapping) -> Mapping:
    """What a person pasted, as it is: an event, a bare session (with `line_items`) or a bare refund."""
    return payload


__all__ = [
    "TITLE",
    "DEFAULT_TAX_ID_KEYS",
    "NAME",
    "PAID_TOPIC",
    "SECRET_SETTING",
    "api_client",
    "changes",
    "delivery",
    "event_key",
    "is_refund",
    "look_up",
    "snapshot",
    "to_order",
    "to_refund",
    "topic",
    "unwrap",
    "verify",
]
