"""From a stored event to a document row, and the issuing state machine that gets it into InvoiceXpress
exactly once (create → finalize → e-mail, a recovery point after each call)."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from flask import Flask, current_app
from redis.exceptions import RedisError

from config.settings import parse_store_settings
from connector.extensions import db, get_queue, redis_from_url
from connector.invoicexpress import schemas
from connector.invoicexpress.client import Client, InvoiceXpressError, PermanentError, RetryableError
from connector.invoicexpress.ratelimit import RateLimiter, RateLimitTimeout, account_key
from connector.invoicexpress.schemas import CREDIT_NOTE
from connector.models import (
    Document,
    DocumentEvent,
    DocumentState,
    EventStatus,
    Store,
    WebhookEvent,
    as_utc,
    utcnow,
)
from connector.orders import Order, Refund
from connector.plans import (
    LISBON,
    Plan,
    Settings,
    credit_note_key,
    email_body,
    plan_credit_note,
    plan_sale,
    proprietary_uid,
    sale_key,
)
from connector.platforms import PLATFORMS

logger = logging.getLogger(__name__)

# After this many attempts a document stops retrying on its own and waits for a person.
MAX_ATTEMPTS = 30
MAX_BACKOFF_SECONDS = 3600
TAXES_CACHE_KEY = "connector:ix-taxes"
TAXES_CACHE_SECONDS = 3600
# IX refuses to finalize a document dated before the last finalized one of its series.
CHRONOLOGY_REFUSAL = re.compile(r"earlier|anterior", re.IGNORECASE)


# --- Reading events ----------------------------------------------------------------------------


def settings_for(store: Store | None) -> Settings:
    """The environment's issuing settings with the store's own over them."""
    values = dict(current_app.config["ISSUING"])
    if store is not None and store.settings:
        own, problems = parse_store_settings(store.settings)
        if problems:  # `flask stores set` refuses bad values; this guards values edited by hand
            logger.warning("store %s has unreadable settings, using the defaults for them", store.id)
        values.update(own)
    return Settings(**values)


def load_order(event: WebhookEvent, settings: Settings) -> Order:
    """The neutral order carried by a stored event (raises the platform's load error if malformed)."""
    return read_order(event, settings)[1]


def read_order(event: WebhookEvent, settings: Settings) -> tuple[dict, Order]:
    """The stored event's order payload, and the neutral order loaded from it."""
    payload = json.loads(event.body)
    order = PLATFORMS[event.platform].to_order(payload, store=event.store.domain,
                                               tax_id_keys=settings.tax_id_keys, money=settings.invoice_currency)
    return payload, order


def plan_for(event: WebhookEvent, today=None) -> tuple[Order, Plan]:
    settings = settings_for(event.store)
    order = load_order(event, settings)
    return order, plan_sale(order, settings, today)


def load_refund(event: WebhookEvent, settings: Settings, sale: tuple[dict, Order] | None = None,
                refund_id: str | None = None) -> Refund:
    """The refund a stored event carries — the event itself, or entry `refund_id` of an order's refunds —
    read against the sale's order (payload and loaded order) when we have it: its prices say whether
    the refund's amounts include VAT, and its lines name what a bare refund line was."""
    platform = PLATFORMS[event.platform]
    payload = json.loads(event.body)
    if event.topic != platform.REFUND_TOPIC:
        payload = next(entry for entry in payload.get("refunds") or [] if str(entry.get("id")) == refund_id)
    sale_payload, sale_order = sale if sale is not None else (None, None)
    return platform.to_refund(payload, store=event.store.domain, money=settings.invoice_currency,
                              taxes_included=sale_order.taxes_included if sale_order else None, order=sale_payload)


def refunded_order_id(event: WebhookEvent) -> str | None:
    """The order a refund event (or a cancelled order carrying refunds) belongs to."""
    payload = json.loads(event.body)
    if not isinstance(payload, dict):
        return None
    return payload.get("order_id" if event.topic == PLATFORMS[event.platform].REFUND_TOPIC else "id")


def refunds_in_order(event: WebhookEvent, order: Order, settings: Settings) -> list[Refund]:
    """The money-giving refunds an order payload lists (a cancellation carries the refund it made)."""
    platform = PLATFORMS[event.platform]
    payload = json.loads(event.body)
    refunds = []
    for entry in payload.get("refunds") or []:
        refund = platform.to_refund(entry, store=event.store.domain, money=settings.invoice_currency,
                                    taxes_included=order.taxes_included, order=payload)
        if refund.amount > 0:
            refunds.append(refund)
    return refunds


def process_event(event: WebhookEvent, enqueue: Callable[[Document], None],
                  client_factory: Callable[[], Client] | None = None) -> Document | None:
    """Turn a stored event into the document row it owes (once), or record why there is none."""
    if event.status != EventStatus.RECEIVED:
        return None
    platform = PLATFORMS[event.platform]
    settings = settings_for(event.store)
    try:
        if event.topic == platform.REFUND_TOPIC:
            work = _refund_with_its_sale(event, settings)
        else:
            order = load_order(event, settings)
            work = (order, refunds_in_order(event, order, settings)) if event.topic == platform.CANCEL_TOPIC \
                else (order, plan_sale(order, settings))
    except Exception as error:  # noqa: BLE001 - reading and planning do no I/O: retrying cannot help
        # The platform's load error explains itself; anything else is named, so nothing waits forever.
        note = str(error) if isinstance(error, ValueError) \
            else f"The order could not be read ({type(error).__name__})."
        event.status, event.note, event.processed_at = EventStatus.FAILED, note[:2000], utcnow()
        db.session.commit()
        logger.warning("event %s unreadable: %s", event.id, type(error).__name__)
        return None
    if event.topic == platform.REFUND_TOPIC:
        return _process_refund(event, work, enqueue)
    if event.topic == platform.CANCEL_TOPIC:
        order, refunds = work
        _process_cancellation(event, order, client_factory)
        for refund in refunds:  # the same refund seen in refunds/create too still makes one credit note
            _add_credit_note(event, refund, enqueue)
        db.session.commit()
        return None
    order, plan = work
    event.status, event.processed_at = EventStatus.PROCESSED, utcnow()
    if plan.verdict == "none":
        event.note = " ".join(plan.reasons)
        db.session.commit()
        logger.info("event %s owes no document: %s", event.id, plan.reasons[0])
        return None

    document = db.session.scalar(
        sa.select(Document).where(Document.store_id == event.store_id, Document.source_key == plan.source_key)
    )
    if document is not None:
        event.note = f"Document {document.id} already covers this order."
        db.session.commit()
        return document
    document = Document(
        store_id=event.store_id, source_key=plan.source_key, event_id=event.id, doc_type=plan.doc_type,
        order_ref=order.name[:255], total=str(plan.expected_total), currency=plan.currency,
        proprietary_uid=proprietary_uid(event.platform, event.store.domain, plan.source_key),
    )
    try:
        with db.session.begin_nested():
            db.session.add(document)
    except sa.exc.IntegrityError:
        # A concurrent event for the same order won the race: its document is the one.
        db.session.commit()
        return None
    if plan.verdict == "hold":
        _hold(document, plan.reasons)
    else:
        record(document, "planned", " ".join([f"{plan.doc_type} for order {order.name}, total "
                                              f"{plan.expected_total} {plan.currency}.", *plan.notes]))
    db.session.commit()
    logger.info("event %s → document %s (%s)", event.id, document.id, document.state)
    if document.state == DocumentState.PENDING:
        enqueue(document)
    return document


def _find(store_id: int, source_key: str) -> Document | None:
    return db.session.scalar(sa.select(Document).where(Document.store_id == store_id,
                                                       Document.source_key == source_key))


def _add(document: Document) -> bool:
    """Insert a document row; False when a concurrent event created the same obligation first."""
    try:
        with db.session.begin_nested():
            db.session.add(document)
    except sa.exc.IntegrityError:
        return False
    return True


def _refund_with_its_sale(event: WebhookEvent, settings: Settings) -> Refund:
    order_id = refunded_order_id(event)
    sale = _find(event.store_id, sale_key(order_id)) if order_id is not None else None
    return load_refund(event, settings, read_order(sale.event, settings) if sale is not None else None)


def _process_refund(event: WebhookEvent, refund: Refund, enqueue) -> Document | None:
    """One credit note per refund, tied to the order's invoice (which it waits for if need be)."""
    event.status, event.processed_at = EventStatus.PROCESSED, utcnow()
    document = _add_credit_note(event, refund, enqueue)
    db.session.commit()
    return document


def _add_credit_note(event: WebhookEvent, refund: Refund, enqueue) -> Document | None:
    key = credit_note_key(refund.refund_id)
    if (existing := _find(event.store_id, key)) is not None:
        event.note = f"Document {existing.id} already covers refund {refund.refund_id}."
        return existing
    sale = _find(event.store_id, sale_key(refund.order_id))
    document = Document(
        store_id=event.store_id, source_key=key, event_id=event.id, doc_type=CREDIT_NOTE,
        order_ref=(sale.order_ref if sale else refund.order_name or f"order {refund.order_id}")[:255],
        total=str(refund.amount), currency=(refund.currency or (sale.currency if sale else None)),
        original_id=sale.id if sale else None,
        proprietary_uid=proprietary_uid(event.platform, event.store.domain, key),
    )
    if not _add(document):
        return None
    record(document, "planned", f"Credit note for refund {refund.refund_id} of {document.order_ref}, "
                                f"{refund.amount} given back.")
    db.session.commit()
    enqueue(document)
    return document


def _process_cancellation(event: WebhookEvent, order: Order, client_factory) -> None:
    """A cancelled order: nothing is issued if nothing was, a draft is deleted, a final invoice stays
    (its refund becomes a credit note)."""
    key = sale_key(order.order_id)
    document = _find(event.store_id, key)
    if document is None:
        # Cancelled before it was paid or before its payment reached us: an orders/paid arriving late
        # finds this row and issues nothing.
        document = Document(
            store_id=event.store_id, source_key=key, event_id=event.id, doc_type=schemas.INVOICE_RECEIPT,
            order_ref=order.name[:255], total=str(order.total), currency=order.currency,
            state=DocumentState.CANCELED,
            proprietary_uid=proprietary_uid(event.platform, event.store.domain, key),
        )
        if _add(document):
            record(document, "canceled", "The order was cancelled before it was invoiced: nothing is issued.")
        note = "The order was cancelled before it was invoiced: nothing is issued."
    elif document.state in DocumentState.ISSUED or document.state == DocumentState.CANCELED:
        note = (f"Document {document.id} is {document.state}: a cancellation changes nothing; "
                "a refund becomes a credit note.")
    else:
        claimed = take_lease(document.id) if document.state in DocumentState.OPEN else document
        if claimed is None:
            raise RuntimeError(f"document {document.id} is being issued; the cancellation is tried again")
        document = claimed
        # A draft has no fiscal value: delete it rather than finalize it (a failed or held document
        # may have one at IX too).
        status = _delete_draft(document, client_factory()) if document.ix_id else None
        if status in (None, "deleted"):
            document.state, document.locked_until = DocumentState.CANCELED, None
            # Its reason replaces the failure or hold it had, so that the lists say why it is cancelled.
            document.last_error = ("The order was cancelled before its document was final"
                                   + (": the draft was deleted." if status else "."))
            record(document, "canceled", document.last_error)
            note = f"Document {document.id} cancelled."
        else:
            # IX has it final after all (a finalize whose answer was lost): it is left as it is. An open
            # one is handed back to the worker, which resumes from what IX has; a refund becomes a
            # credit note.
            document.locked_until, document.next_attempt_at = None, utcnow()
            record(document, "warning", f"The order was cancelled, but its document is {status} at "
                                        "InvoiceXpress, no draft: it is left as it is; a refund becomes a "
                                        "credit note.")
            note = f"Document {document.id} is {status} at InvoiceXpress: a cancellation changes nothing."
    event.status, event.processed_at, event.note = EventStatus.PROCESSED, utcnow(), note
    db.session.commit()
    return None


def _delete_draft(document: Document, client: Client) -> str:
    """Delete the document's draft at IX; returns its status there afterwards ("deleted", or "final",
    "settled" or "canceled" when it was no draft)."""
    try:
        client.change_state(document.doc_type, document.ix_id, "deleted")
        return "deleted"
    except PermanentError:
        # IX refuses to delete what is no draft: one deleted by an attempt whose answer was lost, or
        # finalized meanwhile. What IX has now decides; anything else is a real refusal.
        status = client.get_document(document.doc_type, document.ix_id).get("status")
        if status not in ("deleted", "final", "settled", "canceled"):
            raise
        return status


def _hold(document: Document, reasons: list[str]) -> None:
    document.state = DocumentState.HELD
    document.last_error = " ".join(reasons)
    record(document, "held", document.last_error)


def record(document: Document, kind: str, message: str, status_code: int | None = None) -> None:
    """Append to the document's timeline (committed with the step it belongs to)."""
    db.session.add(DocumentEvent(document_id=document.id, kind=kind, message=message[:4000],
                                 status_code=status_code))


# --- Issuing ------------------------------------------------------------------------------------


def init_invoicexpress(app: Flask) -> None:
    """Register how jobs get an IX client (tests may put another factory in its place)."""
    config = app.config

    def make_client() -> Client:
        # One budget per IX account, shared through Redis by every worker; its own connection with a
        # short socket timeout, so a Redis that hangs cannot hold an IX call up.
        limiter_redis = config.get("REDIS_CONNECTION") or redis_from_url(config["REDIS_URL"], socket_timeout=2)
        limiter = RateLimiter(limiter_redis, account_key(config["INVOICEXPRESS_BASE_URL"]),
                              per_minute=int(config["INVOICEXPRESS_REQUESTS_PER_MINUTE"]))
        return Client(
            config["INVOICEXPRESS_BASE_URL"], config["INVOICEXPRESS_API_KEY"],
            connect_timeout=config["INVOICEXPRESS_CONNECT_TIMEOUT"],
            read_timeout=config["INVOICEXPRESS_READ_TIMEOUT"], limiter=limiter,
        )

    app.extensions["invoicexpress"] = make_client


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter, never sooner than IX asked (Retry-After)."""
    delay = min(MAX_BACKOFF_SECONDS, 10 * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)
    return max(delay, retry_after or 0)


def take_lease(document_id: int) -> Document | None:
    """Claim the document for this worker, or None if it is done or another worker holds it.

    A single conditional UPDATE, so two workers can never both win; a killed worker's lease expires.
    """
    now = utcnow()
    lease = timedelta(seconds=current_app.config["DOCUMENT_LEASE_SECONDS"])
    claimed = db.session.execute(
        sa.update(Document)
        .where(
            Document.id == document_id,
            Document.state.in_(DocumentState.OPEN),
            sa.or_(Document.locked_until.is_(None), Document.locked_until < now),
        )
        .values(
            locked_until=now + lease,
            attempts=Document.attempts + 1,
            # If this worker dies, the sweeper waits this long before trying again.
            next_attempt_at=now + lease,
        )
        .execution_options(synchronize_session=False)
    )
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    return db.session.get(Document, document_id)


def renew_lease(document: Document) -> None:
    document.locked_until = utcnow() + timedelta(seconds=current_app.config["DOCUMENT_LEASE_SECONDS"])


def issue(document_id: int, client: Client, schedule_retry: Callable[[Document, float], None]) -> str | None:
    """Walk one document through create → finalize → email, committing a recovery point after each call.

    Returns the state reached, or None when the document was not ours to work on.
    """
    document = take_lease(document_id)
    if document is None:
        return None
    if document.attempts > MAX_ATTEMPTS:
        _fail(document, f"Gave up after {MAX_ATTEMPTS} attempts. Last problem: {document.last_error}")
        return document.state
    record(document, "attempt", f"Attempt {document.attempts} from state {document.state}.")
    db.session.commit()
    try:
        _walk(document, client)
    except WaitingForInvoice:
        _wait_for_invoice(document, schedule_retry)
    except RetryableError as error:
        _retry_later(document, error, schedule_retry)
    except PermanentError as error:
        _fail(document, f"InvoiceXpress refused the document: {error.message}", error.status)
    except Exception as error:
        # A bug or the database away: RQ records the traceback; the sweeper retries after a backoff.
        # Only the type is kept here, since driver messages can quote order data.
        _release(document, f"Unexpected {type(error).__name__}; will retry.",
                 backoff_seconds(document.attempts))
        raise
    except BaseException:
        # Told to stop (a deploy's SIGTERM) mid-step: hand the document back for the next worker now.
        _release(document, "Interrupted by a worker shutdown; will resume.", 0)
        raise
    document.locked_until = None
    db.session.commit()
    return document.state


def _wait_for_invoice(document: Document, schedule_retry) -> None:
    db.session.rollback()
    document.attempts -= 1  # waiting is not a failed attempt
    document.locked_until = None
    if utcnow() - as_utc(document.created_at) > INVOICE_WAIT:
        _hold(document, ["The order's invoice has not been issued by the connector in a week; issue or credit "
                         "it by hand."])
        db.session.commit()
        return
    message = "Waiting for the order's invoice to be issued."
    if document.last_error != message:
        document.last_error = message
        record(document, "waiting", message)
    delay = float(current_app.config["SWEEP_INTERVAL_SECONDS"])  # look again at the sweeper's pace
    document.next_attempt_at = utcnow() + timedelta(seconds=delay)
    db.session.commit()
    schedule_retry(document, delay)


def _fail(document: Document, message: str, status_code: int | None = None) -> None:
    document.state = DocumentState.FAILED
    document.last_error = message
    document.locked_until = None
    record(document, "failed", message, status_code)
    db.session.commit()
    logger.warning("document %s failed (IX status %s)", document.id, status_code)


def _release(document: Document, message: str, delay: float) -> None:
    db.session.rollback()
    document.locked_until = None
    document.next_attempt_at = utcnow() + timedelta(seconds=delay)
    document.last_error = message
    record(document, "retry", message)
    db.session.commit()


def _walk(document: Document, client: Client) -> None:
    resuming = document.attempts > 1
    if document.state == DocumentState.PENDING:
        plan = plan_document(document)
        if plan.verdict == "issue":
            plan.reasons.extend(unknown_taxes(client, plan))
        if plan.verdict == "none" and document.doc_type == CREDIT_NOTE:
            # Its reason replaces the one it waited with, so that the lists say why it is cancelled.
            document.state, document.last_error = DocumentState.CANCELED, " ".join(plan.reasons)
            record(document, "canceled", document.last_error)
            return
        if plan.verdict != "issue" or plan.reasons:
            _hold(document, plan.reasons or ["The order no longer owes a document."])
            return
        found = _created_before(client, document, plan) if resuming else None
        if found is not None:
            created, how = found, "Found the document an earlier attempt created"
        else:
            # Sent with our proprietary_uid: should an earlier create have succeeded unseen, IX answers
            # with that document instead of making a second one.
            created, how = client.create_document(document.doc_type, plan.create_body), "Created draft"
        _step(document, DocumentState.CREATED, f"{how}: {created['id']} in InvoiceXpress.")
        document.ix_id = int(created["id"])
        db.session.commit()

    if document.state == DocumentState.CREATED:
        current = client.get_document(document.doc_type, document.ix_id) if resuming else {}
        if current.get("status") in ("final", "settled"):
            finalized = current  # finalized before a crash that lost our record of it
        else:
            finalized = _finalize(client, document)
        document.sequence_number = finalized.get("inverted_sequence_number") or finalized.get("sequence_number")
        document.atcud = finalized.get("atcud")
        document.permalink = finalized.get("permalink")
        _step(document, DocumentState.FINALIZED, f"Finalized as {document.sequence_number}.")
        if document.atcud in ("N/D", None, ""):
            record(document, "warning", "InvoiceXpress gave no ATCUD: register the series with the tax authority.")
        db.session.commit()

    if document.state == DocumentState.FINALIZED:
        email = email_for(document)
        if email:
            client.email_document(document.doc_type, document.ix_id, email)
            _step(document, DocumentState.EMAILED, "E-mailed to the customer.")
        else:
            _step(document, DocumentState.EMAILED, "Not e-mailed: the order has no e-mail address.")
        db.session.commit()

    if document.state == DocumentState.EMAILED:
        document.last_error = None
        _step(document, DocumentState.DONE, "Done.")
        db.session.commit()


class WaitingForInvoice(Exception):
    """A credit note whose invoice is not final at IX yet: it waits, nothing is wrong."""


# How long a credit note waits for its invoice before it asks for a person.
INVOICE_WAIT = timedelta(days=7)


def plan_document(document: Document, today=None) -> Plan:
    """What this document row must be at IX, planned afresh from its event (and its invoice's)."""
    if document.doc_type != CREDIT_NOTE:
        return plan_for(document.event, today)[1]
    settings = settings_for(document.store)
    sale = document.original or _find(document.store_id, sale_key(refunded_order_id(document.event)))
    if sale is not None and sale.state == DocumentState.CANCELED:
        return Plan(verdict="none", reasons=["The order's invoice was cancelled before it was issued: "
                                             "there is nothing to credit."])
    if sale is None or sale.state not in DocumentState.ISSUED:
        raise WaitingForInvoice()
    document.original_id = sale.id
    sale_payload, sale_order = read_order(sale.event, settings)
    refund = load_refund(document.event, settings, (sale_payload, sale_order),
                         refund_id=document.source_key.split(":")[1])
    credited = sum((Decimal(other.total) for other in db.session.scalars(
        sa.select(Document).where(Document.original_id == sale.id, Document.id != document.id,
                                  Document.state.not_in((DocumentState.FAILED, DocumentState.CANCELED,
                                                         DocumentState.HELD))))), Decimal(0))
    plan = plan_credit_note(refund, sale_order, settings,
                            left_to_credit=Decimal(sale.total) - credited, today=today)
    if plan.create_body is not None:
        plan.create_body["invoice"]["owner_invoice_id"] = sale.ix_id
    return plan


def email_for(document: Document) -> dict | None:
    """The e-mail that goes with the document (to the order's customer), or None."""
    # A credit note goes to the customer of the order it refunds, whatever its plan would say today.
    sale = document.original if document.doc_type == CREDIT_NOTE else document
    return email_body(load_order(sale.event, settings_for(document.store)), document.doc_type)


IX_TYPE_NAMES = {"invoice_receipts": "InvoiceReceipt", "invoices": "Invoice", "credit_notes": "CreditNote"}


def _created_before(client: Client, document: Document, plan: Plan) -> dict | None:
    """The document an earlier attempt created at IX without our hearing of it (a timeout, a 5xx after
    the fact, a worker killed mid-call), found by the order reference, its client and its total."""
    invoice = plan.create_body["invoice"]
    candidates = [
        found for found in client.find_documents(reference=invoice["reference"],
                                                 types=[IX_TYPE_NAMES[document.doc_type]])
        if found.get("reference") == invoice["reference"]
        and (found.get("client") or {}).get("code") == invoice["client"]["code"]
        and found.get("status") not in ("canceled", "deleted")
        and Decimal(str(found.get("total"))) == plan.computed_total
    ]
    if len(candidates) > 1:
        raise PermanentError(f"{len(candidates)} documents at InvoiceXpress match order {invoice['reference']}; "
                             "a person must decide which one stands")
    return candidates[0] if candidates else None


def _finalize(client: Client, document: Document) -> dict:
    try:
        try:
            finalized = client.change_state(document.doc_type, document.ix_id, "finalized")
        except PermanentError as error:
            if not CHRONOLOGY_REFUSAL.search(error.message):
                raise
            # The draft is older than a document finalized since (a retry that spanned midnight, a
            # backlog): date it today, the whole draft again since IX replaces it, and finalize.
            plan = plan_document(document, today=datetime.now(LISBON).date())
            client.update_document(document.doc_type, document.ix_id, {"invoice": plan.create_body["invoice"]})
            record(document, "redated", "Draft dated today to follow the series' last finalized document.")
            finalized = client.change_state(document.doc_type, document.ix_id, "finalized")
    except PermanentError:
        # A finalize that reached IX before a timeout or a crash left the document final, and IX
        # refuses to finalize it twice: what counts is the state the document is in now.
        finalized = client.get_document(document.doc_type, document.ix_id)
        if finalized.get("status") not in ("final", "settled"):
            raise
    if not finalized.get("sequence_number") or finalized.get("status") == "draft":
        finalized = client.get_document(document.doc_type, document.ix_id)
    return finalized


def unknown_taxes(client: Client, plan: Plan) -> list[str]:
    """Reasons to hold if the body names a tax the IX account lacks, or has at another rate.

    IX silently applies its default tax to an unknown name, so this is checked before every create,
    against the account's taxes (read once an hour)."""
    taxes = account_taxes(client)
    reasons = []
    for name in sorted({item["tax"]["name"] for item in plan.create_body["invoice"]["items"]}):
        rate = plan.tax_rates[name]
        if name not in taxes:
            reasons.append(f"Your InvoiceXpress account has no tax named {name} (for VAT at {rate} %).")
        elif taxes[name] != rate:
            reasons.append(f"Your InvoiceXpress tax {name} is at {taxes[name]} %, but the order's VAT is "
                           f"{rate} %: fix INVOICEXPRESS_TAX_NAMES or the tax in InvoiceXpress.")
    return reasons


def account_taxes(client: Client) -> dict[str, Decimal]:
    """The IX account's taxes by name → rate, cached in Redis for an hour."""
    connection = get_queue().connection
    try:
        cached = connection.get(TAXES_CACHE_KEY)
        if cached:
            return {name: Decimal(rate) for name, rate in json.loads(cached).items()}
    except RedisError:
        pass
    taxes = {str(t["name"]): Decimal(str(t["value"])) for t in client.list_taxes() if t.get("name")}
    try:
        connection.set(TAXES_CACHE_KEY, json.dumps({k: str(v) for k, v in taxes.items()}), ex=TAXES_CACHE_SECONDS)
    except RedisError:
        pass
    return taxes


def _step(document: Document, state: str, message: str) -> None:
    document.state = state
    renew_lease(document)
    record(document, "state", f"{state}: {message}")
    logger.info("document %s %s", document.id, state)


def _retry_later(document: Document, error: InvoiceXpressError, schedule_retry) -> None:
    db.session.rollback()
    document.last_error = f"InvoiceXpress did not answer properly ({error.message}); retrying."
    if document.attempts >= MAX_ATTEMPTS:
        _fail(document, f"Gave up after {document.attempts} attempts: {error.message}", error.status)
        return
    if error.status == 429 or isinstance(error, RateLimitTimeout):
        document.attempts -= 1  # waiting our turn at IX is not a failed attempt
    delay = backoff_seconds(document.attempts, getattr(error, "retry_after", None))
    document.next_attempt_at = utcnow() + timedelta(seconds=delay)
    record(document, "retry", f"{error.message}; next attempt in {delay:.0f} s.", error.status)
    logger.info("document %s retry in %.0fs after IX status %s", document.id, delay, error.status)
    document.locked_until = None
    db.session.commit()
    schedule_retry(document, delay)


# --- Sweeping -----------------------------------------------------------------------------------


def stalled_events(older_than: timedelta) -> list[WebhookEvent]:
    """Paid-order events stored but not processed (their job was lost, or Redis was away)."""
    cutoff = utcnow() - older_than
    return list(db.session.scalars(
        sa.select(WebhookEvent)
        .where(WebhookEvent.status == EventStatus.RECEIVED, WebhookEvent.received_at < cutoff)
        .order_by(WebhookEvent.id).limit(500)
    ))


def stalled_documents() -> list[Document]:
    """Open documents nobody holds whose next attempt is due."""
    now = utcnow()
    return list(db.session.scalars(
        sa.select(Document)
        .where(
            Document.state.in_(DocumentState.OPEN),
            sa.or_(Document.locked_until.is_(None), Document.locked_until < now),
            sa.or_(Document.next_attempt_at.is_(None), Document.next_attempt_at <= now),
        )
        .order_by(Document.id).limit(500)
    ))
