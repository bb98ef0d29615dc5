"""The admin routes: lists with filters, counts and pages, a document and its order's whole story, stores'
reconciliation, and what a person does to what is stuck (retry, release, close, re-send, replay)."""

from __future__ import annotations

import json
import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import abort, redirect, render_template, request, url_for
from redis.exceptions import RedisError

from connector import jobs
from connector.admin import bp, plain
from connector.extensions import db, get_queue
from connector.invoicexpress import documents as ix_documents
from connector.issuing import find_document, record, settings_for
from connector.models import (
    Document,
    DocumentEvent,
    DocumentState,
    EventStatus,
    Store,
    Watermark,
    WebhookEvent,
    as_utc,
)
from connector.plans import LISBON, sale_key
from connector.platforms import PLATFORMS

logger = logging.getLogger(__name__)

PER_PAGE = 50
# States a person can send back to the worker; the others are either moving or finished.
RETRYABLE = (DocumentState.HELD, DocumentState.FAILED)
NEEDS_A_PERSON = RETRYABLE
# How an event reached the inbox (`WebhookEvent.source`), in the words these pages use. An event found by
# reconciliation is one no webhook brought: usually the shop's webhook was disabled or failed.
ARRIVALS = {"webhook": "webhook", "poll": "found by reconciliation"}
# `?state=open`: the states a worker still has to move forward, one link for an operator.
OPEN = "open"
STATE_FILTERS = (*DocumentState.ALL, OPEN)
# A store id beyond this cannot exist, and would overflow the database's integer before it could say so.
MAX_ID = 2**31 - 1


@dataclass
class Page:
    number: int
    pages: int
    total: int
    items: list[Any]

    @property
    def has_previous(self) -> bool:
        return self.number > 1

    @property
    def has_next(self) -> bool:
        return self.number < self.pages


def paginate(query: sa.Select, total: int, scalars: bool = True) -> Page:
    """The requested page (`?page=N`, 50 rows) of `query`; out-of-range numbers land on the nearest page."""
    pages = max(1, math.ceil(total / PER_PAGE))
    number = min(max(1, request.args.get("page", 1, type=int)), pages)
    query = query.limit(PER_PAGE).offset((number - 1) * PER_PAGE)
    rows = db.session.scalars(query) if scalars else db.session.execute(query)
    return Page(number, pages, total, list(rows))


def choice(name: str, allowed: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in allowed:
        abort(plain(400, f"Unknown {name} {value!r}: one of {', '.join(allowed)}."))
    return value


@dataclass
class StoreFilter:
    """What `?store=<store id>` asked for: nothing (`value` None), a store, or one that does not exist."""

    value: str | None
    store: Store | None

    @property
    def unknown(self) -> bool:
        return self.value is not None and self.store is None

    @property
    def args(self) -> dict[str, int]:
        """The filter as URL arguments, for links that must keep it."""
        return {"store": self.store.id} if self.store else {}


def store_filter() -> StoreFilter:
    """The store the list is filtered to, by id: a name may repeat across platforms, an id never does."""
    value = request.args.get("store") or None
    if value is None:
        return StoreFilter(None, None)
    number = int(value) if value.isascii() and value.isdigit() else 0
    return StoreFilter(value, db.session.get(Store, number) if 0 < number <= MAX_ID else None)


def state_condition(state: str | None) -> list:
    if state is None:
        return []
    return [Document.state.in_(DocumentState.OPEN)] if state == OPEN else [Document.state == state]


def when(value: datetime | None) -> str:
    """A timestamp in the shop's time (Lisbon), with its zone name."""
    if value is None:
        return "—"
    return as_utc(value).astimezone(LISBON).strftime("%Y-%m-%d %H:%M:%S %Z")


def web_link(url: str | None) -> bool:
    """Whether a stored URL may become a link (no javascript: or data: from anywhere)."""
    return bool(url) and urlsplit(url).scheme in ("http", "https")


def back_to(default: str) -> str:
    """Where a form asked to go back to, if it is an admin page; else `default`."""
    target = request.form.get("next", "")
    if target.startswith(bp.url_prefix + "/") and "\\" not in target:
        return target
    return default


@bp.context_processor
def helpers() -> dict[str, Any]:
    return {"when": when, "web_link": web_link, "needs_a_person": NEEDS_A_PERSON, "retryable": RETRYABLE,
            "arrival": arrival, "state_name": state_name}


def state_name(state: str | None) -> str | None:
    """A documents filter as the pages say it."""
    return "in progress" if state == OPEN else state


def arrival(source: str | None) -> str:
    """How an event arrived, as the pages say it."""
    return ARRIVALS.get(source or "webhook", source or "webhook")


@dataclass
class DocumentFilters:
    """What the documents list was asked for: a state, a store, a platform, creation dates and a search."""

    state: str | None
    chosen: StoreFilter
    platform: str | None
    created_from: date | None
    created_to: date | None
    search: str

    @property
    def by_email(self) -> bool:
        """A term with '@' is an e-mail address (or part of one), searched in the orders' bodies."""
        return "@" in self.search

    def args(self, *without: str) -> dict[str, Any]:
        """The filters as URL arguments, for links that must keep them (but those named in `without`)."""
        values = {"state": self.state, **self.chosen.args, "platform": self.platform,
                  "created_from": self.created_from.isoformat() if self.created_from else None,
                  "created_to": self.created_to.isoformat() if self.created_to else None, "q": self.search}
        return {name: value for name, value in values.items() if value and name not in without}

    def conditions(self) -> list:
        """Every filter but the state's, which the counts per state leave out."""
        found = []
        if self.chosen.store:
            found.append(Document.store_id == self.chosen.store.id)
        if self.platform:
            found.append(Document.store_id.in_(sa.select(Store.id).where(Store.platform == self.platform)))
        if self.created_from:
            found.append(Document.created_at >= start_of(self.created_from))
        if self.created_to:
            found.append(Document.created_at < start_of(self.created_to + timedelta(days=1)))
        if self.search:
            found.append(email_condition(self.search) if self.by_email else number_condition(self.search))
        return found


def day(name: str) -> date | None:
    value = (request.args.get(name) or "").strip()
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        abort(plain(400, f"{name} must be a date as YYYY-MM-DD."))


def start_of(moment: date) -> datetime:
    """Midnight of a day in the shop's time (Lisbon), in UTC: the lists' dates are the shop's days."""
    return datetime.combine(moment, time(0), LISBON).astimezone(UTC)


def like(term: str) -> str:
    """`term` as a LIKE pattern matching it anywhere, its wildcards taken literally (escaped with a backslash)."""
    return "%" + term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def body_text():
    """The raw event body as text that LIKE can search, ASCII letters lower-cased, on either database."""
    if db.session.get_bind().dialect.name == "postgresql":
        # bytea as text: `escape` keeps ASCII as it is (bytes above it become octal escapes) and never fails
        # on a body that is not UTF-8, where convert_from would fail the whole query.
        return sa.func.lower(sa.func.encode(WebhookEvent.body, "escape"))
    return sa.func.lower(sa.cast(WebhookEvent.body, sa.Text))


def events_naming(term: str) -> sa.Select:
    return sa.select(WebhookEvent.id).where(body_text().like(like(term.lower()), escape="\\"))


def email_condition(term: str):
    """Documents of the orders whose events carry the e-mail address: their sale documents, found by the event
    that brought them, and their credit notes, found by the sale they correct."""
    matching = events_naming(term)
    sale = so.aliased(Document)
    sales = sa.select(sale.id).where(sale.event_id.in_(matching))
    return sa.or_(Document.event_id.in_(matching), Document.original_id.in_(sales))


def number_condition(term: str):
    """Documents whose order name or IX number holds the term, or whose order has it as its platform id."""
    pattern = like(term)
    return sa.or_(Document.order_ref.ilike(pattern, escape="\\"),
                  Document.sequence_number.ilike(pattern, escape="\\"),
                  Document.source_key == sale_key(term),
                  Document.original_id.in_(sa.select(Document.id).where(Document.source_key == sale_key(term))))


SEARCH_MAX = 200  # longer is no order name, number or address; and LIKE on every body must stay cheap


def document_filters() -> DocumentFilters:
    search = (request.args.get("q") or "").strip()
    if len(search) > SEARCH_MAX:
        abort(plain(400, f"The search is longer than {SEARCH_MAX} characters."))
    return DocumentFilters(state=choice("state", STATE_FILTERS), chosen=store_filter(),
                           platform=choice("platform", tuple(PLATFORMS)), created_from=day("created_from"),
                           created_to=day("created_to"), search=search)


@bp.get("/")
def documents():
    filters = document_filters()
    state, chosen = filters.state, filters.chosen
    context = {"filters": filters, "stores": db.session.scalars(sa.select(Store).order_by(Store.id)).all(),
               "platforms": tuple(PLATFORMS)}
    if chosen.unknown:
        return _no_such_store("admin/documents.html", chosen, state=state, states=DocumentState.ALL, **context)
    conditions = filters.conditions()
    counts = dict(db.session.execute(
        sa.select(Document.state, sa.func.count()).where(*conditions).group_by(Document.state)).all())
    query = (sa.select(Document).options(so.joinedload(Document.store))
             .where(*conditions, *state_condition(state)).order_by(Document.id.desc()))
    if state == OPEN:
        total = sum(counts.get(name, 0) for name in DocumentState.OPEN)
    else:
        total = counts.get(state, 0) if state else sum(counts.values())
    return render_template("admin/documents.html", page=paginate(query, total), state=state, counts=counts,
                           states=DocumentState.ALL, all_count=sum(counts.values()), chosen=chosen, **context)


def _no_such_store(template: str, chosen: StoreFilter, **context):
    """The list, empty, saying the store asked for does not exist (a stale bookmark, a mistyped id)."""
    empty = Page(1, 1, 0, [])
    return render_template(template, page=empty, counts={}, all_count=0, found_count=0, chosen=chosen,
                           **context), 404


@bp.get("/documents/<int:document_id>")
def document(document_id: int):
    document = db.session.get(Document, document_id) or abort(404)
    # The raw body holds the customer's personal data: never loaded for these pages.
    event = db.session.get(WebhookEvent, document.event_id, options=[so.defer(WebhookEvent.body, raiseload=True)])
    timeline = db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id)
    ).all()
    return render_template("admin/document.html", document=document, event=event, timeline=timeline,
                           order_id=order_id_of(document))


@bp.post("/documents/<int:document_id>/retry")
def retry(document_id: int):
    document = db.session.get(Document, document_id) or abort(404)
    previous, reason = document.state, document.last_error
    if previous not in RETRYABLE:
        return refuse(document, f"Document {document.id} is {previous}: only held or failed documents can be "
                                "retried.")
    # IX already has the draft (or the document) once it has an id: resume from there, reading IX first.
    target = DocumentState.PENDING if document.ix_id is None else DocumentState.CREATED
    # Conditional, so that a double click (or two operators) sends it back once.
    claimed = db.session.execute(
        sa.update(Document)
        .where(Document.id == document.id, Document.state.in_(RETRYABLE))
        .values(state=target, attempts=0, next_attempt_at=None, last_error=None, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        db.session.rollback()
        return refuse(document, f"Document {document.id} is no longer held or failed.")
    record(document, "retry", f"Retry requested by operator (was {previous}: {reason or 'no reason given'}).")
    db.session.commit()
    logger.info("document %s retry requested by operator: %s -> %s", document.id, previous, target)
    jobs.enqueue_document(document)
    return answer(document, "retried")


# What a page says after an action, by the key its redirect carries (`?notice=`): fixed words, so that no
# text from a URL is ever shown as ours.
NOTICES = {
    "retried": "Retry requested: the worker has the document again. Reload to follow it.",
    "released": "Hold released: the document is planned again with today's settings and queued. Reload to "
                "follow it.",
    "emailing": "Re-sending the e-mail: its outcome will be in the timeline. Reload to see it.",
    "replayed": "Event replayed: the worker reads it again. An order already covered by a document is never "
                "issued twice.",
    "by_hand": "Closed as issued by hand: the connector will not issue it.",
    "owes_nothing": "Closed as owing nothing: the connector will not issue it.",
}
# Done documents are final at IX: the only ones whose e-mail can be sent again.
EMAILABLE = (DocumentState.DONE,)


def answer(document: Document | None, notice: str, default: str | None = None):
    """Redirect (303) to where the form asked to go back to, with the notice the page shows."""
    target = back_to(default or url_for(".document", document_id=document.id))
    parts = urlsplit(target)
    kept = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "notice"]
    query = urlencode([*kept, ("notice", notice)])
    return redirect(urlunsplit(("", "", parts.path, query, "")), 303)


def refuse(document: Document | None, message: str, status: int = 409, event: WebhookEvent | None = None):
    """A refusal as a page: what was wrong, nothing changed, and the way back."""
    db.session.rollback()
    return render_template("admin/refused.html", message=message, document=document, event=event), status


@bp.context_processor
def notice() -> dict[str, Any]:
    return {"notice": NOTICES.get(request.args.get("notice", "")), "emailable": EMAILABLE,
            "replayable": REPLAYABLE}


def order_id_of(document: Document) -> str | None:
    """The platform's id of the order a document belongs to (a credit note's, through the sale it corrects)."""
    sale = document.original if document.original_id is not None else document
    key = sale.source_key
    if key.startswith("order:") and key.endswith(":receipt"):
        return key[len("order:"):-len(":receipt")]
    return None


def claim(document: Document, states: tuple[str, ...], **values) -> bool:
    """Move the document on only if it is still in one of `states`: a double click (or two operators) acts once."""
    claimed = db.session.execute(
        sa.update(Document).where(Document.id == document.id, Document.state.in_(states)).values(**values)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        db.session.rollback()
        return False
    db.session.refresh(document)
    return True


@bp.post("/documents/<int:document_id>/release")
def release(document_id: int):
    """A hold released after its cause was fixed: planned from the start, with the settings as they are now."""
    document = db.session.get(Document, document_id) or abort(404)
    if document.state != DocumentState.HELD:
        return refuse(document, f"Document {document.id} is {document.state}: only a held document can be "
                                "released.")
    if document.ix_id is not None:
        return refuse(document, f"InvoiceXpress already has a draft of document {document.id} "
                                f"(id {document.ix_id}): use Retry, which continues from that draft.")
    reason = document.last_error
    if not claim(document, (DocumentState.HELD,), state=DocumentState.PENDING, attempts=0, next_attempt_at=None,
                 last_error=None, locked_until=None):
        return refuse(document, f"Document {document.id} is no longer held.")
    record(document, "released", f"Hold released by operator after a fix (was held: {reason or 'no reason given'})"
                                 ". Planned again with today's settings.")
    db.session.commit()
    logger.info("document %s hold released by operator", document.id)
    jobs.enqueue_document(document)
    return answer(document, "released")


@bp.post("/documents/<int:document_id>/email")
def resend_email(document_id: int):
    document = db.session.get(Document, document_id) or abort(404)
    if document.state not in EMAILABLE or document.ix_id is None:
        how = "issued by hand" if document.state == DocumentState.DONE else document.state
        return refuse(document, f"Document {document.id} is {how}: only a document the connector issued and "
                                "finished can be e-mailed again.")
    record(document, "email", "Re-send of the e-mail requested by operator.")
    db.session.commit()
    try:
        get_queue().enqueue(jobs.resend_email, document.id, job_id=jobs.email_job_id(document.id),
                            job_timeout=jobs.JOB_TIMEOUT)
    except RedisError:
        # Nothing sweeps this one up later: say so rather than promise an e-mail.
        record(document, "email", "E-mail not sent again: the queue (Redis) is unavailable; ask again later.")
        db.session.commit()
        return refuse(document, "The queue (Redis) is unavailable: the e-mail was not sent. Try again later.", 503)
    logger.info("document %s e-mail re-send requested by operator", document.id)
    return answer(document, "emailing")


NUMBER_MAX = 64  # Document.sequence_number's width
REASON_MAX = 2000


@bp.post("/documents/<int:document_id>/close")
def close(document_id: int):
    """A held order closed by a person: issued by hand (with its number), or owing nothing (with a reason)."""
    document = db.session.get(Document, document_id) or abort(404)
    outcome = request.form.get("outcome", "")
    if outcome not in ("by_hand", "owes_nothing"):
        return refuse(document, "Choose how it was closed: issued by hand, or owes nothing.", 400)
    if document.state != DocumentState.HELD:
        return refuse(document, f"Document {document.id} is {document.state}: only a held document can be closed "
                                "by hand.")
    if document.ix_id is not None:
        return refuse(document, f"InvoiceXpress has a draft of document {document.id} (id {document.ix_id}): "
                                "delete it there first, or retry.")
    previous = document.last_error or "no reason given"
    if outcome == "by_hand":
        number = " ".join(request.form.get("number", "").split())
        if not number or len(number) > NUMBER_MAX:
            return refuse(document, f"Give the number of the document issued by hand (up to {NUMBER_MAX} "
                                    "characters).", 400)
        if not claim(document, (DocumentState.HELD,), state=DocumentState.DONE, sequence_number=number,
                     last_error=None, locked_until=None, next_attempt_at=None):
            return refuse(document, f"Document {document.id} is no longer held.")
        record(document, "closed", f"Closed by operator: issued by hand as {number}, outside the connector "
                                   f"(was held: {previous}).")
    else:
        reason = request.form.get("reason", "").strip()
        if not reason or len(reason) > REASON_MAX:
            return refuse(document, f"Say why the order owes nothing (up to {REASON_MAX} characters).", 400)
        if not claim(document, (DocumentState.HELD,), state=DocumentState.CANCELED, last_error=reason,
                     locked_until=None, next_attempt_at=None):
            return refuse(document, f"Document {document.id} is no longer held.")
        record(document, "closed", f"Closed by operator: owes nothing. {reason} (was held: {previous}).")
    db.session.commit()
    # The number and the reason stay in the timeline: a reason may quote the customer.
    logger.info("document %s closed by operator: %s", document.id, outcome.replace("_", " "))
    return answer(document, outcome)


REPLAYABLE = (EventStatus.PROCESSED, EventStatus.FAILED)


@bp.post("/events/<int:event_id>/replay")
def replay(event_id: int):
    """An event read again by the worker (after a fix to what it failed on); its documents are never issued twice,
    being unique per obligation."""
    event = db.session.get(WebhookEvent, event_id, options=[so.defer(WebhookEvent.body, raiseload=True)]) \
        or abort(404)
    if event.status not in REPLAYABLE:
        return refuse(None, f"Event {event.id} is {event.status}: only processed or failed events can be "
                            "replayed.", event=event)
    previous = event.status
    claimed = db.session.execute(
        sa.update(WebhookEvent).where(WebhookEvent.id == event.id, WebhookEvent.status.in_(REPLAYABLE))
        .values(status=EventStatus.RECEIVED, note=None, processed_at=None)
        .execution_options(synchronize_session=False))
    if claimed.rowcount != 1:
        return refuse(None, f"Event {event.id} is no longer processed or failed.", event=event)
    for document in db.session.scalars(sa.select(Document).where(Document.event_id == event.id)):
        record(document, "replay", f"Event {event.id} ({event.topic}) replayed by operator (was {previous}).")
    db.session.commit()
    logger.info("event %s replayed by operator (was %s)", event.id, previous)
    jobs.enqueue_event(event.id)
    return answer(None, "replayed", default=url_for(".events"))


# --- An order's whole story ----------------------------------------------------------------------------------

# How many of a store's events whose body holds the order's id are read to see whether they name it.
STORY_CANDIDATES = 500


@dataclass
class Story:
    """Everything that happened to one order: its events, its documents, and all of it in time order."""

    events: list[WebhookEvent] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    entries: list[tuple[datetime, str, Any]] = field(default_factory=list)


def names_order(event: WebhookEvent, order_id: str, settings) -> bool:
    """Whether the event means something for the order, as its platform reads it."""
    try:
        changes = PLATFORMS[event.platform].changes(json.loads(event.body), event.topic, settings)
    except Exception:  # noqa: BLE001 - an unreadable body names nothing we can be sure of
        return False
    return any(change.order_id == order_id for change in changes)


def order_story(store: Store, order_id: str) -> Story:
    story = Story()
    sale = find_document(store.id, sale_key(order_id))
    documents = [sale] if sale else []
    if sale:
        documents += db.session.scalars(sa.select(Document).where(Document.original_id == sale.id)
                                        .order_by(Document.id)).all()
    settings = settings_for(store)
    # The id in the body first (cheap, in the database), then the platform's reading of it (exact).
    candidates = db.session.scalars(
        sa.select(WebhookEvent).where(WebhookEvent.store_id == store.id, body_text().like(like(order_id.lower()),
                                                                                            escape="\\"))
        .order_by(WebhookEvent.id.desc()).limit(STORY_CANDIDATES)).all()
    linked = {document.event_id for document in documents}
    events = {event.id: event for event in candidates
              if event.id in linked or names_order(event, order_id, settings)}
    for event in db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.id.in_(linked - set(events)))):
        events[event.id] = event
    # A credit note still waiting for its sale has no original yet: its event tells it is this order's.
    known = {document.id for document in documents}
    documents += [document for document in db.session.scalars(
        sa.select(Document).where(Document.event_id.in_(list(events)), Document.id.not_in(known or [0]))
        .order_by(Document.id))]
    story.documents = documents
    story.events = sorted(events.values(), key=lambda event: event.id)
    for event in story.events:
        # The body holds the customer's personal data: read above to place the event, never shown.
        story.entries.append((as_utc(event.received_at), "event", event))
    by_id = {document.id: document for document in documents}
    for entry in db.session.scalars(sa.select(DocumentEvent).where(DocumentEvent.document_id.in_(list(by_id)))
                                    .order_by(DocumentEvent.id)):
        story.entries.append((as_utc(entry.at), "document", (by_id[entry.document_id], entry)))
    # Stable: entries of one moment keep their order (events before documents, a timeline as it was written).
    story.entries.sort(key=lambda item: item[0])
    return story


@bp.get("/stores/<int:store_id>/orders/<order_id>")
def order(store_id: int, order_id: str):
    store = db.session.get(Store, store_id) if 0 < store_id <= MAX_ID else None
    if store is None:
        abort(404)
    story = order_story(store, order_id)
    if not story.events and not story.documents:
        return render_template("admin/order.html", store=store, order_id=order_id, story=story,
                               order_ref=None), 404
    order_ref = next((document.order_ref for document in story.documents), None)
    return render_template("admin/order.html", store=store, order_id=order_id, story=story, order_ref=order_ref,
                           credit_note=ix_documents.CREDIT_NOTE.path)


@bp.get("/events")
def events():
    status = choice("status", EventStatus.ALL)
    source = choice("source", tuple(ARRIVALS))
    chosen = store_filter()
    if chosen.unknown:
        return _no_such_store("admin/events.html", chosen, status=status, source=source, statuses=EventStatus.ALL)
    by_store = [WebhookEvent.store_id == chosen.store.id] if chosen.store else []
    filters = [WebhookEvent.status == status] if status else []
    counts = dict(db.session.execute(
        sa.select(WebhookEvent.status, sa.func.count()).where(*by_store, *_source_filter(source))
        .group_by(WebhookEvent.status)).all())
    found = db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)
                              .where(WebhookEvent.source == "poll", *by_store, *filters))
    query = (
        sa.select(WebhookEvent, sa.func.length(WebhookEvent.body).label("size"))
        .options(so.defer(WebhookEvent.body, raiseload=True), so.joinedload(WebhookEvent.store))
        .where(*by_store, *filters, *_source_filter(source))
        .order_by(WebhookEvent.id.desc())
    )
    total = counts.get(status, 0) if status else sum(counts.values())
    return render_template("admin/events.html", page=paginate(query, total, scalars=False), status=status,
                           source=source, counts=counts, statuses=EventStatus.ALL, all_count=sum(counts.values()),
                           found_count=found, chosen=chosen)


def _source_filter(source: str | None) -> list:
    return [WebhookEvent.source == source] if source else []


@bp.get("/stores")
def stores():
    """Every store: its documents and events by state, how far reconciliation has read its platform and what its
    last pass found."""
    # One grouped query each, however many stores there are.
    documents: defaultdict[int, Counter] = defaultdict(Counter)
    for store_id, state, count in db.session.execute(
            sa.select(Document.store_id, Document.state, sa.func.count())
            .group_by(Document.store_id, Document.state)):
        documents[store_id][state] += count
        documents[store_id]["all"] += count
        if state in DocumentState.OPEN:
            documents[store_id][OPEN] += count
    events: defaultdict[int, Counter] = defaultdict(Counter)
    for store_id, status, source, count in db.session.execute(
            sa.select(WebhookEvent.store_id, WebhookEvent.status, WebhookEvent.source, sa.func.count())
            .group_by(WebhookEvent.store_id, WebhookEvent.status, WebhookEvent.source)):
        events[store_id][status] += count
        events[store_id]["all"] += count
        if source == "poll":
            events[store_id]["poll"] += count
    rows = db.session.execute(
        sa.select(Store, Watermark).outerjoin(Watermark, Watermark.store_id == Store.id).order_by(Store.id)).all()
    return render_template("admin/stores.html", rows=rows, documents=documents, events=events)
