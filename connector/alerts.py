"""Alerts: each problem that needs a person told once (e-mail and/or a Slack-style webhook), and a daily digest."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import requests
import sqlalchemy as sa
import sqlalchemy.orm as so
from flask import current_app
from redis.exceptions import RedisError

from connector.extensions import db, get_queue
from connector.models import Alert, Document, DocumentEvent, DocumentState, Store, Watermark, as_utc, utcnow
from connector.stores import UnreadableSecrets, own_secrets

logger = logging.getLogger(__name__)

LISBON = ZoneInfo("Europe/Lisbon")

HELD = "held"
FAILED = "failed"
OPEN = "open"  # still not done after ALERT_OPEN_AFTER_MINUTES
IX_KEY = "ix_key"  # IX refuses the store's API key
MISSED = "missed"  # reconciliation found orders no webhook brought
QUEUE = "queue"
DIGEST = "digest"

REFUSED_KEY_STATUSES = (401, 403)
# A worker killed while sending leaves the alert to another one after this long; well above the timeouts below.
SEND_LEASE = timedelta(minutes=5)
SMTP_TIMEOUT = 15
WEBHOOK_TIMEOUT = 10
# Alerts sent per beat: the rest wait for the next one rather than keep the job (and the queue) busy.
SEND_BATCH = 50
DIGEST_LINES = 40
REASON_LENGTH = 300


@dataclass(frozen=True)
class Problem:
    """Something that needs a person now, as found; its (kind, key) names it across runs and workers."""

    kind: str
    key: str
    subject: str
    text: str
    store_id: int | None = None
    document_id: int | None = None


def run(now: datetime | None = None) -> dict[str, int]:
    """Job, queued on the worker's maintenance beat: alerts opened for new problems, resolved for the gone,
    today's digests made, and whatever is unsent sent. Safe to run in any number of workers at once."""
    try:
        now = now or utcnow()
        opened, resolved = review(now)
        digests = make_digests(now)
        sent = send_unsent(now)
        if opened or resolved or digests or sent:
            logger.info("alerts: %d opened, %d resolved, %d digests, %d sent", opened, resolved, digests, sent)
        return {"opened": opened, "resolved": resolved, "digests": digests, "sent": sent}
    finally:
        db.session.remove()


# --- Problems -----------------------------------------------------------------------------------------


def review(now: datetime) -> tuple[int, int]:
    """Open an alert for each problem that has none open, and resolve each whose problem is gone."""
    # The open alerts are read before the problems: an alert another worker resolves in between was resolved
    # on a view of the problems older than ours, so a problem we still see is really a recurrence.
    open_alerts = list(db.session.scalars(
        sa.select(Alert).where(Alert.resolved_at.is_(None), Alert.kind != DIGEST)))
    problems, checked = current_problems(now)
    found = {(problem.kind, problem.key): problem for problem in problems}
    resolved = 0
    for alert in open_alerts:
        if (alert.kind, alert.key) not in found and alert.kind in checked:
            resolved += resolve(alert.id, now)
    still_open = {(alert.kind, alert.key) for alert in open_alerts}
    opened = sum(open_alert(problem, now) for name, problem in found.items() if name not in still_open)
    return opened, resolved


def current_problems(now: datetime) -> tuple[list[Problem], set[str]]:
    """Every problem there is now, and the kinds that were looked at (the queue's is unknown with Redis away)."""
    problems = document_problems(now) + refused_keys() + missed_webhooks()
    checked = {HELD, FAILED, OPEN, IX_KEY, MISSED}
    depth = queue_depth()
    if depth is not None:
        checked.add(QUEUE)
        threshold = current_app.config.get("ALERT_QUEUE_DEPTH", 500)
        name = get_queue().name
        already = db.session.scalar(sa.select(Alert.id).where(
            Alert.kind == QUEUE, Alert.key == f"queue:{name}", Alert.resolved_at.is_(None)))
        # Resolved only once the queue is down to half the threshold, so that a queue hovering around it does
        # not send an alert on every beat.
        if depth > threshold or (already is not None and depth > threshold // 2):
            problems.append(Problem(
                QUEUE, f"queue:{name}", f"Job queue backing up: {depth} jobs waiting",
                f"The job queue has {depth} jobs waiting (ALERT_QUEUE_DEPTH is {threshold}): the workers are not "
                "keeping up, or none is running. Check that the worker process is up and read its log."))
    return problems, checked


def needing_a_person(now: datetime, store_id: int | None = None) -> list[Document]:
    """Documents held, failed, or open for longer than ALERT_OPEN_AFTER_MINUTES, oldest first."""
    cutoff = now - timedelta(minutes=float(current_app.config.get("ALERT_OPEN_AFTER_MINUTES", 60)))
    query = (
        sa.select(Document)
        .where(sa.or_(Document.state.in_((DocumentState.HELD, DocumentState.FAILED)),
                      sa.and_(Document.state.in_(DocumentState.OPEN), Document.created_at < cutoff)))
        .options(so.joinedload(Document.store))
        .order_by(Document.id)
    )
    if store_id is not None:
        query = query.where(Document.store_id == store_id)
    return list(db.session.scalars(query))


def failure_statuses(document_ids: Iterable[int]) -> dict[int, int | None]:
    """Each failed document's IX status on its last failure (401 or 403: IX refused the API key)."""
    ids = list(document_ids)
    if not ids:
        return {}
    last = (sa.select(sa.func.max(DocumentEvent.id))
            .where(DocumentEvent.kind == "failed", DocumentEvent.document_id.in_(ids))
            .group_by(DocumentEvent.document_id))
    rows = db.session.execute(sa.select(DocumentEvent.document_id, DocumentEvent.status_code)
                              .where(DocumentEvent.id.in_(last)))
    return {document_id: status for document_id, status in rows}


def document_problems(now: datetime) -> list[Problem]:
    documents = needing_a_person(now)
    statuses = failure_statuses(d.id for d in documents if d.state == DocumentState.FAILED)
    problems = []
    for document in documents:
        store = store_label(document.store)
        reason = short(document.last_error) or "no reason recorded"
        where = f"order {document.order_ref}, document {document.id}"
        if document.state == DocumentState.HELD:
            kind, subject = HELD, f"Held: order {document.order_ref} ({store})"
            text = f"{store}: {where} is held for a person: {reason}"
        elif document.state == DocumentState.FAILED:
            if statuses.get(document.id) in REFUSED_KEY_STATUSES:
                continue  # told once for the whole store, as its refused API key
            kind, subject = FAILED, f"Failed: order {document.order_ref} ({store})"
            text = f"{store}: {where} failed at InvoiceXpress: {reason}"
        else:
            minutes = int((now - as_utc(document.created_at)).total_seconds() // 60)
            kind, subject = OPEN, f"Not issued after {minutes} minutes: order {document.order_ref} ({store})"
            text = (f"{store}: {where} is still {document.state} after {minutes} minutes"
                    + (f"; last problem: {reason}" if document.last_error else "") + ".")
        problems.append(problem(kind, f"document:{document.id}", subject, text + f" See /admin/documents/"
                                f"{document.id}.", document.store, document.id))
    return problems


def refused_keys() -> list[Problem]:
    """Stores whose last answer from IX (an error with a status, or a step done) was a 401 or 403."""
    latest = (
        sa.select(sa.func.max(DocumentEvent.id))
        .join(Document, Document.id == DocumentEvent.document_id)
        .where(sa.or_(DocumentEvent.status_code.is_not(None), DocumentEvent.kind == "state"))
        .group_by(Document.store_id)
    )
    rows = db.session.execute(
        sa.select(DocumentEvent, Document).join(Document, Document.id == DocumentEvent.document_id)
        .where(DocumentEvent.id.in_(latest), DocumentEvent.status_code.in_(REFUSED_KEY_STATUSES))
        .options(so.joinedload(Document.store)))
    problems = []
    for event, document in rows:
        store = document.store
        failed = db.session.scalar(
            sa.select(sa.func.count(Document.id)).where(Document.store_id == store.id,
                                                        Document.state == DocumentState.FAILED))
        problems.append(problem(
            IX_KEY, f"store:{store.id}", f"InvoiceXpress refuses the API key of {store_label(store)}",
            f"{store_label(store)}: InvoiceXpress refused the store's API key (HTTP {event.status_code}) on order "
            f"{document.order_ref}, document {document.id}; {failed} of the store's documents are failed. Set the "
            f"right key (`flask --app wsgi stores set {store.domain} invoicexpress_api_key=…`, or "
            "INVOICEXPRESS_API_KEY for the default store), then retry the failed documents in /admin.",
            store, document.id))
    return problems


def missed_webhooks() -> list[Problem]:
    rows = db.session.scalars(sa.select(Watermark).where(Watermark.last_missed > 0)
                              .options(so.joinedload(Watermark.store)))
    return [problem(
        MISSED, f"store:{mark.store_id}", f"Webhook probably disabled: {store_label(mark.store)}",
        f"{store_label(mark.store)}: the last reconciliation found {mark.last_missed} orders no webhook brought: "
        "the shop's webhook is probably disabled or failing. Check the webhooks in the shop's admin; meanwhile "
        "reconciliation issues the orders it finds.", mark.store) for mark in rows]


def queue_depth() -> int | None:
    try:
        return get_queue().count
    except RedisError:
        return None


def open_alert(found: Problem, now: datetime) -> int:
    """Open an alert for the problem (1), or nothing (0) when another worker just did."""
    last = db.session.scalars(sa.select(Alert).where(Alert.kind == found.kind, Alert.key == found.key)
                              .order_by(Alert.occurrence.desc()).limit(1)).first()
    if last is not None and last.resolved_at is None:
        return 0  # opened by another worker since this one looked
    db.session.add(Alert(kind=found.kind, key=found.key, occurrence=(last.occurrence if last else 0) + 1,
                         store_id=found.store_id,
                         document_id=found.document_id, subject=found.subject[:255], text=found.text,
                         opened_at=now))
    try:
        db.session.commit()
    except sa.exc.IntegrityError:
        # Unique on (kind, key, occurrence): another worker opened this very alert first.
        db.session.rollback()
        return 0
    return 1


def resolve(alert_id: int, now: datetime) -> int:
    done = db.session.execute(
        sa.update(Alert).where(Alert.id == alert_id, Alert.resolved_at.is_(None)).values(resolved_at=now)
        .execution_options(synchronize_session=False))
    db.session.commit()
    return done.rowcount


# --- The daily digest ---------------------------------------------------------------------------------


def make_digests(now: datetime) -> int:
    """Once a day (Lisbon), from ALERT_DIGEST_HOUR on (unless it is off): one digest per store of what needs a
    person."""
    hour = current_app.config.get("ALERT_DIGEST_HOUR", 8)
    local = now.astimezone(LISBON)
    if hour is None or local.hour < hour:
        return 0
    day = local.date().isoformat()
    # An earlier day's digest still unsent is out of date: today's says what is still true.
    for alert in db.session.scalars(sa.select(Alert).where(Alert.kind == DIGEST, Alert.resolved_at.is_(None))):
        if not alert.key.endswith(f":{day}"):
            resolve(alert.id, now)
    documents = needing_a_person(now)
    by_store: dict[int, list[Document]] = {}
    for document in documents:
        by_store.setdefault(document.store_id, []).append(document)
    made = 0
    for store_id, store_documents in by_store.items():
        key = f"store:{store_id}:{day}"
        if db.session.scalar(sa.select(Alert.id).where(Alert.kind == DIGEST, Alert.key == key)) is not None:
            continue
        made += open_alert(digest(store_documents, day, now, key), now)
    return made


def digest(documents: list[Document], day: str, now: datetime, key: str) -> Problem:
    store = documents[0].store
    counts = {state: sum(1 for d in documents if d.state == state) for state in (DocumentState.HELD,
                                                                                  DocumentState.FAILED)}
    long_open = len(documents) - sum(counts.values())
    minutes = int(float(current_app.config.get("ALERT_OPEN_AFTER_MINUTES", 60)))
    summary = (f"{counts[DocumentState.HELD]} held, {counts[DocumentState.FAILED]} failed, {long_open} open for "
               f"more than {minutes} minutes")
    lines = [f"Daily digest for {store_label(store)}, {day}: {summary}. Each needs a person, in /admin."]
    for document in documents[:DIGEST_LINES]:
        state = document.state if document.state in counts else f"still {document.state}"
        reason = short(document.last_error)
        lines.append(f"- {state}: order {document.order_ref}, document {document.id}"
                     + (f": {reason}" if reason else ""))
    if len(documents) > DIGEST_LINES:
        lines.append(f"- and {len(documents) - DIGEST_LINES} more")
    return problem(DIGEST, key, f"Daily digest for {store_label(store)}, {day}: {summary}", "\n".join(lines),
                   store)


# --- Texts --------------------------------------------------------------------------------------------


def store_label(store: Store) -> str:
    return f"{store.platform} store {store.domain}"


def short(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= REASON_LENGTH else text[:REASON_LENGTH - 1] + "…"


EMAIL_ADDRESS = re.compile(r"[\w.+%'-]+@[\w-]+(?:\.[\w-]+)+")
# Portuguese tax numbers are nine digits (PT123456789, 123 456 789); no order name or id here is that long.
TAX_NUMBER = re.compile(r"\b(?:[A-Z]{2})?\d{9,}\b|\b\d{3}[ .]\d{3}[ .]\d{3}\b")


def problem(kind: str, key: str, subject: str, text: str, store: Store | None = None,
            document_id: int | None = None) -> Problem:
    """A problem whose texts carry no e-mail address, tax number or secret (a reason may quote the customer's
    data, or an answer the connector's own credentials)."""
    secrets = known_secrets(store)
    return Problem(kind, key, scrub(subject, secrets), scrub(text, secrets), store.id if store else None,
                   document_id)


def scrub(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "[secret]")
    text = EMAIL_ADDRESS.sub("[e-mail]", text)
    return TAX_NUMBER.sub("[tax number]", text)


def known_secrets(store: Store | None) -> set[str]:
    config = current_app.config
    values = [config.get(name) for name in (
        "INVOICEXPRESS_API_KEY", "WOOCOMMERCE_CONSUMER_KEY", "WOOCOMMERCE_CONSUMER_SECRET", "STRIPE_API_KEY",
        "SHOPIFY_ACCESS_TOKEN", "ADMIN_PASSWORD", "METRICS_TOKEN", "ALERT_WEBHOOK_URL")]
    values += [secret for secrets in (config.get("WEBHOOK_SECRETS") or {}).values() for secret in secrets]
    values += list(config.get("SECRET_KEYS") or ())
    smtp = urlsplit(config.get("SMTP_URL") or "")
    values += [smtp.password and unquote(smtp.password)]
    if store is not None:
        try:
            own = own_secrets(store)
        except UnreadableSecrets:
            own = {}  # then the store's secrets were never readable, so no answer can have quoted them
        values += list(own.values())
    # Short values would blank out ordinary words; no real credential is that short.
    return {value for value in values if isinstance(value, str) and len(value) >= 8}


# --- Sending ------------------------------------------------------------------------------------------


def channels() -> list[str]:
    config = current_app.config
    found = []
    if config.get("ALERT_EMAIL") and config.get("SMTP_URL"):
        found.append("email")
    if config.get("ALERT_WEBHOOK_URL"):
        found.append("webhook")
    return found


def send_unsent(now: datetime) -> int:
    """Send every open, unsent alert whose sending nobody holds, through each channel it has not gone by.

    A channel that fails is tried again on the next beat (and not again in this run, so that a mail server
    that is down costs one timeout, not one per alert); a channel that worked is never used again for it.
    """
    wanted = channels()
    if not wanted:
        return 0
    ids = list(db.session.scalars(
        sa.select(Alert.id)
        .where(Alert.sent_at.is_(None), Alert.resolved_at.is_(None),
               sa.or_(Alert.sending_until.is_(None), Alert.sending_until < now))
        .order_by(Alert.id).limit(SEND_BATCH)))
    down: set[str] = set()
    sent = 0
    for alert_id in ids:
        if set(wanted) <= down:
            break
        alert = claim(alert_id, now)
        if alert is not None:
            sent += deliver(alert, wanted, down)
    return sent


def claim(alert_id: int, now: datetime) -> Alert | None:
    """Take the sending of one alert: a single conditional UPDATE, so that two workers never both win."""
    claimed = db.session.execute(
        sa.update(Alert)
        .where(Alert.id == alert_id, Alert.sent_at.is_(None), Alert.resolved_at.is_(None),
               sa.or_(Alert.sending_until.is_(None), Alert.sending_until < now))
        .values(sending_until=now + SEND_LEASE, attempts=Alert.attempts + 1)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if claimed.rowcount != 1:
        return None
    return db.session.get(Alert, alert_id)


def deliver(alert: Alert, wanted: list[str], down: set[str]) -> int:
    """Send one claimed alert; 1 when every channel has it now. Each channel's success is committed at once."""
    errors = []
    for channel in wanted:
        if (alert.emailed_at if channel == "email" else alert.posted_at) is not None:
            continue
        if channel in down:
            errors.append(f"{channel}: not tried, it failed earlier in this run")
            continue
        try:
            if channel == "email":
                send_email(alert)
            else:
                post_webhook(alert)
        except Exception as error:  # noqa: BLE001 - nothing a channel does may end the job
            down.add(channel)
            errors.append(f"{channel}: {describe(error)}")
            logger.warning("alert %s not sent by %s: %s; trying again on the next beat", alert.id, channel,
                           describe(error))
            continue
        if channel == "email":
            alert.emailed_at = utcnow()
        else:
            alert.posted_at = utcnow()
        db.session.commit()
    alert.sending_until = None
    alert.last_error = "; ".join(errors) or None
    if not errors:
        alert.sent_at = utcnow()
    db.session.commit()
    return 0 if errors else 1


def describe(error: BaseException) -> str:
    """What went wrong, without the URL or the server's words (either may hold a credential)."""
    if isinstance(error, smtplib.SMTPResponseException):
        return f"the mail server answered {error.smtp_code}"
    if isinstance(error, requests.HTTPError) and error.response is not None:
        return f"the webhook answered HTTP {error.response.status_code}"
    if isinstance(error, (requests.Timeout, TimeoutError)):
        return "timed out"
    if isinstance(error, (requests.ConnectionError, ConnectionError)):
        return "could not connect"
    return type(error).__name__


def send_email(alert: Alert) -> None:
    config = current_app.config
    url = urlsplit(config["SMTP_URL"])
    message = EmailMessage()
    message["Subject"] = f"[invoicing] {alert.subject}"
    message["From"] = config.get("ALERT_EMAIL_FROM") or config["ALERT_EMAIL"][0]
    message["To"] = ", ".join(config["ALERT_EMAIL"])
    message.set_content(alert.text + "\n")
    if url.scheme == "smtps":
        server = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=SMTP_TIMEOUT,
                                  context=ssl.create_default_context())
    else:
        server = smtplib.SMTP(url.hostname, url.port or 25, timeout=SMTP_TIMEOUT)
    with server:
        server.ehlo()
        # Mail add-ons listen on 587 with STARTTLS: use it whenever the server offers it.
        if url.scheme == "smtp" and server.has_extn("starttls"):
            server.starttls(context=ssl.create_default_context())
            server.ehlo()
        if url.username:
            server.login(unquote(url.username), unquote(url.password or ""))
        server.send_message(message)


def post_webhook(alert: Alert) -> None:
    response = requests.post(current_app.config["ALERT_WEBHOOK_URL"],
                             json={"text": f"{alert.subject}\n{alert.text}"}, timeout=WEBHOOK_TIMEOUT)
    response.raise_for_status()
