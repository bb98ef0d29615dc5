"""The inbox: every delivery (a webhook's, or a poll's) stored once per platform, store and event key."""

from __future__ import annotations

import hashlib
import logging

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from connector.extensions import db
from connector.models import EventStatus, Store, WebhookEvent
from connector.stores import DEFAULT_STORE, give_reference_prefix

logger = logging.getLogger(__name__)

MAX_EVENT_KEY = 200


def stored_key(topic: str, event_key: str | None, body: bytes) -> str:
    """The key an event is stored under: the platform's own, or a hash that stays the same for a
    hand-made redelivery of the same body, and stands in for an id too long or too odd to store."""
    key = event_key or ""
    if key and len(key) <= MAX_EVENT_KEY and key.isprintable():
        return key
    return "sha256:" + hashlib.sha256(topic.encode() + b"\0" + (key.encode() or body)).hexdigest()


def take_in(platform_name: str, store_ref: str, event_key: str | None, topic: str, body: bytes,
            acted_on: bool, source: str = "webhook", store: Store | None = None) -> tuple[WebhookEvent, bool]:
    """Store one delivery and commit; returns the event and whether it was a duplicate (then the event is
    the one stored first). An event that cannot owe a document is stored as ignored.

    `store`: the row of (platform, store_ref) when the caller has found it already.
    Raises SQLAlchemyError when the database is away (nothing is stored).
    """
    key = stored_key(topic, event_key, body)
    status = EventStatus.RECEIVED if acted_on else EventStatus.IGNORED
    store = store or find_or_create_store(platform_name, store_ref or DEFAULT_STORE)
    event = WebhookEvent(store_id=store.id, platform=platform_name, event_key=key, topic=topic, body=body,
                         status=status, source=source)
    db.session.add(event)
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        existing = db.session.scalar(sa.select(WebhookEvent).where(
            WebhookEvent.platform == platform_name, WebhookEvent.store_id == store.id,
            WebhookEvent.event_key == key))
        logger.info("%s duplicate platform=%s store=%s topic=%s", source, platform_name, store_ref, topic)
        return existing, True
    logger.info("%s stored event=%s platform=%s store=%s topic=%s status=%s",
                source, event.id, platform_name, store_ref or DEFAULT_STORE, topic, status)
    return event, False


def find_or_create_store(platform: str, domain: str) -> Store:
    """The store row for (platform, domain), created on its first delivery."""
    query = sa.select(Store).where(Store.platform == platform, Store.domain == domain)
    store = db.session.scalar(query)
    if store is not None:
        return store
    try:
        with db.session.begin_nested():
            store = Store(platform=platform, domain=domain, settings={})
            db.session.add(store)
            db.session.flush()
            # A further shop signing with the environment's secret shares its IX account with the first.
            give_reference_prefix(store)
    except IntegrityError:
        # Two first deliveries of a store at once: the other one created it.
        store = db.session.scalar(query)
    return store
