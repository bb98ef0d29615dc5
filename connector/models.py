"""The records: the webhook inbox, stores, one document row per legal obligation and its timeline."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlalchemy.orm as so

from connector.extensions import db


def utcnow() -> datetime:
    return datetime.now(UTC)


# Timezone-aware on PostgreSQL; SQLite keeps it as text and hands back naive values, which
# `as_utc` below puts right.
Timestamp = sa.DateTime(timezone=True)


def as_utc(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class EventStatus:
    RECEIVED = "received"  # stored, work not yet done
    PROCESSED = "processed"  # its documents (if any) exist
    IGNORED = "ignored"  # a topic we do not act on
    FAILED = "failed"  # the payload cannot be read; see `note`

    ALL = (RECEIVED, PROCESSED, IGNORED, FAILED)


class DocumentState:
    PENDING = "pending"
    CREATED = "created"
    FINALIZED = "finalized"
    EMAILED = "emailed"
    DONE = "done"
    HELD = "held"  # needs a person: we will not issue it as it stands
    FAILED = "failed"  # IX refused it for good
    CANCELED = "canceled"  # the order was cancelled before its document was final (a draft is deleted)

    ALL = (PENDING, CREATED, FINALIZED, EMAILED, DONE, HELD, FAILED, CANCELED)
    # States in which the document exists, final, at IX: what a credit note can refer to.
    ISSUED = (FINALIZED, EMAILED, DONE)
    # States a worker still has to move forward.
    OPEN = (PENDING, CREATED, FINALIZED, EMAILED)


def _check_in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Store(db.Model):
    """One shop: its platform, its name (`domain`: the Shopify domain, the WooCommerce host, or a name chosen
    for it), its own settings over the environment's, and its own secrets."""

    __tablename__ = "stores"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    platform: so.Mapped[str] = so.mapped_column(sa.String(20))
    domain: so.Mapped[str] = so.mapped_column(sa.String(255))
    # The store's own issuing settings (key → text), over the environment's; see config.settings.ISSUING.
    settings: so.Mapped[dict] = so.mapped_column(sa.JSON, default=dict)
    # Its own secrets and API keys (name → value), one Fernet token under SECRET_KEY; see connector.stores.
    secrets: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    updated_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp, onupdate=utcnow)

    __table_args__ = (sa.UniqueConstraint("platform", "domain", name="uq_stores_platform_domain"),)


class WebhookEvent(db.Model):
    """The inbox: every signed delivery, kept raw for replay; unique per platform event."""

    __tablename__ = "webhook_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    store_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stores.id"))
    platform: so.Mapped[str] = so.mapped_column(sa.String(20))
    event_key: so.Mapped[str] = so.mapped_column(sa.String(255))
    topic: so.Mapped[str] = so.mapped_column(sa.String(100))
    body: so.Mapped[bytes] = so.mapped_column(sa.LargeBinary)
    status: so.Mapped[str] = so.mapped_column(sa.String(20), default=EventStatus.RECEIVED)
    note: so.Mapped[str | None] = so.mapped_column(sa.Text)  # why it owes nothing, or cannot be read
    received_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    processed_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    # How it reached us: "webhook", or "poll" when reconciliation found what no webhook brought.
    source: so.Mapped[str] = so.mapped_column(sa.String(10), default="webhook", server_default="webhook")

    store: so.Mapped[Store] = so.relationship()

    __table_args__ = (
        sa.UniqueConstraint("platform", "store_id", "event_key", name="uq_webhook_events_event"),
        sa.CheckConstraint(_check_in("status", EventStatus.ALL), name="status"),
        sa.Index("ix_webhook_events_status", "status"),
    )


class Document(db.Model):
    """One legal obligation (an invoice receipt for an order, a credit note for a refund)."""

    __tablename__ = "documents"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    store_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stores.id"))
    source_key: so.Mapped[str] = so.mapped_column(sa.String(255))  # e.g. order:5678:receipt
    event_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("webhook_events.id"))
    doc_type: so.Mapped[str] = so.mapped_column(sa.String(40))  # IX path segment: invoice_receipts
    # For a credit note: the sale document it corrects.
    original_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("documents.id"))
    order_ref: so.Mapped[str] = so.mapped_column(sa.String(255))  # the shop's order name, e.g. #1001
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default=DocumentState.PENDING)
    proprietary_uid: so.Mapped[str] = so.mapped_column(sa.String(255), unique=True)
    total: so.Mapped[str | None] = so.mapped_column(sa.String(32))  # expected total, exact decimal text
    currency: so.Mapped[str | None] = so.mapped_column(sa.String(3))
    ix_id: so.Mapped[int | None] = so.mapped_column(sa.BigInteger)
    sequence_number: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    atcud: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    permalink: so.Mapped[str | None] = so.mapped_column(sa.Text)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    locked_until: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    next_attempt_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    job_id: so.Mapped[str | None] = so.mapped_column(sa.String(100))  # the RQ job it waits on
    # What the platform's API said of the document's source (e.g. a WooCommerce refund's lines), fetched
    # once and kept, so that every later attempt plans from the same data (JSON text).
    snapshot: so.Mapped[str | None] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    store: so.Mapped[Store] = so.relationship()
    event: so.Mapped[WebhookEvent] = so.relationship()
    original: so.Mapped[Document | None] = so.relationship(remote_side=[id])

    __table_args__ = (
        sa.UniqueConstraint("store_id", "source_key", name="uq_documents_store_source"),
        sa.CheckConstraint(_check_in("state", DocumentState.ALL), name="state"),
        sa.Index("ix_documents_state", "state"),
    )


class DocumentEvent(db.Model):
    """The append-only timeline of a document: attempts, IX calls, answers, decisions."""

    __tablename__ = "document_events"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    document_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("documents.id"), index=True)
    at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))  # attempt, ix_call, state, held, failed, retry
    message: so.Mapped[str] = so.mapped_column(sa.Text)
    status_code: so.Mapped[int | None] = so.mapped_column()


class Watermark(db.Model):
    """How far reconciliation has read a store's platform: changes up to `reached` are in the inbox."""

    __tablename__ = "watermarks"

    store_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("stores.id"), primary_key=True)
    reached: so.Mapped[datetime] = so.mapped_column(Timestamp)
    last_run_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    last_found: so.Mapped[int] = so.mapped_column(default=0)  # events the last pass added to the inbox
    # Orders among them that no webhook had brought: above 0, the shop's webhook is probably disabled.
    last_missed: so.Mapped[int] = so.mapped_column(default=0, server_default="0")
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)

    store: so.Mapped[Store] = so.relationship()


class Alert(db.Model):
    """One problem told to the operator (or one store's daily digest), sent once, by e-mail and/or webhook.

    Unique on (kind, key, occurrence): a problem has one row until it is resolved, and a second worker or a
    restart that sees it again finds that row instead of making another; a recurrence after it was resolved is
    the next occurrence. Sending is claimed with a lease (`sending_until`), so two workers never both send and a
    worker killed while sending leaves it to the next one.
    """

    __tablename__ = "alerts"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    kind: so.Mapped[str] = so.mapped_column(sa.String(40))  # held, failed, open, ix_key, missed, queue, digest
    key: so.Mapped[str] = so.mapped_column(sa.String(255))  # what it is about: document:12, store:3, queue:…
    occurrence: so.Mapped[int] = so.mapped_column(default=1)
    store_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("stores.id"))
    document_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("documents.id"))
    subject: so.Mapped[str] = so.mapped_column(sa.String(255))
    text: so.Mapped[str] = so.mapped_column(sa.Text)
    opened_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    resolved_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)  # its problem is gone
    sending_until: so.Mapped[datetime | None] = so.mapped_column(Timestamp)  # a worker is sending it
    emailed_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    posted_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)  # to ALERT_WEBHOOK_URL
    sent_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)  # by every channel configured
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)  # why the last sending failed

    store: so.Mapped[Store | None] = so.relationship()
    document: so.Mapped[Document | None] = so.relationship()

    __table_args__ = (
        sa.UniqueConstraint("kind", "key", "occurrence", name="uq_alerts_kind_key_occurrence"),
        sa.Index("ix_alerts_unsent", "sent_at", "resolved_at"),
    )

    @property
    def state(self) -> str:
        """Where it stands, for the operator's pages: resolved, sent (still a problem), failing, waiting."""
        if self.resolved_at is not None:
            return "resolved"
        if self.sent_at is not None:
            return "sent"
        return "failing" if self.last_error else "waiting"
