"""Issuing against the IX sandbox: one settled, e-mailed document per paid order, through faults."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from decimal import Decimal

import requests
import sqlalchemy as sa
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry

from connector import jobs
from connector.extensions import db
from connector.issuing import take_lease
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, WebhookEvent, utcnow
from connector.plans import LISBON
from tests.conftest import API_KEY, drain, fixture_body, run_scheduled_now


def the_document() -> Document:
    [document] = db.session.scalars(sa.select(Document)).all()
    return document


def timeline(document: Document) -> list[str]:
    return [e.kind for e in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id))]


def test_a_paid_order_ends_as_one_settled_emailed_invoice_receipt(sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.DONE
    assert document.sequence_number and document.atcud and document.permalink
    [ix] = sandbox.documents()
    assert ix["type"] == "InvoiceReceipt"
    assert ix["status"] == "settled"
    assert ix["id"] == document.ix_id
    assert ix["reference"] == "#1001"
    assert ix["totals"]["total"] == 59.86
    assert [e["to"] for e in ix["emails"]] == [json.loads(fixture_body("paid_b2c_tax_included.json"))["email"]]
    assert timeline(document) == ["planned", "attempt", "state", "state", "state", "state"]
    # Three IX calls per document: create, finalize, e-mail (and the account's taxes, read once an hour).
    calls = sandbox.calls()
    assert calls.pop("GET /taxes.json") == 1
    assert sum(calls.values()) == 3


def test_the_same_order_from_two_events_gets_one_document(sandbox, post_order, queue):
    body = fixture_body("paid_b2c_tax_included.json")
    post_order(body, event_id="subscription-a")
    post_order(body, event_id="subscription-b")
    drain(queue)

    assert len(db.session.scalars(sa.select(WebhookEvent)).all()) == 2
    assert the_document().state == DocumentState.DONE
    assert len(sandbox.documents()) == 1


def test_an_unpaid_order_owes_nothing_and_the_event_says_why(sandbox, post_order, queue):
    post_order(fixture_body("authorized_not_paid.json"))
    drain(queue)

    [event] = db.session.scalars(sa.select(WebhookEvent)).all()
    assert event.status == EventStatus.PROCESSED
    assert "not paid" in event.note
    assert db.session.scalars(sa.select(Document)).all() == []
    assert sandbox.documents() == []


def test_an_order_without_a_tax_name_for_its_rate_is_held_and_nothing_is_sent(app, sandbox, post_order, queue):
    issuing = app.config["ISSUING"]
    issuing["tax_names"] = {k: v for k, v in issuing["tax_names"].items() if v != "IVA23"}
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.HELD
    assert "23 %" in document.last_error
    assert sandbox.documents() == []


def test_ix_unavailable_is_retried_later_and_then_issued_once(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="status", status=503, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.PENDING
    assert "retrying" in document.last_error
    assert timeline(document)[-1] == "retry"
    assert document.job_id in ScheduledJobRegistry(queue=queue).get_job_ids()
    assert sandbox.documents() == []

    run_scheduled_now(queue)
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert len(sandbox.documents()) == 1


def test_a_create_that_ix_did_but_answered_500_resumes_on_the_same_document(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="after", status=500, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    run_scheduled_now(queue)
    drain(queue)

    assert the_document().state == DocumentState.DONE
    [ix] = sandbox.documents()
    assert ix["status"] == "settled"
    assert len(ix["emails"]) == 1
    # The retry looked the document up by its order reference instead of creating again.
    calls = sandbox.calls()
    assert calls["POST /invoice_receipts.json"] == 1
    assert calls["GET /invoices.json"] == 1


def test_a_finalize_that_failed_resumes_from_the_created_draft(sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=502, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    document = the_document()
    assert document.state == DocumentState.CREATED
    assert document.ix_id

    run_scheduled_now(queue)
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert len(sandbox.documents()) == 1


def test_ix_refusing_the_document_fails_it_with_ixs_words(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="status", status=422, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.FAILED
    assert document.last_error.startswith("InvoiceXpress refused the document")
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []


def test_a_document_whose_job_was_lost_is_swept_back_into_the_queue(sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)  # the event only
    document = the_document()
    assert document.state == DocumentState.PENDING
    queue.connection.flushall()  # Redis lost everything

    assert jobs.sweep() == {"events": 0, "documents": 1}
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert len(sandbox.documents()) == 1


def test_two_workers_cannot_hold_the_same_document(sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
    document_id = the_document().id

    assert take_lease(document_id) is not None
    assert take_lease(document_id) is None
    # A worker killed while holding it: the lease runs out and the document can be taken again.
    document = db.session.get(Document, document_id)
    document.locked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert take_lease(document_id) is not None


def test_no_secret_email_or_nif_reaches_the_logs(app, sandbox, post_order, queue, caplog):
    caplog.set_level(logging.DEBUG)
    body = fixture_body("paid_with_discount_and_nif.json")
    post_order(body)
    drain(queue)
    assert the_document().state == DocumentState.DONE

    payload = json.loads(body)
    nif = next(a["value"] for a in payload["note_attributes"] if a["name"].lower() == "nif")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged  # the run did log
    for secret in (API_KEY, payload["email"], nif, app.config["WEBHOOK_SECRETS"]["shopify"][0]):
        assert secret not in logged





def test_a_finalize_ix_did_but_answered_500_is_not_sent_twice(sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="after",
                  status=500, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    assert the_document().state == DocumentState.CREATED

    run_scheduled_now(queue)
    drain(queue)
    assert the_document().state == DocumentState.DONE
    [ix] = sandbox.documents()
    assert [h for h in ix["history"] if "settled" in str(h)]
    # The resumed job read the document's state instead of finalizing it again.
    assert sandbox.calls()["PUT /invoice_receipts/{id}/change-state.json"] == 1
    assert len(ix["emails"]) == 1


def test_an_unexpected_error_frees_the_document_and_the_sweeper_retries_it_after_a_backoff(
        app, sandbox, post_order, queue):
    real_factory = app.extensions["invoicexpress"]

    class Broken:
        base_url = "https://acme.app.invoicexpress.com"

        def __init__(self, store=None):
            pass

        def list_taxes(self):
            return real_factory().list_taxes()

        def create_document(self, *args):
            raise RuntimeError("customer ana@example.pt broke it")  # a message that must not be stored

    app.extensions["invoicexpress"] = Broken
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    document = the_document()
    assert document.state == DocumentState.PENDING
    assert document.locked_until is None
    assert document.last_error == "Unexpected RuntimeError; will retry."
    assert jobs.sweep()["documents"] == 0  # not before its backoff

    app.extensions["invoicexpress"] = real_factory
    document = the_document()  # the sweep ended the session the row was read in
    document.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert jobs.sweep()["documents"] == 1
    drain(queue)
    assert the_document().state == DocumentState.DONE


def test_a_document_stops_retrying_after_the_last_attempt_and_says_so(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="status", status=503, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    document = the_document()
    document.attempts = 30
    document.next_attempt_at = None
    db.session.commit()
    queue.connection.flushall()  # its scheduled retry is lost: the sweeper has to find it

    jobs.sweep()
    drain(queue)
    document = the_document()
    assert document.state == DocumentState.FAILED
    assert document.last_error.startswith("Gave up after 30 attempts")
    assert sandbox.documents() == []


def test_a_tax_name_the_account_lacks_is_held_before_anything_is_created(app, sandbox, post_order, queue):
    app.config["ISSUING"]["tax_names"] = {**app.config["ISSUING"]["tax_names"], Decimal(23): "IVA23-LOJA"}
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.HELD
    assert "no tax named IVA23-LOJA" in document.last_error
    assert sandbox.documents() == []


def test_a_tax_name_at_another_rate_in_the_account_is_held(app, sandbox, post_order, queue):
    names = {rate: name for rate, name in app.config["ISSUING"]["tax_names"].items() if rate != 22}
    app.config["ISSUING"]["tax_names"] = {**names, Decimal(23): "IVA22"}  # Madeira's 22 % tax for 23 %
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.HELD
    assert "IVA22 is at 22" in document.last_error
    assert sandbox.documents() == []


def test_a_draft_older_than_the_series_last_document_is_dated_today_and_finalized(sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=503, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    draft_id = the_document().ix_id
    # Meanwhile: our draft is a day old, and another document of the series was finalized today.
    today = datetime.now(LISBON).date()
    draft = requests.get(f"{sandbox.url}/invoice_receipts/{draft_id}.json", params={"api_key": API_KEY},
                         timeout=5).json()["invoice_receipt"]
    body = {"date": (today - timedelta(days=1)).strftime("%d/%m/%Y"), "due_date": today.strftime("%d/%m/%Y"),
            "client": {"name": "X", "code": "X"},
            "items": [{"name": i["name"], "description": i["description"], "unit_price": i["unit_price"],
                       "quantity": i["quantity"], "tax": {"name": i["tax"]["name"]}} for i in draft["items"]]}
    requests.put(f"{sandbox.url}/invoice_receipts/{draft_id}.json", params={"api_key": API_KEY},
                 json={"invoice": body}, timeout=5).raise_for_status()
    other = requests.post(f"{sandbox.url}/invoice_receipts.json", params={"api_key": API_KEY}, timeout=5,
                          json={"invoice": {**body, "date": today.strftime("%d/%m/%Y")}}).json()["invoice_receipt"]
    requests.put(f"{sandbox.url}/invoice_receipts/{other['id']}/change-state.json", params={"api_key": API_KEY},
                 json={"invoice": {"state": "finalized"}}, timeout=5).raise_for_status()

    run_scheduled_now(queue)
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.DONE, document.last_error
    assert "redated" in timeline(document)
    ours = next(d for d in sandbox.documents() if d["id"] == draft_id)
    assert ours["status"] == "settled"
    assert ours["document"]["date"] == today.strftime("%d/%m/%Y")
    assert ours["document"]["client"]["name"] != "X"  # the whole draft was sent again, not just its date


def test_a_stores_own_settings_decide_its_documents(app, sandbox, post_order, queue):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["stores", "set", "test-store.myshopify.com", "document_type=invoice"])
    assert result.exit_code == 0, result.output
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    assert the_document().state == DocumentState.DONE
    [ix] = sandbox.documents()
    assert ix["type"] == "Invoice"
    assert ix["status"] == "final"


def test_a_store_setting_with_a_bad_value_is_refused(app):
    result = app.test_cli_runner().invoke(args=["stores", "set", "x.myshopify.com", "invalid_tax_id=maybe"])
    assert result.exit_code != 0
    assert "invalid_tax_id must be one of consumer, hold" in result.output
    result = app.test_cli_runner().invoke(args=["stores", "set", "x.myshopify.com", "colour=blue"])
    assert "colour is not a store setting" in result.output


def test_ix_rate_limiting_is_waited_out_and_not_counted_as_a_failed_attempt(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="status", status=429, retry_after=7,
                  times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.PENDING
    assert document.attempts == 0
    assert (document.next_attempt_at.replace(tzinfo=None) - utcnow().replace(tzinfo=None)).total_seconds() > 6
    run_scheduled_now(queue)
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert len(sandbox.documents()) == 1


def test_two_documents_at_ix_for_one_order_are_left_to_a_person(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="after", status=500, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    # Someone issued the same order by hand meanwhile (same reference, client and total).
    [ix] = sandbox.documents()
    copy = {key: ix["document"][key] for key in ("date", "due_date", "reference")}
    copy["client"] = {"name": ix["document"]["client"]["name"], "code": ix["document"]["client"]["code"]}
    copy["items"] = [{"name": i["name"], "description": i["description"], "unit_price": i["unit_price"],
                      "quantity": i["quantity"], "tax": {"name": i["tax"]["name"]}}
                     for i in ix["document"]["items"]]
    requests.post(f"{sandbox.url}/invoice_receipts.json", params={"api_key": API_KEY}, json={"invoice": copy},
                  timeout=5).raise_for_status()

    run_scheduled_now(queue)
    drain(queue)
    document = the_document()
    assert document.state == DocumentState.FAILED
    assert "2 documents at InvoiceXpress match" in document.last_error


def test_failed_jobs_of_recovered_work_leave_the_failed_registry(app, sandbox, post_order, queue):
    from rq.registry import FailedJobRegistry

    real_factory = app.extensions["invoicexpress"]

    class Broken:
        base_url = "https://acme.app.invoicexpress.com"

        def __init__(self, store=None):
            pass

        def list_taxes(self):
            raise RuntimeError("boom")

    app.extensions["invoicexpress"] = Broken
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    failed = FailedJobRegistry(queue=queue)
    assert len(failed.get_job_ids()) == 1

    app.extensions["invoicexpress"] = real_factory
    document = the_document()
    document.next_attempt_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    jobs.sweep()
    drain(queue)
    assert the_document().state == DocumentState.DONE
    jobs.sweep()
    assert failed.get_job_ids() == []


def without_email(name: str) -> bytes:
    """The order as a shop sends it when the customer left no e-mail (a counter sale, a phone order)."""
    order = json.loads(fixture_body(name))
    order["email"] = order["contact_email"] = None
    order["customer"]["email"] = None
    return json.dumps(order).encode()


def test_an_order_without_an_email_is_issued_and_final_and_says_it_was_not_emailed(sandbox, post_order, queue):
    post_order(without_email("paid_b2c_tax_included.json"))
    drain(queue)

    document = the_document()
    assert document.state == DocumentState.DONE
    assert document.last_error is None
    assert document.attempts == 1  # no retry loop over the missing address
    [ix] = sandbox.documents()
    assert ix["status"] == "settled"
    assert ix["emails"] == []
    assert not ix["document"]["client"].get("email")
    messages = [e.message for e in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id))]
    assert "emailed: Not e-mailed: the order has no e-mail address." in messages
    calls = sandbox.calls()
    assert not any("email-document" in call for call in calls)
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []


def test_the_credit_note_of_an_order_without_an_email_is_final_and_not_emailed(sandbox, post_order, queue):
    post_order(without_email("paid_b2c_tax_included.json"))
    post_order(fixture_body("refund_partial_one_line.json"), topic="refunds/create")
    drain(queue)

    states = {d.doc_type: d.state for d in db.session.scalars(sa.select(Document))}
    assert states == {"invoice_receipts": DocumentState.DONE, "credit_notes": DocumentState.DONE}
    [credit] = [d for d in sandbox.documents() if d["type"] == "CreditNote"]
    assert credit["status"] == "final"
    assert credit["emails"] == []
    assert not any("email-document" in call for call in sandbox.calls())


def test_the_sweeper_leaves_a_job_waiting_in_redis_alone_and_queues_a_lost_one_again(sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    [event] = db.session.scalars(sa.select(WebhookEvent)).all()
    event.received_at = utcnow() - timedelta(hours=1)  # long enough ago that its job looks late
    db.session.commit()
    assert jobs.sweep() == {"events": 0, "documents": 0}  # its job is still queued
    assert queue.count == 1

    SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)  # the event only
    document = the_document()
    assert document.state == DocumentState.PENDING and document.next_attempt_at is None  # due now
    assert jobs.sweep() == {"events": 0, "documents": 0}  # but its job is queued
    assert queue.job_ids == [document.job_id]

    queue.fetch_job(document.job_id).delete()  # the job is lost (evicted, or Redis restored from a backup)
    assert jobs.sweep() == {"events": 0, "documents": 1}
    assert len(queue.job_ids) == 1
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert sandbox.calls()["POST /invoice_receipts.json"] == 1


def test_the_sweeper_leaves_a_scheduled_retry_alone_even_when_it_is_late(sandbox, post_order, queue):
    sandbox.fault(method="POST", path="/invoice_receipts.json", kind="status", status=503, times=1)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    document = the_document()
    document.next_attempt_at = utcnow() - timedelta(minutes=1)  # the scheduler has not moved it yet
    db.session.commit()

    assert jobs.sweep()["documents"] == 0
    assert queue.count == 0
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == [the_document().job_id]
    run_scheduled_now(queue)
    drain(queue)
    assert the_document().state == DocumentState.DONE
    assert sandbox.calls()["POST /invoice_receipts.json"] == 2  # the refused one and the retry, no more
