"""Shopify's side of reconciliation: the Admin API client a store may use, and its orders as inbox entries."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from connector.platforms.polling import Polled, compact_json, parse_time
from connector.platforms.shopify.api import ShopifyAPI
from connector.platforms.shopify.webhook import CANCEL_TOPIC, PAID_TOPIC, REFUND_TOPIC

# Shopify's event ids cannot be reproduced from an order, so a poll's entry is new even when a webhook
# brought the same change; the document rows' uniqueness is what keeps it from issuing twice.
SAME_KEYS_AS_WEBHOOKS = False
PAID_STATUSES = ("paid", "partially_refunded")


def configured_store(config: Mapping[str, Any]) -> str | None:
    """No store from the settings alone: the token's shop is known once its first webhook names it."""
    return None


def api(config: Mapping[str, Any], store: str) -> ShopifyAPI | None:
    """The Admin API client for the shop `store` (its myshopify.com domain), or None without a token."""
    token = config.get("SHOPIFY_ACCESS_TOKEN")
    if not token or not store:
        return None
    return ShopifyAPI(store, token, base_url=config.get("SHOPIFY_API_BASE_URL") or None)


def poll(client: ShopifyAPI, since: datetime) -> Iterator[Polled]:
    """Every order updated since `since`: paid or cancelled as that topic's webhook, and each refund it lists."""
    for order in client.orders_updated_since(since):
        updated_at = parse_time(order.get("updated_at")) if isinstance(order, dict) else None
        if updated_at is None or not order.get("id"):
            continue
        order_id = str(order["id"])
        if order.get("cancelled_at"):
            topic = CANCEL_TOPIC
        elif order.get("financial_status") in PAID_STATUSES:
            topic = PAID_TOPIC
        else:
            topic = ""
        yield Polled(event_key=f"poll:{order_id}:{order['updated_at']}", topic=topic or "orders/updated",
                     body=compact_json(order), modified_at=updated_at, order_id=order_id, acted_on=bool(topic))
        for refund in order.get("refunds") or []:
            # A refund never changes once made: its id alone keys it, however often the order is polled.
            if isinstance(refund, dict) and refund.get("id"):
                yield Polled(event_key=f"poll:refund:{refund['id']}", topic=REFUND_TOPIC,
                             body=compact_json(refund), modified_at=updated_at, order_id=order_id)
