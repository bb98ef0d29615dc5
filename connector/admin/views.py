"""The admin routes: lists with counts and pages, a document and its timeline, stores' reconciliation, retry."""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import abort, redirect, render_template, request, url_for

from connector import jobs
from connector.admin import bp, plain
from connector.extensions import db
from connector.issuing import record
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
from connector.plans import LISBON

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


@bp.get("/")
def documents():
    state = choice("state", STATE_FILTERS)
    chosen = store_filter()
    if chosen.unknown:
        return _no_such_store("admin/documents.html", chosen, state=state, states=DocumentState.ALL)
    by_store = [Document.store_id == chosen.store.id] if chosen.store else []
    counts = dict(db.session.execute(
        sa.select(Document.state, sa.func.count()).where(*by_store).group_by(Document.state)).all())
    query = (sa.select(Document).options(so.joinedload(Document.store))
             .where(*by_store, *state_condition(state)).order_by(Document.id.desc()))
    if state == OPEN:
        total = sum(counts.get(name, 0) for name in DocumentState.OPEN)
    else:
        total = counts.get(state, 0) if state else sum(counts.values())
    return render_template("admin/documents.html", page=paginate(query, total), state=state, counts=counts,
                           states=DocumentState.ALL, all_count=sum(counts.values()), chosen=chosen)


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
    return render_template("admin/document.html", document=document, event=event, timeline=timeline)


@bp.post("/documents/<int:document_id>/retry")
def retry(document_id: int):
    document = db.session.get(Document, document_id) or abort(404)
    previous, reason = document.state, document.last_error
    if previous not in RETRYABLE:
        return plain(409, f"Document {document.id} is {previous}: only held or failed documents can be retried.")
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
        return plain(409, f"Document {document.id} is no longer held or failed.")
    record(document, "retry", f"Retry requested by operator (was {previous}: {reason or 'no reason given'}).")
    db.session.commit()
    logger.info("document %s retry requested by operator: %s -> %s", document.id, previous, target)
    jobs.enqueue_document(document)
    return redirect(back_to(url_for(".document", document_id=document.id)), 303)


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
