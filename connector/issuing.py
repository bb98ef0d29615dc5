"""The issuing state machine: a document row into InvoiceXpress exactly once (lease, create → finalize →
e-mail, a recovery point after each call, retries with backoff)."""

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

from connector.extensions import db, get_queue, redis_from_url
from connector.invoicexpress import documents
from connector.invoicexpress.client import Client, PermanentError, RetryableError
from connector.invoicexpress.ratelimit import RateLimiter, RateLimitTimeout, account_key
from connector.models import (
    Document,
    DocumentEvent,
    DocumentState,
    Store,
    as_utc,
    utcnow,
)
from connector.orders import Order, Refund
from connector.plans import LISBON, Plan, Settings, email_body, plan_credit, plan_sale, sale_key
from connector.platforms import PLATFORMS, title
from connector.platforms.common import Change, LoadError, PlatformRefused, PlatformUnavailable
from connector.stores import environment_account, resolve, settings_for

logger = logging.getLogger(__name__)

# After this many attempts a document stops retrying on its own and waits for a person.
MAX_ATTEMPTS = 30
MAX_BACKOFF_SECONDS = 3600
TAXES_CACHE_KEY = "connector:ix-taxes"
TAXES_CACHE_SECONDS = 3600
# IX refuses to finalize a document dated before the last finalized one of its series.
CHRONOLOGY_REFUSAL = re.compile(r"earlier|anterior", re.IGNORECASE)


# --- Reading documents' sources ----------------------------------------------------------------------------


def order_of(platform_name: str, payload: dict, store: str, settings: Settings) -> Order:
    """The neutral order of a platform's order payload, read with the store's settings (raises `LoadError`)."""
    return PLATFORMS[platform_name].to_order(payload, store=store, tax_id_keys=settings.tax_id_keys,
                                             money=settings.invoice_currency, settings=settings)


def sale_order(document: Document, settings: Settings) -> tuple[dict, Order]:
    """A sale document's order payload, and the neutral order loaded from it: its event's, or what was read
    from the platform for it (`source_of`: a Stripe session's lines), read once and kept on the row."""
    event = document.event
    if document.snapshot is not None:
        payload = json.loads(document.snapshot)
    else:
        payload = json.loads(event.body)
        change = next((change for change in PLATFORMS[event.platform].changes(payload, event.topic, settings)
                       if change.kind == "sale" and sale_key(change.order_id) == document.source_key), None)
        if change is not None and change.fetched:
            payload = source_of(document, change)
    return payload, order_of(event.platform, payload, document.store.domain, settings)


def find_document(store_id: int, source_key: str) -> Document | None:
    """The store's document row for one obligation (e.g. `order:5678:receipt`), if there is one."""
    return db.session.scalar(sa.select(Document).where(Document.store_id == store_id,
                                                       Document.source_key == source_key))


def refund_change(document: Document, settings: Settings) -> Change:
    """The refund change of the credit note's event, as its platform reads the event again."""
    event = document.event
    refund_id = document.source_key.split(":")[1]
    found = [change for change in PLATFORMS[event.platform].changes(json.loads(event.body), event.topic, settings)
             if change.kind == "refund" and change.refund_id == refund_id]
    if not found:
        raise LoadError({"refund": [f"the event no longer names refund {refund_id}"]}, what="refund")
    return found[0]


def source_of(document: Document, change: Change) -> dict:
    """What the platform says of the document's change that its event lacks (a refund's lines, a Stripe
    session's lines): asked once (`snapshot`, which may call the platform's API), stored on the row, and
    read from there on every later attempt, so a re-plan after a crash uses the same data."""
    if document.snapshot is not None:
        return json.loads(document.snapshot)
    event = document.event
    platform = PLATFORMS[event.platform]
    source = platform.snapshot(change, json.loads(event.body), platform_api(document.store))
    document.snapshot = json.dumps(source, ensure_ascii=False)
    what = f"Refund {change.refund_id}" if change.kind == "refund" else "The order"
    record(document, "snapshot", f"{what} read from {title(event.platform)}.")
    # Committed now: a later step's rollback (an IX retry) must not make the platform be asked again.
    db.session.commit()
    return source


def platform_api(store: Store):
    """The store's platform API client (its own credentials, or the environment's where they are its), or None."""
    config = resolve(store)
    return PLATFORMS[store.platform].api_client(config.api, config.name)


def delete_draft(document: Document, client: Client) -> str:
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


def hold(document: Document, reasons: list[str]) -> None:
    """Hold the document for a person, saying why (committed with the step it belongs to)."""
    document.state = DocumentState.HELD
    document.last_error = " ".join(reasons)
    record(document, "held", document.last_error)


def record(document: Document, kind: str, message: str, status_code: int | None = None) -> None:
    """Append to the document's timeline (committed with the step it belongs to)."""
    db.session.add(DocumentEvent(document_id=document.id, kind=kind, message=message[:4000],
                                 status_code=status_code))


# --- Issuing ------------------------------------------------------------------------------------


def init_invoicexpress(app: Flask) -> None:
    """Register how jobs get a store's IX client (tests may put another factory in its place)."""
    config = app.config

    def make_client(store: Store | None = None) -> Client:
        account = resolve(store).invoicexpress if store is not None else environment_account(config)
        if account is None:
            raise NoInvoiceXpressAccount(store)
        # One budget per IX account, shared through Redis by every worker; its own connection with a
        # short socket timeout, so a Redis that hangs cannot hold an IX call up.
        limiter_redis = config.get("REDIS_CONNECTION") or redis_from_url(config["REDIS_URL"], socket_timeout=2)
        limiter = RateLimiter(limiter_redis, account.key, per_minute=account.requests_per_minute)
        return Client(
            account.base_url, account.api_key, connect_timeout=config["INVOICEXPRESS_CONNECT_TIMEOUT"],
            read_timeout=config["INVOICEXPRESS_READ_TIMEOUT"], limiter=limiter,
        )

    app.extensions["invoicexpress"] = make_client


class NoInvoiceXpressAccount(Exception):
    """The store has no IX account of its own, and the environment names none."""

    def __init__(self, store: Store | None) -> None:
        name = store.domain if store is not None else "default"
        super().__init__(f"No InvoiceXpress account is set for store {name}: give it one with `flask --app wsgi "
                         f"stores set {name} invoicexpress_account=… invoicexpress_api_key=…`, or set "
                         "INVOICEXPRESS_ACCOUNT and INVOICEXPRESS_API_KEY.")


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with jitter from RETRY_BASE_SECONDS, never sooner than IX asked (Retry-After)."""
    base = float(current_app.config.get("RETRY_BASE_SECONDS", 10))
    delay = min(MAX_BACKOFF_SECONDS, base * 2 ** max(0, attempts - 1)) * random.uniform(0.8, 1.2)
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
        _retry_later(document, schedule_retry, f"InvoiceXpress did not answer properly ({error.message})",
                     error.message, error.status, getattr(error, "retry_after", None),
                     waiting_our_turn=error.status == 429 or isinstance(error, RateLimitTimeout))
    except PermanentError as error:
        _fail(document, f"InvoiceXpress refused the document: {error.message}", error.status)
    except PlatformUnavailable as error:
        _retry_later(document, schedule_retry, f"{title(document.store.platform)} did not answer properly "
                                               f"({error})")
    except PlatformRefused as error:
        _fail(document, f"{title(document.store.platform)} refused to give what the document needs: {error}")
    except LoadError as error:
        _fail(document, str(error))
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


def hold_open(document_id: int, reason: str) -> str | None:
    """Hold an open document that cannot be worked on as things stand (its store reaches no IX account)."""
    document = take_lease(document_id)
    if document is None:
        return None
    document.attempts -= 1  # nothing was tried
    document.locked_until = None
    hold(document, [reason])
    db.session.commit()
    return document.state


def _wait_for_invoice(document: Document, schedule_retry) -> None:
    db.session.rollback()
    document.attempts -= 1  # waiting is not a failed attempt
    document.locked_until = None
    if utcnow() - as_utc(document.created_at) > INVOICE_WAIT:
        hold(document, ["The order's invoice has not been issued by the connector in a week; issue or credit "
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
        if plan.verdict == "none" and (document.doc_type == documents.CREDIT_NOTE.path
                                       or document.snapshot is not None):
            # A credit note, or a sale first read now from the platform (a Stripe session), that owes nothing.
            # Its reason replaces the one it waited with, so that the lists say why it is cancelled.
            document.state, document.last_error = DocumentState.CANCELED, " ".join(plan.reasons)
            record(document, "canceled", document.last_error)
            return
        if plan.verdict != "issue" or plan.reasons:
            hold(document, plan.reasons or ["The order no longer owes a document."])
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
    settings = settings_for(document.store)
    if document.doc_type != documents.CREDIT_NOTE.path:
        order = sale_order(document, settings)[1]
        plan = plan_sale(order, settings, today)
        if document.state == DocumentState.PENDING and plan.expected_total is not None:
            # A sale read from its platform only now (a Stripe session) is shown as what it is from here on.
            document.order_ref, document.currency = order.name[:255], order.currency
            document.total = str(plan.expected_total)
        return plan
    change = refund_change(document, settings)
    sale = document.original or find_document(document.store_id, sale_key(change.order_id))
    if sale is not None and sale.state == DocumentState.CANCELED:
        return Plan(verdict="none", reasons=["The order's invoice was cancelled before it was issued: "
                                             "there is nothing to credit."])
    source = source_of(document, change)
    if sale is None or sale.state not in DocumentState.ISSUED:
        raise WaitingForInvoice()
    document.original_id, document.order_ref = sale.id, sale.order_ref
    sale_payload, sold = sale_order(sale, settings)
    refund = read_refund(document, source, settings, sale_payload, sold)
    credited = sum((Decimal(other.total) for other in db.session.scalars(
        sa.select(Document).where(Document.original_id == sale.id, Document.id != document.id,
                                  Document.total.is_not(None),
                                  Document.state.not_in((DocumentState.FAILED, DocumentState.CANCELED,
                                                         DocumentState.HELD))))), Decimal(0))
    plan = plan_credit(refund, sold, settings, already_credited=credited, today=today)
    if plan.create_body is not None:
        plan.create_body["invoice"]["owner_invoice_id"] = sale.ix_id
    return plan


def read_refund(document: Document, source: dict, settings: Settings, sale_payload: dict,
                sold: Order) -> Refund:
    """The neutral refund of the credit note's stored source, read against its sale's order (whose prices
    say whether the refund's amounts include VAT); the row's amount and currency follow it."""
    platform = PLATFORMS[document.event.platform]
    refund = platform.to_refund(source, store=document.store.domain, money=settings.invoice_currency,
                                taxes_included=sold.taxes_included, order=sale_payload)
    document.total = str(refund.amount)
    document.currency = refund.currency or sold.currency
    return refund


def email_for(document: Document) -> dict | None:
    """The e-mail that goes with the document (to the order's customer), or None."""
    # A credit note goes to the customer of the order it refunds, whatever its plan would say today.
    sale = document.original if document.doc_type == documents.CREDIT_NOTE.path else document
    return email_body(sale_order(sale, settings_for(document.store))[1], document.doc_type)


def _created_before(client: Client, document: Document, plan: Plan) -> dict | None:
    """The document an earlier attempt created at IX without our hearing of it (a timeout, a 5xx after
    the fact, a worker killed mid-call), found by the order reference, its client and its total."""
    invoice = plan.create_body["invoice"]
    candidates = [
        found for found in client.find_documents(reference=invoice["reference"],
                                                 types=[documents.BY_PATH[document.doc_type].ix_type])
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
    """The IX account's taxes by name → rate, cached in Redis for an hour (each account its own)."""
    connection = get_queue().connection
    cache_key = f"{TAXES_CACHE_KEY}:{account_key(client.base_url)}"
    try:
        cached = connection.get(cache_key)
        if cached:
            return {name: Decimal(rate) for name, rate in json.loads(cached).items()}
    except RedisError:
        pass
    taxes = {str(t["name"]): Decimal(str(t["value"])) for t in client.list_taxes() if t.get("name")}
    try:
        connection.set(cache_key, json.dumps({k: str(v) for k, v in taxes.items()}), ex=TAXES_CACHE_SECONDS)
    except RedisError:
        pass
    return taxes


def _step(document: Document, state: str, message: str) -> None:
    document.state = state
    renew_lease(document)
    record(document, "state", f"{state}: {message}")
    logger.info("document %s %s", document.id, state)


def _retry_later(document: Document, schedule_retry, problem: str, detail: str | None = None,
                 status: int | None = None, retry_after: float | None = None,
                 waiting_our_turn: bool = False) -> None:
    """Try again after a backoff: IX, or the platform's API, did not answer properly this time."""
    db.session.rollback()
    detail = detail or problem
    document.last_error = f"{problem}; retrying."
    if document.attempts >= MAX_ATTEMPTS:
        _fail(document, f"Gave up after {document.attempts} attempts: {detail}", status)
        return
    if waiting_our_turn:
        document.attempts -= 1  # waiting our turn at IX is not a failed attempt
    delay = backoff_seconds(document.attempts, retry_after)
    document.next_attempt_at = utcnow() + timedelta(seconds=delay)
    record(document, "retry", f"{detail}; next attempt in {delay:.0f} s.", status)
    logger.info("document %s retry in %.0fs (status %s)", document.id, delay, status)
    document.locked_until = None
    db.session.commit()
    schedule_retry(document, delay)


# --- Sweeping -----------------------------------------------------------------------------------


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
