"""What an event owes: each change it means (a sale, a refund, a cancellation) as a document row, once."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import timedelta

import sqlalchemy as sa

from connector.extensions import db
from connector.inbox import take_in
from connector.invoicexpress import documents
from connector.invoicexpress.client import Client
from connector.issuing import (
    delete_draft,
    find_document,
    hold,
    order_of,
    platform_api,
    record,
    settings_for,
    take_lease,
)
from connector.models import Document, DocumentState, EventStatus, Store, WebhookEvent, utcnow
from connector.orders import Order
from connector.plans import Plan, Settings, credit_note_key, plan_sale, proprietary_uid, sale_key
from connector.platforms import PLATFORMS, title
from connector.platforms.common import Change, LoadError, PlatformRefused, PlatformUnavailable

logger = logging.getLogger(__name__)


def process_event(event: WebhookEvent, enqueue: Callable[[Document], None],
                  client_factory: Callable[[Store], Client] | None = None) -> Document | None:
    """Turn a stored event into the document rows its changes owe (each once), or record why there is none.

    Returns the first document the event owes (new or found), if any.
    """
    if event.status != EventStatus.RECEIVED:
        return None
    settings = settings_for(event.store)
    try:
        work = read_changes(event, settings)
    except Exception as error:  # noqa: BLE001 - reading and planning do no I/O: retrying cannot help
        # The platform's load error explains itself; anything else is named, so nothing waits forever.
        note = str(error) if isinstance(error, ValueError) \
            else f"The order could not be read ({type(error).__name__})."
        event.status, event.note, event.processed_at = EventStatus.FAILED, note[:2000], utcnow()
        db.session.commit()
        logger.warning("event %s unreadable: %s", event.id, type(error).__name__)
        return None
    notes: list[str] = []
    owed: list[Document] = []
    try:
        for change, order, plan in work:
            if change.kind == "sale":
                document, note = (_add_sale(event, order, plan, enqueue) if plan is not None
                                  else _add_fetched_sale(event, change, settings, enqueue))
            elif change.kind == "refund":
                document, note = _add_credit_note(event, change, enqueue)
            elif change.kind == "cancellation":
                document, note = None, _cancel(event, change, order, client_factory)
            elif change.kind == "lookup":
                document, note = None, _look_up(event, change, enqueue, client_factory)
            else:
                document, note = None, change.reason
                logger.info("event %s owes no document: %s", event.id, change.reason)
            if document is not None:
                owed.append(document)
            if note:
                notes.append(note)
    except PlatformUnavailable as error:
        # The platform's API is away: the event stays to be processed, and the sweeper brings it back.
        db.session.rollback()
        event.note = f"{title(event.platform)} did not answer properly ({error}); tried again shortly."[:2000]
        db.session.commit()
        logger.info("event %s waits for %s: %s", event.id, event.platform, type(error).__name__)
        return None
    except PlatformRefused as error:
        db.session.rollback()
        event.status, event.processed_at = EventStatus.FAILED, utcnow()
        event.note = f"{title(event.platform)} refused to say what the event means: {error}"[:2000]
        db.session.commit()
        logger.warning("event %s: %s refused a lookup", event.id, event.platform)
        return None
    event.status, event.processed_at = EventStatus.PROCESSED, utcnow()
    event.note = " ".join(notes)[:2000] or None
    db.session.commit()
    return owed[0] if owed else None


def read_changes(event: WebhookEvent, settings: Settings) -> list[tuple[Change, Order | None, Plan | None]]:
    """The event's changes, each with the order it is about (sales and cancellations) and a sale's plan.

    A refund, and a sale whose order the event does not carry whole (`fetched`), are read later, when their
    document is issued: their source data may need the platform's API.
    """
    platform = PLATFORMS[event.platform]
    payload = json.loads(event.body)
    work = []
    for change in platform.changes(payload, event.topic, settings):
        order = plan = None
        if change.kind == "cancellation" or (change.kind == "sale" and not change.fetched):
            try:
                order = order_of(event.platform, payload, event.store.domain, settings)
            except LoadError:
                # A cancellation needs only the order's id: WooCommerce's order.deleted carries nothing else.
                if change.kind == "sale":
                    raise
        if change.kind == "sale" and not change.fetched:
            plan = plan_sale(order, settings)
        work.append((change, order, plan))
    return work


def _add(document: Document) -> bool:
    """Insert a document row; False when a concurrent event created the same obligation first."""
    try:
        with db.session.begin_nested():
            db.session.add(document)
    except sa.exc.IntegrityError:
        return False
    return True


def _add_sale(event: WebhookEvent, order: Order, plan: Plan, enqueue) -> tuple[Document | None, str | None]:
    """The sale's document row (an invoice-receipt or an invoice), held if a person must look first."""
    if plan.verdict == "none":
        logger.info("event %s owes no document: %s", event.id, plan.reasons[0])
        return None, " ".join(plan.reasons)
    if (existing := find_document(event.store_id, plan.source_key)) is not None:
        return existing, f"Document {existing.id} already covers this order."
    document = Document(
        store_id=event.store_id, source_key=plan.source_key, event_id=event.id, doc_type=plan.doc_type,
        order_ref=order.name[:255], total=str(plan.expected_total), currency=plan.currency,
        proprietary_uid=proprietary_uid(event.platform, event.store.domain, plan.source_key),
    )
    if not _add(document):
        # A concurrent event for the same order won the race: its document is the one.
        return None, None
    if plan.verdict == "hold":
        hold(document, plan.reasons)
    else:
        record(document, "planned", " ".join([f"{plan.doc_type} for order {order.name}, total "
                                              f"{plan.expected_total} {plan.currency}.", *plan.notes]))
    db.session.commit()
    logger.info("event %s → document %s (%s)", event.id, document.id, document.state)
    if document.state == DocumentState.PENDING:
        enqueue(document)
    return document, None


def _add_fetched_sale(event: WebhookEvent, change: Change, settings: Settings,
                      enqueue) -> tuple[Document | None, str | None]:
    """The row of a sale whose order is read from the platform when it is issued (a Stripe session's lines):
    planned then, held then if a person must look."""
    key = sale_key(change.order_id)
    if (existing := find_document(event.store_id, key)) is not None:
        return existing, f"Document {existing.id} already covers this order."
    document = Document(
        store_id=event.store_id, source_key=key, event_id=event.id,
        doc_type=documents.FOR_SALES[settings.document_type].path,
        order_ref=(change.order_name or f"order {change.order_id}")[:255],
        proprietary_uid=proprietary_uid(event.platform, event.store.domain, key),
    )
    if not _add(document):
        return None, None
    kind = documents.BY_PATH[document.doc_type].label.capitalize()
    record(document, "planned", f"{kind} for {document.order_ref}: the order is read from {title(event.platform)} "
                                "when it is issued.")
    db.session.commit()
    logger.info("event %s → document %s (read when issued)", event.id, document.id)
    enqueue(document)
    return document, None


def _look_up(event: WebhookEvent, change: Change, enqueue, client_factory) -> str:
    """What only the platform's API lists (a Stripe charge's refunds), each taken into the inbox as an event of
    its own and processed now. Returns what was found, for the event's note."""
    platform = PLATFORMS[event.platform]
    found = platform.look_up(change, json.loads(event.body), platform_api(event.store))
    new = []
    for polled in found:
        taken, duplicate = take_in(event.platform, event.store.domain, polled.event_key, polled.topic, polled.body,
                                   True, source="poll")
        if not duplicate:
            new.append(polled.event_key)
            process_event(taken, enqueue, client_factory)
    if not found:
        return f"{change.reason.capitalize() or 'Nothing'} read from {title(event.platform)}: none found."
    listed = ", ".join(polled.event_key for polled in found)
    return (f"{change.reason.capitalize()} read from {title(event.platform)} ({listed}): each is its own event"
            + (f", {len(new)} new." if new else ", all seen before."))


def _add_credit_note(event: WebhookEvent, change: Change, enqueue) -> tuple[Document | None, str | None]:
    """One credit note per refund, tied to the order's invoice (which it waits for if need be).

    Its amount is known once the worker has read the refund (`issuing.plan_document`)."""
    key = credit_note_key(change.refund_id)
    if (existing := find_document(event.store_id, key)) is not None:
        return existing, f"Document {existing.id} already covers refund {change.refund_id}."
    sale = find_document(event.store_id, sale_key(change.order_id))
    document = Document(
        store_id=event.store_id, source_key=key, event_id=event.id, doc_type=documents.CREDIT_NOTE.path,
        order_ref=(sale.order_ref if sale else f"order {change.order_id}")[:255],
        currency=sale.currency if sale else None, original_id=sale.id if sale else None,
        proprietary_uid=proprietary_uid(event.platform, event.store.domain, key),
    )
    if not _add(document):
        return None, None
    record(document, "planned", f"Credit note for refund {change.refund_id} of {document.order_ref}.")
    db.session.commit()
    enqueue(document)
    return document, None


def _cancel(event: WebhookEvent, change: Change, order: Order | None, client_factory) -> str:
    """A cancelled (or deleted) order: nothing is issued if nothing was, a draft is deleted, a final invoice
    stays (its refund becomes a credit note). `order` is None when the event names only the order's id.
    Returns what happened, for the event's note."""
    key = sale_key(change.order_id)
    document = find_document(event.store_id, key)
    if document is None:
        # Cancelled before it was paid or before its payment reached us: a paid event arriving late
        # finds this row and issues nothing.
        document = Document(
            store_id=event.store_id, source_key=key, event_id=event.id, doc_type=documents.INVOICE_RECEIPT.path,
            order_ref=(order.name if order else f"order {change.order_id}")[:255],
            total=str(order.total) if order else None, currency=order.currency if order else None,
            state=DocumentState.CANCELED,
            proprietary_uid=proprietary_uid(event.platform, event.store.domain, key),
        )
        if _add(document):
            record(document, "canceled", "The order was cancelled before it was invoiced: nothing is issued.")
        return "The order was cancelled before it was invoiced: nothing is issued."
    if document.state in DocumentState.ISSUED or document.state == DocumentState.CANCELED:
        return (f"Document {document.id} is {document.state}: a cancellation changes nothing; "
                "a refund becomes a credit note.")
    claimed = take_lease(document.id) if document.state in DocumentState.OPEN else document
    if claimed is None:
        raise RuntimeError(f"document {document.id} is being issued; the cancellation is tried again")
    document = claimed
    # A draft has no fiscal value: delete it rather than finalize it (a failed or held document
    # may have one at IX too).
    status = delete_draft(document, client_factory(event.store)) if document.ix_id else None
    if status in (None, "deleted"):
        document.state, document.locked_until = DocumentState.CANCELED, None
        # Its reason replaces the failure or hold it had, so that the lists say why it is cancelled.
        document.last_error = ("The order was cancelled before its document was final"
                               + (": the draft was deleted." if status else "."))
        record(document, "canceled", document.last_error)
        db.session.commit()
        return f"Document {document.id} cancelled."
    # IX has it final after all (a finalize whose answer was lost): it is left as it is. An open
    # one is handed back to the worker, which resumes from what IX has; a refund becomes a
    # credit note.
    document.locked_until, document.next_attempt_at = None, utcnow()
    record(document, "warning", f"The order was cancelled, but its document is {status} at "
                                "InvoiceXpress, no draft: it is left as it is; a refund becomes a "
                                "credit note.")
    db.session.commit()
    return f"Document {document.id} is {status} at InvoiceXpress: a cancellation changes nothing."


def stalled_events(older_than: timedelta) -> list[WebhookEvent]:
    """Events stored but not processed (their job was lost, or Redis was away)."""
    cutoff = utcnow() - older_than
    return list(db.session.scalars(
        sa.select(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.RECEIVED, WebhookEvent.received_at < cutoff)
        .order_by(WebhookEvent.id).limit(500)
    ))
