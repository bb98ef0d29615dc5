"""Stripe's side of reconciliation: the Events API's events the connector acts on, as inbox entries."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from connector.platforms.polling import Polled, compact_json
from connector.platforms.stripe.api import DEFAULT_BASE_URL, StripeAPI
from connector.platforms.stripe.webhook import ACTED_ON, event_key, topic

logger = logging.getLogger(__name__)

# A polled event is the webhook's own event, `evt_…` id and all, so the inbox takes a delivered one as a
# duplicate: a new entry from a poll is an event no webhook brought.
SAME_KEYS_AS_WEBHOOKS = True

# The one store the environment's STRIPE_API_KEY names (Stripe's events name no store of their own).
STORE = "default"  # the inbox's DEFAULT_STORE, which /webhooks/stripe delivers to

POLLED_TYPES = tuple(sorted(ACTED_ON))


def configured_store(config: Mapping[str, Any]) -> str | None:
    """The store the settings' API key belongs to ("default"), or None when there is no key."""
    return STORE if config.get("STRIPE_API_KEY") else None


def api(config: Mapping[str, Any], store: str) -> StripeAPI | None:
    """The API client of the settings' key, or None when they hold none.

    Which store's key it is is `connector.stores`'s to decide: the environment's is the default store's, and a
    named store (`/webhooks/stripe/<name>`, another Stripe account) is polled with its own key or not at all.
    """
    if configured_store(config) is None:
        return None
    return StripeAPI(
        config["STRIPE_API_KEY"], config.get("STRIPE_API_BASE_URL") or DEFAULT_BASE_URL,
        timeout=(5, float(config.get("STRIPE_READ_TIMEOUT") or 20)),
    )


def poll(client: StripeAPI, since: datetime) -> Iterator[Polled]:
    """Every event the connector acts on created in or after `since`'s second, oldest first, each as its webhook
    delivery.

    Stripe keeps events for 30 days: a `since` further back gives what it still has, and older events
    are backfill's to find (from the sessions themselves).
    """
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    # `created` is whole seconds: the second `since` falls in is read (a duplicate at most), never skipped.
    created_after = max(0, math.floor(since.timestamp()) - 1)
    # Stripe lists newest first; reconciliation wants oldest first, so that a pass cut short has a
    # complete prefix behind its watermark.
    for event in reversed(client.events(POLLED_TYPES, created_after)):
        key, name, created = event_key(event), topic(event), event.get("created")
        if key is None or not name or isinstance(created, bool) or not isinstance(created, int) or created < 0:
            # The event's values are left out of the line: an unreadable event may carry anything.
            logger.warning("Stripe event skipped by reconciliation: no usable id, type or creation time")
            continue
        yield Polled(event_key=key, topic=name, body=compact_json(event),
                     modified_at=datetime.fromtimestamp(created, UTC), order_id=order_id(event))


def order_id(event: Mapping[str, Any]) -> str:
    """The payment an event is about: its object's payment intent (`pi_…`), else the object's own id."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, Mapping) else None
    if not isinstance(obj, Mapping):
        return ""
    if obj.get("object") == "payment_intent" or str(event.get("type", "")).startswith("payment_intent."):
        return _id(obj) or ""
    return _id(obj.get("payment_intent")) or _id(obj) or ""


def _id(value: Any) -> str | None:
    # An expandable field is an id or, expanded, the object with its id.
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None
