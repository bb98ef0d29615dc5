"""What an order owes, and the issuing state machine that gets it into InvoiceXpress exactly once."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import Flask, current_app
from stdnum.pt import nif

from connector.extensions import db
from connector.invoicexpress import schemas
from connector.invoicexpress.client import Client, InvoiceXpressError, PermanentError, RetryableError
from connector.invoicexpress.countries import IX_COUNTRY_NAMES
from connector.invoicexpress.totals import document_total
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, WebhookEvent, utcnow
from connector.orders import Line, Order
from connector.platforms import PLATFORMS

logger = logging.getLogger(__name__)

LISBON = ZoneInfo("Europe/Lisbon")
UNIT_PRICE_PLACES = Decimal("0.0001")  # IX keeps 4 decimals of a unit price
DISCOUNT_PLACES = Decimal("0.0001")
CONSUMER = "Consumidor final"
# After this many attempts a document stops retrying on its own and waits for a person.
MAX_ATTEMPTS = 30
MAX_BACKOFF_SECONDS = 3600


# --- What an order owes -------------------------------------------------------------------------


@dataclass(frozen=True)
class TaxSettings:
    """The IX account's tax names by VAT rate (percent), from INVOICEXPRESS_TAX_NAMES."""

    names: dict[Decimal, str]

    @property
    def rates(self) -> dict[str, Decimal]:
        return {name: rate for rate, name in self.names.items()}


@dataclass
class Plan:
    """The document an order owes, or why it owes none (`none`) or cannot be issued as is (`hold`)."""

    verdict: str  # issue | hold | none
    reasons: list[str] = field(default_factory=list)
    doc_type: str = schemas.INVOICE_RECEIPT
    source_key: str = ""
    currency: str = "EUR"
    expected_total: Decimal | None = None
    computed_total: Decimal | None = None
    create_body: dict | None = None
    email_body: dict | None = None

    def requests(self) -> list[dict]:
        """The IX calls issuing this document makes, in order (ids shown as {id})."""
        if self.verdict != "issue":
            return []
        path = f"/{self.doc_type}"
        calls = [
            {"method": "POST", "path": f"{path}.json", "body": self.create_body},
            {"method": "PUT", "path": f"{path}/{{id}}/change-state.json",
             "body": schemas.change_state_request("finalized")},
        ]
        if self.email_body:
            calls.append({"method": "PUT", "path": f"{path}/{{id}}/email-document.json", "body": self.email_body})
        return calls


def proprietary_uid(platform: str, store: str, source_key: str) -> str:
    """Our idempotency key at IX: stable for one obligation of one store, whoever computes it."""
    return f"{platform}:{store}:{source_key}"


def plan_receipt(order: Order, taxes: TaxSettings, today: date | None = None) -> Plan:
    """Decide what a paid-order event owes: one invoice receipt, nothing, or a hold with reasons."""
    plan = Plan(verdict="issue", source_key=f"order:{order.order_id}:receipt", currency=order.currency,
                expected_total=order.total)
    if order.test:
        return _none(plan, "This is a test order; test orders are not invoiced.")
    if order.financial_status != "paid":
        return _none(plan, f"The order is not paid (its payment status is '{order.financial_status}').")

    items = []
    for line in order.lines:
        item = _item(line, order.taxes_included, taxes, plan.reasons)
        if item is not None:
            items.append(item)
    if not items and not plan.reasons:
        plan.reasons.append("The order has no lines to invoice.")
    if order.currency != "EUR":
        plan.reasons.append(
            f"The order was paid in {order.currency}; invoices in other currencies than EUR are not issued yet."
        )
    if plan.reasons:
        plan.verdict = "hold"
        return plan

    issue_date = today or datetime.now(LISBON).date()
    document = schemas.Document(
        date=issue_date, due_date=issue_date, reference=order.name, client=_client(order), items=tuple(items)
    )
    plan.create_body = schemas.create_request(document, proprietary_uid(order.platform, order.store,
                                                                        plan.source_key))
    plan.computed_total = document_total(plan.create_body["invoice"]["items"], taxes.rates)
    if plan.computed_total != order.total:
        plan.verdict = "hold"
        plan.reasons.append(
            f"The invoice would total {plan.computed_total} {order.currency} but the customer paid "
            f"{order.total} {order.currency}; it is held so that no invoice shows a wrong amount."
        )
    plan.email_body = email_body(order)
    return plan


def email_body(order: Order) -> dict | None:
    """The e-mail IX sends the customer with the document, or None when the order has no address."""
    if not order.customer.email:
        return None
    return schemas.email_request(
        order.customer.email,
        subject=f"Fatura-recibo da encomenda {order.name}",
        body=f"Obrigado pela sua compra. Segue em anexo a fatura-recibo da encomenda {order.name}.",
    )


def _none(plan: Plan, reason: str) -> Plan:
    plan.verdict = "none"
    plan.reasons.append(reason)
    return plan


def _item(line: Line, taxes_included: bool, taxes: TaxSettings, reasons: list[str]) -> schemas.Item | None:
    label = f"'{line.description}'"
    if line.tax_problem:
        reasons.append(f"Line {label}: {line.tax_problem}")
        return None
    if line.kind == "tip":
        reasons.append(f"Line {label} is a tip; tips are not invoiced automatically yet.")
        return None
    gross = line.unit_price * line.quantity
    if gross == 0:
        return None  # free items and free shipping print nothing useful and IX would show 0.00 lines
    if line.discount < 0 or line.discount > gross:
        reasons.append(f"Line {label} has a discount of {line.discount}, outside 0 to {gross}.")
        return None
    tax_name = taxes.names.get(line.tax_rate)
    if line.tax_rate == 0:
        reasons.append(f"Line {label} has no VAT; VAT-exempt sales need an exemption reason, "
                       "which the connector does not set yet.")
        return None
    if tax_name is None:
        reasons.append(f"Line {label} has VAT at {line.tax_rate} %, and no InvoiceXpress tax name is set "
                       "for that rate (INVOICEXPRESS_TAX_NAMES).")
        return None
    unit_price = line.unit_price
    if taxes_included:
        unit_price = unit_price / (1 + line.tax_rate / 100)
    discount = (line.discount / gross * 100).quantize(DISCOUNT_PLACES, ROUND_HALF_UP)
    return schemas.Item(
        name=line.key[:100],
        description=line.description or line.key,
        unit_price=unit_price.quantize(UNIT_PRICE_PLACES, ROUND_HALF_UP),
        quantity=line.quantity,
        tax_name=tax_name,
        discount=discount,
        unit="service" if line.kind == "shipping" else "unit",
    )


def _client(order: Order) -> schemas.Client:
    customer = order.customer
    address = customer.address
    country = IX_COUNTRY_NAMES.get(address.country_code.upper())
    postal_code = address.postal_code.strip()
    if country == "Portugal":
        digits = re.sub(r"\D", "", postal_code)
        # IX refuses a Portuguese postal code not written DDDD-DDD.
        postal_code = f"{digits[:4]}-{digits[4:]}" if len(digits) == 7 else ""
    tax_id = (customer.tax_id or "").replace(" ", "").upper().removeprefix("PT")
    fiscal_id = tax_id if tax_id and nif.is_valid(tax_id) else None
    name = customer.name.strip() or (customer.company or "").strip() or CONSUMER
    if fiscal_id and customer.company:
        name = customer.company.strip()  # a buyer who gave a company NIF is the company
    return schemas.Client(
        name=name[:150],
        code=customer.key[:50] if (fiscal_id or name != CONSUMER) else CONSUMER,
        email=customer.email,
        address=" ".join(part for part in (address.line1, address.line2) if part) or None,
        city=address.city or None,
        postal_code=postal_code or None,
        country=country,
        fiscal_id=fiscal_id,
    )


# --- Reading events ----------------------------------------------------------------------------


def load_order(event: WebhookEvent) -> Order:
    """The neutral order carried by a stored event (raises the platform's load error if malformed)."""
    platform = PLATFORMS[event.platform]
    payload = json.loads(event.body)
    return platform.to_order(payload, store=event.store.domain, tax_id_keys=current_app.config["TAX_ID_KEYS"])


def tax_settings() -> TaxSettings:
    return TaxSettings(names=current_app.config["INVOICEXPRESS_TAX_NAMES"])


def process_event(event: WebhookEvent, enqueue: Callable[[Document], None]) -> Document | None:
    """Turn a stored paid-order event into its document row (once), or record why there is none."""
    if event.status != EventStatus.RECEIVED:
        return None
    try:
        order = load_order(event)
    except ValueError as error:  # the platform's load error: the shop sent something we cannot read
        event.status, event.note, event.processed_at = EventStatus.FAILED, str(error)[:2000], utcnow()
        db.session.commit()
        logger.warning("event %s unreadable: %s", event.id, type(error).__name__)
        return None
    plan = plan_receipt(order, tax_settings())
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
        order_ref=order.name, total=str(plan.expected_total), currency=plan.currency,
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
        record(document, "planned", f"Invoice receipt for order {order.name}, total {plan.expected_total}.")
    db.session.commit()
    logger.info("event %s → document %s (%s)", event.id, document.id, document.state)
    if document.state == DocumentState.PENDING:
        enqueue(document)
    return document


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
        return Client(
            config["INVOICEXPRESS_BASE_URL"], config["INVOICEXPRESS_API_KEY"],
            connect_timeout=config["INVOICEXPRESS_CONNECT_TIMEOUT"],
            read_timeout=config["INVOICEXPRESS_READ_TIMEOUT"],
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
        plan = plan_receipt(load_order(document.event), tax_settings())
        if plan.verdict != "issue":
            _hold(document, plan.reasons or ["The order no longer owes a document."])
            return
        created = client.create_document(document.doc_type, plan.create_body)
        _step(document, DocumentState.CREATED, f"Created draft {created['id']} in InvoiceXpress.")
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
        email = email_body(load_order(document.event))
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


def _finalize(client: Client, document: Document) -> dict:
    try:
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
