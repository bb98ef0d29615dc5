"""Webhook intake: verify → store → commit → enqueue → reply. Never calls InvoiceXpress."""

from __future__ import annotations

import hashlib
import json
import logging

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import RequestEntityTooLarge

from connector import jobs
from connector.extensions import db
from connector.models import EventStatus, Store, WebhookEvent
from connector.platforms import PLATFORMS

logger = logging.getLogger(__name__)

bp = Blueprint("webhooks", __name__)

# A Shopify order nests about 6 levels; anything far deeper is not an order.
MAX_JSON_DEPTH = 32


def answer(status: int, outcome: str, **extra):
    return jsonify(status=outcome, **extra), status


@bp.post("/webhooks/<platform_name>")
def receive(platform_name: str):
    secrets = current_app.config["WEBHOOK_SECRETS"].get(platform_name)
    platform = PLATFORMS.get(platform_name)
    if platform is None or not secrets:
        return answer(404, "unknown platform")
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        body = read_body(limit)
    except RequestEntityTooLarge:
        return answer(413, "too large", limit=limit)
    if not platform.verify(body, request.headers, secrets):
        logger.warning("webhook refused: bad signature platform=%s", platform_name)
        return answer(401, "invalid signature")
    payload, problem = read_json(body)
    if problem:
        return answer(400, "unreadable body", error=problem)

    topic = platform.topic(request.headers)
    domain = platform.store(request.headers) or "unknown"
    for name, value, longest in (("topic", topic, 100), ("shop domain", domain, 255)):
        if len(value) > longest or not value.isprintable():
            return answer(400, "unreadable headers", error=f"the {name} header is not a {name}")
    # A platform always sends an event id; the hash keeps a hand-made redelivery idempotent too, and
    # stands in for an id too long or too odd to store.
    key = platform.event_key(request.headers) or ""
    if not key or len(key) > 200 or not key.isprintable():
        key = "sha256:" + hashlib.sha256(topic.encode() + b"\0" + (key.encode() or body)).hexdigest()
    acted_on = (platform.PAID_TOPIC, platform.REFUND_TOPIC, platform.CANCEL_TOPIC)
    status = EventStatus.RECEIVED if topic in acted_on else EventStatus.IGNORED

    try:
        store = find_or_create_store(platform_name, domain)
        event = WebhookEvent(
            store_id=store.id, platform=platform_name, event_key=key, topic=topic, body=body, status=status
        )
        db.session.add(event)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            logger.info("webhook duplicate platform=%s store=%s topic=%s", platform_name, domain, topic)
            return answer(200, "duplicate")
    except SQLAlchemyError:
        db.session.rollback()
        logger.exception("webhook not stored: database unavailable platform=%s", platform_name)
        return answer(503, "database unavailable")

    logger.info(
        "webhook stored event=%s platform=%s store=%s topic=%s status=%s",
        event.id, platform_name, domain, topic, status,
    )
    if status == EventStatus.RECEIVED:
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


def find_or_create_store(platform: str, domain: str) -> Store:
    """The store row for (platform, domain), created on its first webhook."""
    query = sa.select(Store).where(Store.platform == platform, Store.domain == domain)
    store = db.session.scalar(query)
    if store is not None:
        return store
    try:
        with db.session.begin_nested():
            store = Store(platform=platform, domain=domain)
            db.session.add(store)
    except IntegrityError:
        # Two first webhooks of a store at once: the other one created it.
        store = db.session.scalar(query)
    return store
