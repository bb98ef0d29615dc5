"""Stripe deliveries: the `Stripe-Signature` check with its replay window, and what an event names of itself."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from connector.platforms import common

NAME = "stripe"
SECRET_SETTING = "STRIPE_WEBHOOK_SECRET"

SIGNATURE_HEADER = "Stripe-Signature"
# Stripe's own libraries refuse a signature older than this (stripe-python's DEFAULT_TOLERANCE).
TOLERANCE_SECONDS = 300

SESSION_COMPLETED = "checkout.session.completed"
SESSION_PAYMENT_SUCCEEDED = "checkout.session.async_payment_succeeded"
SESSION_PAYMENT_FAILED = "checkout.session.async_payment_failed"
SESSION_EXPIRED = "checkout.session.expired"
CHARGE_REFUNDED = "charge.refunded"
REFUND_CREATED = "refund.created"
PAYMENT_SUCCEEDED = "payment_intent.succeeded"  # a payment, of a Checkout Session or of none
ACTED_ON = frozenset({SESSION_COMPLETED, SESSION_PAYMENT_SUCCEEDED, SESSION_PAYMENT_FAILED, SESSION_EXPIRED,
                      CHARGE_REFUNDED, REFUND_CREATED, PAYMENT_SUCCEEDED})

_MAX_SIGNATURE_PARTS = 64  # a header is a timestamp and a few signatures; more is not Stripe's


def _parse(signature_header: str) -> tuple[int, list[bytes]] | None:
    """The timestamp and the `v1` signatures of a `Stripe-Signature` header, or None when it is malformed."""
    parts = signature_header.split(",")
    if len(parts) > _MAX_SIGNATURE_PARTS:
        return None
    timestamps, signatures = [], []
    for part in parts:
        key, equals, value = part.strip().partition("=")
        if not equals:
            return None
        if key == "t":
            timestamps.append(value.strip())
        elif key == "v1":
            signatures.append(value.strip().encode("ascii", "replace"))
        # Other schemes (v0, Stripe's test-only scheme) are ignored, as Stripe's libraries do.
    if len(timestamps) != 1 or not timestamps[0].isascii() or not timestamps[0].isdigit() or not signatures:
        return None
    return int(timestamps[0]), signatures


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str], now: float | None = None) -> bool:
    """Whether `Stripe-Signature` signs the raw body under any of `secrets`, within Stripe's 5-minute window.

    The signature is the hex HMAC-SHA256 of "{t}." + the raw body; any `v1` may match (Stripe sends
    several while a secret is rolled), under any secret (ours rotate too). Every pair is compared, so
    the time taken says nothing of which matched. Fails closed on a malformed header or an empty secret.
    """
    parsed = _parse(common.header(headers, SIGNATURE_HEADER))
    if parsed is None:
        return False
    timestamp, signatures = parsed
    now = time.time() if now is None else now
    # Stripe's libraries accept any future timestamp; we also refuse one more than the window ahead, since
    # a signature made for the future could otherwise be replayed for as long as its maker liked.
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return False
    signed = f"{timestamp}.".encode() + (body or b"")
    valid = False
    for secret in secrets:
        if not secret:  # an empty key is public knowledge: anyone could sign with it
            continue
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest().encode()
        for signature in signatures:
            valid |= hmac.compare_digest(expected, signature)
    return valid


def event_key(event: Any) -> str | None:
    """Stripe's id of the event (`evt_…`), the same in every retry of it; None when `event` has none."""
    if not isinstance(event, Mapping):
        return None
    event_id = event.get("id")
    if not isinstance(event_id, str) or not event_id.startswith("evt_") or len(event_id) > 255:
        return None
    return event_id.strip() if event_id.isprintable() else None


def topic(event: Any) -> str:
    """The event's type, e.g. 'checkout.session.completed' ('' when it has none)."""
    name = event.get("type") if isinstance(event, Mapping) else None
    return name.strip() if isinstance(name, str) and name.isprintable() and len(name) <= 255 else ""


def delivery(body: bytes, headers: Mapping[str, str]) -> common.Delivery:
    """What a Stripe event says of itself: its id, its type, whether it can owe a document.

    Stripe names no store: a named store comes from the URL (`/webhooks/stripe/<store>`). Never raises,
    whatever the body: an unreadable one gets no key (the inbox then hashes the body).
    """
    try:
        event = json.loads(body)
    except (ValueError, TypeError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        event = None
    name = topic(event)
    return common.Delivery(store="", event_key=event_key(event), topic=name, acted_on=name in ACTED_ON)
