"""WooCommerce deliveries: the creation ping, the store and topic headers, the event key, and the signature."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from connector.platforms import common

NAME = "woocommerce"
SECRET_SETTING = "WOOCOMMERCE_WEBHOOK_SECRET"

CREATED_TOPIC = "order.created"
UPDATED_TOPIC = "order.updated"
DELETED_TOPIC = "order.deleted"
RESTORED_TOPIC = "order.restored"
ORDER_TOPICS = (CREATED_TOPIC, UPDATED_TOPIC, DELETED_TOPIC, RESTORED_TOPIC)

SIGNATURE_HEADER = "X-WC-Webhook-Signature"
SOURCE_HEADER = "X-WC-Webhook-Source"
TOPIC_HEADER = "X-WC-Webhook-Topic"

# WooCommerce's "is this URL alive" request when a webhook is saved: a form body and nothing else.
_PING_BODY = re.compile(rb"webhook_id=\d+")
_DEFAULT_PORTS = {"http": 80, "https": 443}


# --- the secret as WooCommerce signs with it -----------------------------------------------------------
#
# WooCommerce signs with wp_specialchars_decode($secret, ENT_QUOTES): the secret as saved in the shop's
# admin may hold HTML entities. WordPress first removes the zero padding of the numeric entities it knows,
# then replaces, in one pass, exactly these (strtr: longest match first, nothing decoded twice); every
# other entity (&eacute;, &#65;, &QUOT;) stays as it is.
_PADDED = (
    (re.compile(r"&#0*39;"), "&#039;"),
    (re.compile(r"&#x0*27;", re.IGNORECASE), "&#x27;"),
    (re.compile(r"&#0*34;"), "&#034;"),
    (re.compile(r"&#x0*22;", re.IGNORECASE), "&#x22;"),
    (re.compile(r"&#0*60;"), "&#060;"),
    (re.compile(r"&#0*62;"), "&#062;"),
    (re.compile(r"&#0*38;"), "&#038;"),
    (re.compile(r"&#x0*26;", re.IGNORECASE), "&#x26;"),
)
_ENTITIES = {
    "&#039;": "'", "&#x27;": "'",
    "&quot;": '"', "&#034;": '"', "&#x22;": '"',
    "&lt;": "<", "&#060;": "<", "&gt;": ">", "&#062;": ">",
    "&amp;": "&", "&#038;": "&", "&#x26;": "&",
}
_ENTITY = re.compile("|".join(re.escape(name) for name in sorted(_ENTITIES, key=len, reverse=True)))


def signing_secret(secret: str) -> str:
    """`secret` decoded as WordPress's wp_specialchars_decode(…, ENT_QUOTES) does before WooCommerce signs."""
    if "&" not in secret:
        return secret
    for pattern, replacement in _PADDED:
        secret = pattern.sub(replacement, secret)
    return _ENTITY.sub(lambda match: _ENTITIES[match.group()], secret)


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool:
    """Whether `X-WC-Webhook-Signature` is the base64 HMAC-SHA256 of the raw body under any of `secrets`.

    Several secrets so that a rotation loses nothing; an empty secret never signs.
    """
    decoded = [signing_secret(secret) if secret else "" for secret in secrets]
    return common.signed_with_any(body, common.header(headers, SIGNATURE_HEADER), decoded)


# --- what a delivery names --------------------------------------------------------------------------------


def store(headers: Mapping[str, str]) -> str:
    """The site the delivery comes from: the host of `X-WC-Webhook-Source`, lower-cased ('' if none).

    A non-default port stays (two sites on one host differ by it). A path (a WordPress installed in
    /shop/) is not part of the reference: one host is one store, as WOOCOMMERCE_URL's host names it.
    """
    source = common.header(headers, SOURCE_HEADER)
    try:
        parts = urlsplit(source if "//" in source else f"//{source}")
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:  # a port that is not a number, brackets that do not close
        return ""
    if not host:
        return ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address keeps its brackets, so a port after it stays readable
    if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
        return f"{host}:{port}"
    return host


def topic(headers: Mapping[str, str]) -> str:
    """The webhook topic, e.g. 'order.updated' ('' if absent)."""
    return common.header(headers, TOPIC_HEADER)


def event_key(order: Any) -> str | None:
    """The key of one state of one order: its id and `date_modified_gmt` (None when `order` is not an order).

    WooCommerce has no event id; the same state seen twice (two webhooks, or a webhook and a poll of
    the REST API) gives the same key, so it is one event.
    """
    if not isinstance(order, Mapping):
        return None
    order_id, modified = order.get("id"), order.get("date_modified_gmt")
    if isinstance(order_id, bool) or not isinstance(order_id, int) or order_id <= 0:
        return None
    if not isinstance(modified, str) or not modified.strip():
        return None
    return f"order:{order_id}:{modified.strip()}"


def delivery(body: bytes, headers: Mapping[str, str]) -> common.Delivery:
    """What a delivery says of itself: the ping, or its store, event key, topic and whether it is acted on.

    Never raises, whatever the body: an unreadable one gets no key (the inbox then hashes the body).
    """
    if _PING_BODY.fullmatch(body or b"") and not common.header(headers, SIGNATURE_HEADER):
        return common.PING
    name = topic(headers)
    return common.Delivery(store=store(headers), event_key=_body_key(body), topic=name,
                           acted_on=name in ORDER_TOPICS)


def _body_key(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, TypeError, RecursionError):  # not JSON, not UTF-8, nested beyond reason
        return None
    return event_key(payload)
