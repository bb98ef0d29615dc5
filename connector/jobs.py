"""RQ entry points and how work is put on the queue. Jobs take ids only and stay thin."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry

from connector import issuing, logs, obligations
from connector.extensions import db, get_queue
from connector.invoicexpress.client import InvoiceXpressError
from connector.models import Document, DocumentState, EventStatus, WebhookEvent

logger = logging.getLogger(__name__)

JOB_TIMEOUT = 600  # four IX calls with their timeouts fit well inside
# Jobs waiting in Redis: a document whose job is in one of these needs no help from the sweeper.
WAITING = (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED)


def event_job_id(event_id: int) -> str:
    return f"event-{event_id}"


def enqueue_event(event_id: int) -> None:
    """Queue the processing of a stored event; if Redis is away the sweeper will do it later."""
    try:
        get_queue().enqueue(process_event, event_id, job_id=event_job_id(event_id), job_timeout=JOB_TIMEOUT)
    except RedisError:
        logger.warning("event %s not queued: Redis unavailable, the sweeper will queue it", event_id)


def enqueue_document(document: Document, delay: float = 0) -> None:
    """Queue (or schedule) issuing a document; its row remembers the job so the sweeper can check on it."""
    document.job_id = f"document-{document.id}-{uuid.uuid4().hex[:12]}"
    db.session.commit()
    queue = get_queue()
    try:
        if delay > 0:
            queue.enqueue_in(timedelta(seconds=delay), issue_document, document.id, job_id=document.job_id,
                             job_timeout=JOB_TIMEOUT)
        else:
            queue.enqueue(issue_document, document.id, job_id=document.job_id, job_timeout=JOB_TIMEOUT)
    except RedisError:
        logger.warning("document %s not queued: Redis unavailable, the sweeper will queue it", document.id)


def job_status(job_id: str | None, connection) -> JobStatus | None:
    """The job's status in Redis, or None when Redis has no (readable) job by that id."""
    if not job_id:
        return None
    try:
        return Job.fetch(job_id, connection=connection).get_status()
    except Exception:  # NoSuchJobError, a job hash Redis evicted half-way, or Redis away
        return None


def is_waiting(job_id: str | None) -> bool:
    """Whether the job is still in Redis waiting to run (a lost or finished job is not)."""
    return job_status(job_id, get_queue().connection) in WAITING


def process_event(event_id: int) -> None:
    """Job: turn a stored paid-order event into its document row, then queue the document."""
    try:
        event = db.session.get(WebhookEvent, event_id)
        if event is not None:
            with logs.for_store(event.platform, event.store.domain):
                obligations.process_event(event, enqueue=enqueue_document,
                                          client_factory=current_app.extensions["invoicexpress"])
    finally:
        db.session.remove()


def issue_document(document_id: int) -> str | None:
    """Job: issue, finalize and e-mail one document, resuming from its last recovery point."""
    try:
        document = db.session.get(Document, document_id)
        if document is None:
            return None
        with logs.for_store(document.store.platform, document.store.domain):
            try:
                client = current_app.extensions["invoicexpress"](document.store)
            except issuing.NoInvoiceXpressAccount as error:
                return issuing.hold_open(document_id, str(error))
            return issuing.issue(document_id, client, schedule_retry=enqueue_document)
    finally:
        db.session.remove()


def sweep() -> dict[str, int]:
    """Job: queue again whatever lost its job (Redis flushed or away, a worker killed)."""
    try:
        # An event younger than one sweep interval is most likely still on its way through the queue.
        grace = timedelta(seconds=current_app.config["SWEEP_INTERVAL_SECONDS"])
        events = [e for e in obligations.stalled_events(grace) if not is_waiting(event_job_id(e.id))]
        for event in events:
            enqueue_event(event.id)
        documents = [d for d in issuing.stalled_documents() if not is_waiting(d.job_id)]
        for document in documents:
            enqueue_document(document)
        cleared = clear_recovered_failures()
        if events or documents or cleared:
            logger.info("sweep queued %d events and %d documents again, cleared %d failed jobs",
                        len(events), len(documents), cleared)
        return {"events": len(events), "documents": len(documents)}
    finally:
        db.session.remove()


def clear_recovered_failures() -> int:
    """Drop failed jobs (a killed worker's abandoned ones among them) whose work is done or queued anew.

    The failed-job registry then lists only what still needs a look; the document's timeline keeps
    the history either way.
    """
    registry = FailedJobRegistry(queue=get_queue())
    cleared = 0
    for job_id in registry.get_job_ids():
        if job_id.startswith("document-"):
            document = db.session.get(Document, int(job_id.split("-")[1]))
            recovered = document is None or document.job_id != job_id or document.state not in DocumentState.OPEN
        elif job_id.startswith("event-"):
            event = db.session.get(WebhookEvent, int(job_id.split("-")[1]))
            recovered = event is None or event.status != EventStatus.RECEIVED
        else:
            continue
        if recovered:
            registry.remove(job_id, delete_job=True)
            cleared += 1
    return cleared


def email_job_id(document_id: int) -> str:
    return f"email-{document_id}-{uuid.uuid4().hex[:12]}"


def resend_email(document_id: int) -> str | None:
    """Job: e-mail a finished document to its customer again (an operator asked), saying so in its timeline.

    Not retried: a failure is in the timeline and the operator may ask again; a second e-mail is harmless.
    """
    try:
        document = db.session.get(Document, document_id)
        if document is None or document.ix_id is None:
            return None
        with logs.for_store(document.store.platform, document.store.domain):
            email = issuing.email_for(document)
            if not email:
                issuing.record(document, "email", "Not e-mailed again: the order has no e-mail address.")
                db.session.commit()
                return "no address"
            try:
                client = current_app.extensions["invoicexpress"](document.store)
                client.email_document(document.doc_type, document.ix_id, email)
            except (InvoiceXpressError, issuing.NoInvoiceXpressAccount) as error:
                db.session.rollback()
                status = getattr(error, "status", None)
                issuing.record(document, "email", f"E-mail not sent again: {error}", status)
                db.session.commit()
                logger.warning("document %s e-mail re-send failed (IX status %s)", document.id, status)
                return "failed"
            issuing.record(document, "email", "E-mailed again to the customer, as the operator asked.")
            db.session.commit()
            logger.info("document %s e-mailed again", document.id)
            return "sent"
    finally:
        db.session.remove()
