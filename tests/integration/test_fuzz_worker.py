"""Fuzzed but signed Shopify orders through the worker on PostgreSQL and Redis, issuing to the IX sandbox
(whose checks refuse what InvoiceXpress would): no 500, no job that raises, every event ends with its
document settled, held with a reason, or owing nothing with a note saying why; every document the sandbox
has is one it accepted, and none is issued for a total other than what the customer paid.

The jobs run in this process (an RQ SimpleWorker draining the real queue) against the sandbox in a thread:
the same code the worker process runs, without its start-up cost per example. Bounded to stay well under
a minute; in CI (CI=true) the examples are the same every run.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import event as hypothesis_event
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from connector import create_app
from connector.extensions import db
from connector.models import Document, DocumentState, EventStatus, WebhookEvent
from devtools.invoicexpress_sandbox import serve_in_thread
from tests.conftest import drain, settings, shopify_headers, tables_of
from tests.shopify_strategies import ORDER_FIXTURES, ORDERS, mutated_orders

API_KEY = "fuzz-ix-key"
EXAMPLES = 60

# Real orders, mostly mutated: enough of them still owe an invoice to exercise issuing, the rest are held
# or unreadable.
payloads = st.one_of(mutated_orders(), mutated_orders(), st.sampled_from(ORDER_FIXTURES).map(ORDERS.get))


@pytest.fixture
def worker_app(clean_db, clean_redis):
    url, server = serve_in_thread(api_key=API_KEY)
    app = create_app(environ=settings(
        DATABASE_URL=clean_db, REDIS_URL=clean_redis, INVOICEXPRESS_BASE_URL=url, INVOICEXPRESS_API_KEY=API_KEY,
        # The budget is not under test here; at the default every example would wait for it.
        INVOICEXPRESS_REQUESTS_PER_MINUTE="600000",
    ))
    app.config["SANDBOX_URL"] = url
    try:
        with tables_of(app, drop=False):  # clean_db resets the schema for the next test
            yield app
    finally:
        server.shutdown()


def wipe(app) -> None:
    """Every example starts from nothing: no rows, no jobs, an empty sandbox."""
    db.session.remove()
    tables = ", ".join(table.name for table in db.metadata.sorted_tables)
    db.session.execute(sa.text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    db.session.commit()
    app.extensions["queue"].connection.flushall()
    requests.post(f"{app.config['SANDBOX_URL']}/_sandbox/reset", timeout=5).raise_for_status()


def paid(payload: dict) -> Decimal | None:
    """What the customer paid, read from the order as Shopify states it: the presentment total (the
    connector's default invoice currency), else the shop total; None when neither is a number."""
    money = payload.get("total_price_set")
    candidates = []
    if isinstance(money, dict) and isinstance(money.get("presentment_money"), dict):
        candidates.append(money["presentment_money"].get("amount"))
    candidates.append(payload.get("total_price"))
    for candidate in candidates:
        if isinstance(candidate, str | int | float) and not isinstance(candidate, bool):
            try:
                value = Decimal(str(candidate))
            except InvalidOperation:
                continue
            if value.is_finite():
                return value
    return None


def unhandled_errors(queue) -> list[str]:
    registry = FailedJobRegistry(queue=queue)
    errors = []
    for job_id in registry.get_job_ids():
        result = Job.fetch(job_id, connection=queue.connection).latest_result()
        errors.append(f"{job_id}: {result.exc_string if result else '(no result)'}")
    return errors


@hsettings(max_examples=EXAMPLES, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                  HealthCheck.data_too_large])
@given(payload=payloads)
def test_fuzzed_orders_end_settled_held_or_owing_nothing_and_never_issued_wrong(worker_app, payload):
    wipe(worker_app)
    queue = worker_app.extensions["queue"]
    body = json.dumps(payload).encode()

    answer = worker_app.test_client().post("/webhooks/shopify", data=body, headers=shopify_headers(body))
    assert answer.status_code < 500, answer.data[:300]
    if answer.status_code == 400:  # NaN or Infinity, which a stricter intake may refuse: nothing stored
        assert db.session.scalar(sa.select(sa.func.count()).select_from(WebhookEvent)) == 0
        return
    assert answer.status_code == 200, answer.data[:300]

    drain(queue)

    assert unhandled_errors(queue) == []
    db.session.remove()
    event = db.session.get(WebhookEvent, answer.json["event"])
    documents = db.session.scalars(sa.select(Document)).all()
    ix_documents = {d["id"]: d for d in requests.get(
        f"{worker_app.config['SANDBOX_URL']}/_sandbox/documents", timeout=5).json()}
    hypothesis_event(f"event {event.status}, documents {[d.state for d in documents]}")
    # Nothing left waiting: a document is issued or held the first time round, nothing retries later.
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [] and queue.count == 0

    assert event.status in (EventStatus.PROCESSED, EventStatus.FAILED), event.status
    if event.status == EventStatus.FAILED or not documents:
        assert event.note and event.note.strip(), "an event that owes nothing says why"
        assert documents == [] and ix_documents == {}
        return
    [document] = documents
    assert document.state in (DocumentState.DONE, DocumentState.HELD), (document.state, document.last_error)
    if document.state == DocumentState.HELD:
        assert document.last_error and document.last_error.strip()
        assert ix_documents == {}, "a held order sends nothing to InvoiceXpress"
        return
    # Issued: the sandbox took it all the way (a refusal would have left the document failed), for
    # exactly what the customer paid.
    assert list(ix_documents) == [document.ix_id]
    issued = ix_documents[document.ix_id]
    assert issued["status"] == "settled", issued["status"]
    assert Decimal(str(issued["totals"]["total"])) == Decimal(document.total) == paid(payload), (
        issued["totals"], document.total, paid(payload))
