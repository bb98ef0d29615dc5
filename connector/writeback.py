"""Write-back: a final document's number and PDF link put on its shop order, as a step of its own after issuing."""

# One `write_backs` row per document, made in the commit that makes the document done, so the document never
# waits on (or fails because of) the shop. Its recovery points: pending → pdf (IX's PDF address kept) → done,
# and for WooCommerce `step` "note" once the order note is posted. Every platform write is safe to repeat:
# Shopify's tags and note attributes are merged by content, WooCommerce's meta is set by key and its note is
# looked for before it is posted, Stripe's metadata goes with an Idempotency-Key.

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app

from connector import issuing
from connector.extensions import db
from connector.invoicexpress import documents
from connector.invoicexpress.client import PermanentError, RetryableError
from connector.models import Document, DocumentState, Store, Timestamp, _check_in, utcnow
from connector.platforms import title
from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.stores import UnreadableSecrets, resolve

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 20
LEASE_SECONDS = 90
SHOPIFY_TAG_CHARS = 40  # Shopify's longest tag


class WriteBackState:
    PENDING = "pending"  # waiting for IX's PDF
    PDF = "pdf"  # the PDF's address is kept; the shop is next
    DONE = "done"
    FAILED = "failed"  # the shop or IX refused for good, or too many attempts: see last_error
    SKIPPED = "skipped"  # nothing to write to (no platform API credentials, no order to write on)

    ALL = (PENDING, PDF, DONE, FAILED, SKIPPED)
    OPEN = (PENDING, PDF)


class WriteBack(db.Model):
    """Putting one document's number and PDF link on its shop order: where it stands, attempts, last problem."""

    __tablename__ = "write_backs"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    document_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("documents.id"), unique=True)
    state: so.Mapped[str] = so.mapped_column(sa.String(20), default=WriteBackState.PENDING)
    step: so.Mapped[str | None] = so.mapped_column(sa.String(20))  # within the shop's writes: "note" posted
    pdf_url: so.Mapped[str | None] = so.mapped_column(sa.Text)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    next_attempt_at: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    locked_until: so.Mapped[datetime | None] = so.mapped_column(Timestamp)
    last_error: so.Mapped[str | None] = so.mapped_column(sa.Text)
    job_id: so.Mapped[str | None] = so.mapped_column(sa.String(100))
    created_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow)
    updated_at: so.Mapped[datetime] = so.mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    document: so.Mapped[Document] = so.relationship()

    __table_args__ = (
        sa.CheckConstraint(_check_in("state", WriteBackState.ALL), name="state"),
        sa.Index("ix_write_backs_state", "state"),
    )


class NotReady(Exception):
    """IX has not made the PDF yet (202): ask again later."""


def start(document: Document) -> None:
    """Make the document's write-back row (once), in the caller's commit: the one that makes it done."""
    exists = db.session.scalar(sa.select(WriteBack.id).where(WriteBack.document_id == document.id))
    if exists is None:
        db.session.add(WriteBack(document_id=document.id, next_attempt_at=utcnow()))


def for_document(document_id: int) -> WriteBack | None:
    return db.session.scalar(sa.select(WriteBack).where(WriteBack.document_id == document_id))


def stalled() -> list[WriteBack]:
    """Open write-backs nobody holds whose next attempt is due (a lost job, a killed worker)."""
    now = utcnow()
    return list(db.session.scalars(
        sa.select(WriteBack)
        .where(
            WriteBack.state.in_(WriteBackState.OPEN),
            sa.or_(WriteBack.locked_until.is_(None), WriteBack.locked_until < now),
            sa.or_(WriteBack.next_attempt_at.is_(None), WriteBack.next_attempt_at <= now),
        )
        .order_by(WriteBack.id).limit(500)
    ))


def _take_lease(write_back_id: int) -> WriteBack | None:
    """Claim the row with one conditional UPDATE, so two workers never both write; a killed worker's lease ends."""
    now = utcnow()
    lease = timedelta(seconds=LEASE_SECONDS)
    claimed = db.session.execute(
        sa.update(WriteBack)
        .where(
            WriteBack.id == write_back_id,
            WriteBack.state.in_(WriteBackState.OPEN),
            sa.or_(WriteBack.locked_until.is_(None), WriteBack.locked_until < now),
        )
        .values(locked_until=now + lease, attempts=WriteBack.attempts + 1, next_attempt_at=now + lease)
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    return db.session.get(WriteBack, write_back_id)


def run(write_back_id: int, ix_factory: Callable,
        schedule_retry: Callable[[WriteBack, float], None]) -> str | None:
    """Take one write-back as far as it goes now; returns the state reached, or None when it was not ours."""
    row = _take_lease(write_back_id)
    if row is None:
        return None
    document = row.document
    # Only the write-back row and the document's timeline are written here: the document stays as it is.
    if document.state != DocumentState.DONE:
        return _finish(row, WriteBackState.SKIPPED, f"Not written back: the document is {document.state}.")
    if row.attempts > MAX_ATTEMPTS:
        return _finish(row, WriteBackState.FAILED,
                       f"Not written back after {MAX_ATTEMPTS} attempts. Last problem: {row.last_error}")
    platform = document.store.platform
    try:
        target = _target(document)
        api = shop_api(document.store)
        if api is None:
            return _finish(row, WriteBackState.SKIPPED,
                           f"Not written back: the store has no {title(platform)} API credentials "
                           f"({_credentials_hint(platform)}).")
        if target is None:
            return _finish(row, WriteBackState.SKIPPED,
                           f"Not written back: {title(platform)} has no order this document can be written on.")
        if row.state == WriteBackState.PENDING:
            url = ix_factory(document.store).get_pdf(document.ix_id)
            if url is None:
                raise NotReady()
            row.pdf_url, row.state = url, WriteBackState.PDF
            db.session.commit()
        WRITERS[platform](api, row, document, target)
        return _finish(row, WriteBackState.DONE,
                       f"Number and PDF link written back to the {title(platform)} order.")
    except NotReady:
        return _retry(row, schedule_retry, "InvoiceXpress is still making the PDF")
    except (RetryableError, PlatformUnavailable) as error:
        return _retry(row, schedule_retry, str(error))
    except PermanentError as error:
        return _finish(row, WriteBackState.FAILED, f"Not written back: InvoiceXpress refused the PDF: {error}")
    except PlatformRefused as error:
        return _finish(row, WriteBackState.FAILED, f"Not written back: {title(platform)} refused: {error}")
    except (UnreadableSecrets, issuing.NoInvoiceXpressAccount, ValueError) as error:
        return _finish(row, WriteBackState.FAILED, f"Not written back: {error}")
    except Exception as error:
        # A bug or the database away: RQ keeps the traceback and the sweeper tries again after a backoff.
        _release(row, f"Unexpected {type(error).__name__}; will retry.")
        raise


def shop_api(store: Store):
    """The store's platform API client to write with, or None when the store has no credentials for it.

    The environment's credentials reach one shop: a store of another name is not written to with them."""
    from connector.reconcile import poller

    config = resolve(store)
    module = poller(store.platform)
    if module is None:
        return issuing.platform_api(store)
    configured = module.configured_store(current_app.config)
    if not config.own_api and configured not in (None, store.domain):
        return None
    # Shopify's platform client is None (its snapshots need no API), so the poll module's is the one to use.
    return issuing.platform_api(store) or module.api(config.api, store.domain)


def _credentials_hint(platform: str) -> str:
    return {
        "shopify": "SHOPIFY_ACCESS_TOKEN",
        "woocommerce": "WOOCOMMERCE_URL, WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET",
        "stripe": "STRIPE_API_KEY",
    }.get(platform, "its platform API settings")


def _target(document: Document) -> dict | None:
    """Where the document goes: its order's id, and for a credit note its refund's id; None when there is none."""
    credit = document.doc_type == documents.CREDIT_NOTE.path
    sale = document.original if credit else document
    if sale is None:
        return None
    order_id = sale.source_key.split(":")[1]
    refund_id = document.source_key.split(":")[1] if credit else None
    if document.store.platform == "stripe" and not credit and not order_id.startswith("pi_"):
        return None  # a session without a payment intent: nothing of Stripe's takes metadata for it
    return {"order_id": order_id, "refund_id": refund_id, "credit": credit}


def _label(target: dict) -> str:
    return "Credit note" if target["credit"] else "Invoice"


# --- the platforms' writes ---------------------------------------------------------------------------------


def _shopify(api, row: WriteBack, document: Document, target: dict) -> None:
    """Note attribute "<Invoice|Credit note> <number>" = PDF link, and a tag with the number; the order's own
    attributes and tags are kept, and nothing is sent when both are already there."""
    order = api.get_order(target["order_id"])
    name = f"{_label(target)} {document.sequence_number}"
    attributes = [a for a in order.get("note_attributes") or [] if isinstance(a, dict)]
    wanted = {"name": name, "value": row.pdf_url}
    tags = [t.strip() for t in str(order.get("tags") or "").split(",") if t.strip()]
    tag = f"IX {document.sequence_number}"[:SHOPIFY_TAG_CHARS].replace(",", " ")
    changes: dict = {}
    if wanted not in attributes:
        changes["note_attributes"] = [a for a in attributes if a.get("name") != name] + [wanted]
    if tag not in tags:
        changes["tags"] = ", ".join([*tags, tag])
    if changes:
        api.update_order(target["order_id"], changes)


def _woocommerce(api, row: WriteBack, document: Document, target: dict) -> None:
    """A private order note with the number and PDF link (posted once), then the order's meta by key."""
    note = f"InvoiceXpress {_label(target).lower()} {document.sequence_number}: {row.pdf_url}"
    if row.step != "note":
        # A note is not idempotent: one posted by an attempt whose answer was lost is found, not posted again.
        if not any(note in str(n.get("note") or "") for n in api.order_notes(target["order_id"])):
            api.add_order_note(target["order_id"], note)
        row.step = "note"
        db.session.commit()
    prefix = f"invoicexpress_credit_note_{target['refund_id']}" if target["credit"] else "invoicexpress_invoice"
    api.update_order_meta(target["order_id"], {f"{prefix}_number": document.sequence_number,
                                               f"{prefix}_pdf": row.pdf_url})


def _stripe(api, row: WriteBack, document: Document, target: dict) -> None:
    """Metadata `invoicexpress_number` and `invoicexpress_pdf` on the payment intent (a sale) or the refund (a
    credit note); a link longer than Stripe keeps gives way to IX's permalink."""
    from connector.platforms.stripe.api import METADATA_VALUE_CHARS

    link = row.pdf_url or ""
    if len(link) > METADATA_VALUE_CHARS:
        link = document.permalink if document.permalink and len(document.permalink) <= METADATA_VALUE_CHARS else ""
    metadata = {"invoicexpress_number": document.sequence_number or ""}
    if link:
        metadata["invoicexpress_pdf"] = link
    key = f"invoicexpress-writeback-{document.proprietary_uid}"
    if target["credit"]:
        api.set_refund_metadata(target["refund_id"], metadata, key)
    else:
        api.set_payment_intent_metadata(target["order_id"], metadata, key)


WRITERS = {"shopify": _shopify, "woocommerce": _woocommerce, "stripe": _stripe}


# --- where the row ends up ---------------------------------------------------------------------------------


def _finish(row: WriteBack, state: str, message: str) -> str:
    db.session.rollback()
    row.state, row.locked_until, row.next_attempt_at = state, None, None
    row.last_error = None if state == WriteBackState.DONE else message
    if state != WriteBackState.SKIPPED:
        # A skip is the row's to tell (the store's settings say why); the order's story gets what happened to it.
        issuing.record(row.document, "write_back", message)
    db.session.commit()
    logger.info("document %s write-back %s", row.document_id, state)
    return state


def _retry(row: WriteBack, schedule_retry, problem: str) -> str:
    db.session.rollback()
    if row.attempts >= MAX_ATTEMPTS:
        return _finish(row, WriteBackState.FAILED, f"Not written back after {row.attempts} attempts: {problem}")
    delay = issuing.backoff_seconds(row.attempts)
    row.last_error = f"{problem}; retrying."
    row.locked_until, row.next_attempt_at = None, utcnow() + timedelta(seconds=delay)
    db.session.commit()
    logger.info("document %s write-back retry in %.0fs", row.document_id, delay)
    schedule_retry(row, delay)
    return row.state


def _release(row: WriteBack, message: str) -> None:
    db.session.rollback()
    row.locked_until = None
    row.next_attempt_at = utcnow() + timedelta(seconds=issuing.backoff_seconds(row.attempts))
    row.last_error = message
    db.session.commit()
