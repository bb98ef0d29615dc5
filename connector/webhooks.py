"""Webhook intake: delivery → verify → inbox → commit → enqueue → reply. Never calls InvoiceXpress."""

from __future__ import annotations

import json
import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from connector import jobs, logs, metrics
from connector.extensions import db
from connector.inbox import find_or_create_store, take_in
from connector.models import EventStatus
from connector.platforms import PLATFORMS
from connector.platforms.common import PING
from connector.stores import DEFAULT_STORE, STORE_NAME, UnreadableSecrets, find_store, webhook_secrets

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

# An order nests about 6 levels; anything far deeper is not an order.
MAX_JSON_DEPTH = 32


@bp.after_request
def count_answer(response):
    # Counted from the answer itself, so every way out of the view is counted and the view stays as it is.
    metrics.count_webhook((request.view_args or {}).get("platform_name"), response)
    return response


def answer(status: int, outcome: str, **extra):
    return jsonify(status=outcome, **extra), status


@bp.post("/webhooks/<platform_name>")
@bp.post("/webhooks/<platform_name>/<store_name>")
def receive(platform_name: str, store_name: str | None = None):
    platform = PLATFORMS.get(platform_name)
    if platform is None:
        return answer(404, "unknown platform")
    if store_name is not None and not STORE_NAME.fullmatch(store_name):
        return answer(404, "unknown store",
                      error="a store's name is lower-case letters, digits, '.', '_' or '-', and may end in :PORT")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        body = read_body(limit)
    except RequestEntityTooLarge:
        return answer(413, "too large", limit=limit)
    delivery = platform.delivery(body, request.headers)
    if delivery == PING:
        # A platform checking the URL is alive (WooCommerce, when a webhook is created): unsigned, stored nowhere.
        return answer(200, "ping")

    # The store the URL names; else the one the delivery names (Shopify's shop domain, WooCommerce's site);
    # else (Stripe names none) the default store.
    topic = delivery.topic
    name = store_name or delivery.store or DEFAULT_STORE
    readable = {what: len(value) <= longest and value.isprintable()
                for what, value, longest in (("topic", topic, 100), ("shop domain", name, 255))}
    with logs.for_store(platform_name, name if readable["shop domain"] else "(unreadable)"):
        return _take_in(platform, name, readable, body, delivery)


def _take_in(platform, name: str, readable: dict[str, bool], body: bytes, delivery):
    """Find the delivery's store, verify it with that store's secrets, store it and queue it."""
    platform_name, topic = platform.NAME, delivery.topic
    try:
        store = find_store(platform_name, name) if readable["shop domain"] else None
        # A store of its own is verified with its own secrets only; any other with the environment's.
        secrets = webhook_secrets(store, platform_name)
    except SQLAlchemyError:
        db.session.rollback()
        logger.exception("webhook not stored: database unavailable platform=%s", platform_name)
        return answer(503, "database unavailable")
    except UnreadableSecrets:
        logger.error("webhook not stored: the store's secrets cannot be read with SECRET_KEY")
        return answer(503, "store unavailable")
    if not secrets:
        return answer(404, "unknown store")
    if not platform.verify(body, request.headers, secrets):
        logger.warning("webhook refused: bad signature platform=%s", platform_name)
        return answer(401, "invalid signature")
    for what, fine in readable.items():
        if not fine:
            return answer(400, "unreadable headers", error=f"the {what} header is not a {what}")
    payload, problem = read_json(body)
    if problem:
        return answer(400, "unreadable body", error=problem)
    try:
        event, duplicate = take_in(platform_name, name, delivery.event_key, topic, body, delivery.acted_on,
                                   store=store)
    except SQLAlchemyError:
        db.session.rollback()
        logger.exception("webhook not stored: database unavailable platform=%s", platform_name)
        return answer(503, "database unavailable")
    if duplicate:
        return answer(200, "duplicate")
    if event.status == EventStatus.RECEIVED:
        jobs.enqueue_event(event.id)
        return answer(200, "accepted", event=event.id)
    return answer(200, "ignored", event=event.id)


def read_body(limit: int) -> bytes:
    """The raw body, or RequestEntityTooLarge when it is over `limit` bytes.

    A chunked body has no Content-Length, and werkzeug then cuts it at the limit without a word; it
    is read here up to one byte past the limit so that "too large" is told apart from "exactly fits".
    """
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge()
        return request.get_data(cache=False)
    if not request.environ.get("wsgi.input_terminated"):
        return b""  # neither a length nor chunking: WSGI gives no body
    body = request.environ["wsgi.input"].read(limit + 1)
    if len(body) > limit:
        raise RequestEntityTooLarge()
    return body


def read_json(body: bytes) -> tuple[dict | None, str | None]:
    """The body as a JSON object, or why it is not one we accept."""
    try:
        payload = json.loads(body)
    except RecursionError:  # nested deeper than the parser goes
        return None, f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep"
    except json.JSONDecodeError:
        return None, "the body is not JSON"
    except UnicodeDecodeError:
        return None, "the body is not UTF-8 text"
    except ValueError:  # valid JSON Python will not read, e.g. an integer of thousands of digits
        return None, "the JSON holds a number too long to read"
    if not isinstance(payload, dict):
        return None, "the body is not a JSON object"
    if _deeper_than(payload, MAX_JSON_DEPTH):
        return None, f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep"
    return payload, None


def _deeper_than(value, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iteratively: no recursion to exhaust)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


__all__ = ["bp", "find_or_create_store", "read_body", "read_json"]
