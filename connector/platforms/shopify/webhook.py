"""Shopify's webhook transport: the signature and what the `X-Shopify-*` headers say about a delivery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from connector.platforms.common import Delivery, header, signed_with_any

PAID_TOPIC = "orders/paid"
REFUND_TOPIC = "refunds/create"
CANCEL_TOPIC = "orders/cancelled"
ACTED_ON = (PAID_TOPIC, REFUND_TOPIC, CANCEL_TOPIC)


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool:
    """Whether `X-Shopify-Hmac-Sha256` is the base64 HMAC-SHA256 of the raw body under any of `secrets`.

    Several secrets because Shopify keeps signing with the old one for up to an hour after a rotation.
    Fails closed: no header, or no usable secret, is never a valid signature.
    """
    return signed_with_any(body, header(headers, "X-Shopify-Hmac-Sha256"), secrets)


def event_key(headers: Mapping[str, str]) -> str | None:
    """The delivery's idempotency key: the event id (same across subscriptions), else the webhook id."""
    return header(headers, "X-Shopify-Event-Id") or header(headers, "X-Shopify-Webhook-Id") or None


def topic(headers: Mapping[str, str]) -> str:
    """The webhook topic, e.g. 'orders/paid' ('' if absent)."""
    return header(headers, "X-Shopify-Topic")


def store(headers: Mapping[str, str]) -> str:
    """The shop's myshopify.com domain, lower-cased ('' if absent)."""
    return header(headers, "X-Shopify-Shop-Domain").lower()


def delivery(body: bytes, headers: Mapping[str, str]) -> Delivery:
    """What a delivery's headers say: its shop, event id and topic. Shopify never pings a webhook URL."""
    name = topic(headers)
    return Delivery(store=store(headers), event_key=event_key(headers), topic=name, acted_on=name in ACTED_ON)
