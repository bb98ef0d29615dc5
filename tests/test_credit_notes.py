"""Refunds and cancellations against the IX sandbox: the right credit note once, or nothing, never twice."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from rq import SimpleWorker
from rq.registry import FailedJobRegistry, ScheduledJobRegistry

from connector import issuing, jobs
from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, WebhookEvent, utcnow
from connector.platforms import shopify
from connector.platforms.common import PlatformRefused, PlatformUnavailable
from tests.conftest import drain, fixture_body, run_scheduled_now


@pytest.fixture
def refund(post_order):
    def post(name: str, **kwargs):
        return post_order(fixture_body(name), topic="refunds/create", **kwargs)

    return post


def documents() -> dict[str, Document]:
    return {d.source_key: d for d in db.session.scalars(sa.select(Document).order_by(Document.id))}


def ix(sandbox, type_name: str) -> list[dict]:
    return [d for d in sandbox.documents() if d["type"] == type_name]


def issue(post_order, queue, name: str) -> None:
    post_order(fixture_body(name))
    drain(queue)


@pytest.mark.parametrize(("order", "refund_file", "total", "items"), [
    ("paid_b2c_tax_included.json", "refund_full_b2c.json", "59.86", None),
    ("paid_b2c_tax_included.json", "refund_partial_one_line.json", "9.99", [("CAN-CER-01", 1, "IVA23")]),
    ("paid_madeira.json", "refund_shipping_only.json", "7.90", [("shipping", 1, "IVA22")]),
    ("paid_mixed_rates.json", "refund_mixed_rates.json", "24.50", None),
    ("paid_tax_excluded.json", "refund_tax_excluded.json", "61.50", None),
    ("paid_with_discount_and_nif.json", "refund_amount_only.json", "10.00", None),
    ("paid_b2b_nif_in_company.json", "refund_with_restocking_fee.json", "147.00", None),
])
def test_a_refund_becomes_one_final_emailed_credit_note_on_its_invoice(sandbox, post_order, queue, refund,
                                                                       order, refund_file, total, items):
    issue(post_order, queue, order)
    refund(refund_file)
    drain(queue)

    [invoice] = [d for d in sandbox.documents() if d["type"] in ("InvoiceReceipt", "Invoice")]
    [credit] = ix(sandbox, "CreditNote")
    assert credit["status"] == "final"
    assert credit["document"]["owner_invoice_id"] == invoice["id"]
    assert Decimal(str(credit["totals"]["total"])) == Decimal(total)
    assert len(credit["emails"]) == 1
    if items is not None:
        assert [(i["name"], int(float(i["quantity"])), i["tax"]["name"]) for i in credit["document"]["items"]] \
            == items
    note = next(d for key, d in documents().items() if key.startswith("refund:"))
    assert note.state == DocumentState.DONE
    assert note.original.ix_id == invoice["id"]


def test_mixed_rates_are_credited_at_each_lines_rate(sandbox, post_order, queue, refund):
    issue(post_order, queue, "paid_mixed_rates.json")
    refund("refund_mixed_rates.json")
    drain(queue)
    [credit] = ix(sandbox, "CreditNote")
    assert {i["tax"]["name"] for i in credit["document"]["items"]} == {"IVA6", "IVA23"}


def test_a_refund_delivered_twice_gives_one_credit_note(sandbox, post_order, queue, refund):
    issue(post_order, queue, "paid_b2c_tax_included.json")
    refund("refund_partial_one_line.json", event_id="delivery-1")
    refund("refund_partial_one_line.json", event_id="delivery-2")  # another subscription, same refund
    drain(queue)

    assert len(db.session.scalars(sa.select(WebhookEvent)).all()) == 3
    assert len(ix(sandbox, "CreditNote")) == 1


def test_a_refund_arriving_before_the_invoice_waits_for_it(sandbox, post_order, queue, refund):
    refund("refund_partial_one_line.json")
    drain(queue)
    [note] = documents().values()
    assert note.state == DocumentState.PENDING
    assert note.last_error == "Waiting for the order's invoice to be issued."
    assert note.attempts == 0  # waiting is not failing
    assert sandbox.documents() == []

    issue(post_order, queue, "paid_b2c_tax_included.json")
    run_scheduled_now(queue)
    drain(queue)
    states = {key: d.state for key, d in documents().items()}
    assert set(states.values()) == {DocumentState.DONE}
    assert len(ix(sandbox, "CreditNote")) == 1


def test_credits_never_exceed_the_invoice(sandbox, post_order, queue, refund):
    issue(post_order, queue, "paid_b2c_tax_included.json")
    refund("refund_full_b2c.json")
    drain(queue)
    refund("refund_partial_one_line.json")  # a second refund after everything was given back
    drain(queue)

    held = documents()["refund:1012345678003:credit_note"]
    assert held.state == DocumentState.HELD
    assert "left to credit" in held.last_error
    credits = ix(sandbox, "CreditNote")
    invoice_total = Decimal("59.86")
    assert sum(Decimal(str(c["totals"]["total"])) for c in credits) <= invoice_total
    assert len(credits) == 1


def test_an_order_cancelled_before_payment_is_never_invoiced(sandbox, post_order, queue):
    post_order(fixture_body("cancelled_unpaid.json"), topic="orders/cancelled")
    drain(queue)
    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    # The same order's payment arriving late (or replayed): paid, so on its own it would be invoiced.
    paid = fixture_body("authorized_not_paid.json").replace(b'"financial_status": "authorized"',
                                                            b'"financial_status": "paid"')
    assert paid != fixture_body("authorized_not_paid.json")
    post_order(paid)
    drain(queue)
    assert sandbox.documents() == []
    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    [_, payment] = db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)).all()
    assert payment.note == f"Document {sale.id} already covers this order."


def test_a_cancellation_deletes_a_draft_instead_of_finalizing_it(sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=503, times=1)
    issue(post_order, queue, "paid_b2c_tax_included.json")
    [sale] = documents().values()
    assert sale.state == DocumentState.CREATED

    cancelled = fixture_body("paid_b2c_tax_included.json").replace(b'"financial_status": "paid"',
                                                                   b'"financial_status": "refunded"')
    post_order(cancelled, topic="orders/cancelled")
    drain(queue)
    run_scheduled_now(queue)  # the finalize retry that was waiting
    drain(queue)

    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    [draft] = sandbox.documents()
    assert draft["status"] == "deleted"


def test_a_cancellation_after_the_invoice_credits_its_refund_once_however_often_it_is_seen(
        sandbox, post_order, queue):
    issue(post_order, queue, "paid_foreign_customer.json")
    cancelled = json.loads(fixture_body("cancelled_after_payment.json"))
    post_order(json.dumps(cancelled).encode(), topic="orders/cancelled")
    drain(queue)
    # The same refund arrives again: in refunds/create, and in a second cancellation delivery.
    refund_body = {**cancelled["refunds"][0], "order_id": cancelled["id"]}
    post_order(json.dumps(refund_body).encode(), topic="refunds/create")
    post_order(json.dumps(cancelled).encode(), topic="orders/cancelled")
    drain(queue)

    sale = documents()["order:5801234567005:receipt"]
    assert sale.state == DocumentState.DONE  # a final invoice stays; its refund is credited
    [credit] = ix(sandbox, "CreditNote")
    assert Decimal(str(credit["totals"]["total"])) == Decimal("64.30")
    assert credit["status"] == "final"
    [event, *_] = db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.topic == "orders/cancelled")).all()
    assert "refund becomes a credit note" in event.note


def cancelled_refunded(name: str = "paid_b2c_tax_included.json") -> bytes:
    """The orders/cancelled delivery of a paid order whose money was given back."""
    return fixture_body(name).replace(b'"financial_status": "paid"', b'"financial_status": "refunded"')


def timeline(document: Document) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id))]


@pytest.mark.parametrize("state", [DocumentState.FAILED, DocumentState.HELD])
def test_cancelling_a_failed_or_held_sale_deletes_its_draft_at_ix(sandbox, post_order, queue, state):
    # IX refuses the finalize for good: the document fails, its draft stays at IX.
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=422, times=1)
    issue(post_order, queue, "paid_b2c_tax_included.json")
    [sale] = documents().values()
    assert sale.state == DocumentState.FAILED
    sale.state = state  # a held one (put aside by a person) is cancelled the same way
    db.session.commit()
    [draft] = sandbox.documents()
    assert draft["status"] == "draft"

    post_order(cancelled_refunded(), topic="orders/cancelled")
    drain(queue)

    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    [draft] = sandbox.documents()
    assert draft["status"] == "deleted"
    assert timeline(sale)[-1] == ("canceled", "The order was cancelled before its document was final: "
                                              "the draft was deleted.")
    assert sale.last_error == timeline(sale)[-1][1]  # not the refusal it failed with


def test_a_cancellation_of_a_draft_ix_finalized_unseen_leaves_the_invoice_standing(sandbox, post_order, queue):
    # The finalize reached IX but its answer was lost: our row says draft, IX has it settled.
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="after",
                  status=500, times=1)
    issue(post_order, queue, "paid_b2c_tax_included.json")
    [sale] = documents().values()
    assert sale.state == DocumentState.CREATED

    post_order(cancelled_refunded(), topic="orders/cancelled")
    drain(queue)
    assert FailedJobRegistry(queue=queue).get_job_ids() == []  # IX's refusal to delete is understood
    [sale] = documents().values()
    assert sale.state == DocumentState.CREATED
    assert "settled at InvoiceXpress, no draft: it is left as it is" in timeline(sale)[-1][1]

    run_scheduled_now(queue)  # the finalize retry that was waiting resumes from what IX has
    drain(queue)
    [sale] = documents().values()
    assert sale.state == DocumentState.DONE
    [invoice] = sandbox.documents()
    assert invoice["status"] == "settled"
    assert len(invoice["emails"]) == 1


def cancel_while_finalizing(app, post_order, queue, body: bytes) -> list[int]:
    """Have the order's cancellation delivered, and its job run by another worker, while this worker
    holds the document and is about to finalize it."""
    real_factory = app.extensions["invoicexpress"]
    arrived = []

    def factory(store=None):
        client = real_factory(store)
        change_state = client.change_state

        def change_state_with_cancellation(doc_type, document_id, state, message=None):
            if state == "finalized" and not arrived:
                arrived.append(post_order(body, topic="orders/cancelled").status_code)
                with app.app_context():  # another worker: its own session
                    SimpleWorker([queue], connection=queue.connection).work(burst=True, max_jobs=1)
            return change_state(doc_type, document_id, state, message)

        client.change_state = change_state_with_cancellation
        return client

    app.extensions["invoicexpress"] = factory
    return arrived


def cancellation() -> WebhookEvent:
    return db.session.scalar(sa.select(WebhookEvent).where(WebhookEvent.topic == "orders/cancelled"))


def sweep_the_cancellation_again(queue) -> None:
    """The sweeper's next round, one interval after the cancellation arrived."""
    event = cancellation()
    event.received_at = utcnow() - timedelta(minutes=5)
    db.session.commit()
    assert jobs.sweep()["events"] == 1
    drain(queue)


def test_a_cancellation_while_a_worker_finalizes_waits_and_then_credits_the_invoice_once(
        app, sandbox, post_order, queue):
    arrived = cancel_while_finalizing(app, post_order, queue, fixture_body("cancelled_after_payment.json"))
    issue(post_order, queue, "paid_foreign_customer.json")
    assert arrived == [200]

    # The worker finished the invoice; the cancellation, refused the document meanwhile, is kept.
    [sale] = documents().values()
    assert sale.state == DocumentState.DONE
    assert cancellation().status == EventStatus.RECEIVED
    assert FailedJobRegistry(queue=queue).get_job_ids() == [f"event-{cancellation().id}"]
    assert [d["type"] for d in sandbox.documents()] == ["InvoiceReceipt"]

    sweep_the_cancellation_again(queue)
    sale = documents()["order:5801234567005:receipt"]
    assert sale.state == DocumentState.DONE
    [invoice] = ix(sandbox, "InvoiceReceipt")
    assert invoice["status"] == "settled"  # the invoice stands; its refund is credited once
    [credit] = ix(sandbox, "CreditNote")
    assert credit["status"] == "final"
    assert Decimal(str(credit["totals"]["total"])) == Decimal("64.30")
    assert cancellation().status == EventStatus.PROCESSED
    jobs.sweep()
    assert FailedJobRegistry(queue=queue).get_job_ids() == []  # the refused try no longer needs a look


def test_a_cancellation_while_a_worker_finalizes_a_draft_that_then_fails_deletes_the_draft(
        app, sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=503, times=1)
    arrived = cancel_while_finalizing(app, post_order, queue, cancelled_refunded())
    issue(post_order, queue, "paid_b2c_tax_included.json")
    assert arrived == [200]
    [sale] = documents().values()
    assert sale.state == DocumentState.CREATED
    assert cancellation().status == EventStatus.RECEIVED
    assert FailedJobRegistry(queue=queue).get_job_ids() == [f"event-{cancellation().id}"]

    sweep_the_cancellation_again(queue)
    run_scheduled_now(queue)  # the finalize retry comes after the cancellation
    drain(queue)

    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    [draft] = sandbox.documents()
    assert draft["status"] == "deleted"
    assert draft["sequence_number"] == "rascunho"  # never numbered
    assert cancellation().status == EventStatus.PROCESSED


def test_the_refund_of_an_order_cancelled_while_its_invoice_was_a_draft_credits_nothing(
        sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=503, times=1)
    issue(post_order, queue, "paid_foreign_customer.json")
    post_order(fixture_body("cancelled_after_payment.json"), topic="orders/cancelled")  # carries its refund
    drain(queue)
    run_scheduled_now(queue)
    drain(queue)

    sale, note = documents().values()
    assert (sale.state, note.state) == (DocumentState.CANCELED, DocumentState.CANCELED)
    assert timeline(note)[-1] == ("canceled", "The order's invoice was cancelled before it was issued: "
                                              "there is nothing to credit.")
    assert [(d["type"], d["status"]) for d in sandbox.documents()] == [("InvoiceReceipt", "deleted")]


def test_a_refund_waiting_for_an_invoice_the_cancellation_ruled_out_is_cancelled(sandbox, post_order, queue,
                                                                                  refund):
    refund("refund_partial_one_line.json")  # ahead of everything: it waits for the invoice
    drain(queue)
    post_order(cancelled_refunded(), topic="orders/cancelled")  # the order never invoiced
    drain(queue)
    run_scheduled_now(queue)  # the credit note looks again
    drain(queue)

    note = documents()["refund:1012345678003:credit_note"]
    assert note.state == DocumentState.CANCELED
    # What the documents list shows as its reason is why it is cancelled, not the wait it ended.
    assert note.last_error == "The order's invoice was cancelled before it was issued: there is nothing to credit."
    assert timeline(note)[-1] == ("canceled", note.last_error)
    assert sandbox.documents() == []


@pytest.fixture
def clock(monkeypatch):
    """The connector's clock, moved forward by the test instead of by sleeping."""

    class Clock:
        ahead = timedelta(0)

        def now(self):
            return real_now() + self.ahead

    real_now = issuing.utcnow
    controlled = Clock()
    monkeypatch.setattr(issuing, "utcnow", controlled.now)
    return controlled


def test_a_credit_note_whose_invoice_never_comes_asks_a_person_after_a_week(sandbox, post_order, queue,
                                                                            refund, clock):
    refund("refund_partial_one_line.json")
    drain(queue)
    clock.ahead = timedelta(days=6, hours=23)
    run_scheduled_now(queue)
    drain(queue)
    [note] = documents().values()
    assert note.state == DocumentState.PENDING  # still waiting, and said once
    assert [kind for kind, _ in timeline(note)].count("waiting") == 1

    clock.ahead = timedelta(days=7, minutes=1)
    run_scheduled_now(queue)
    drain(queue)
    [note] = documents().values()
    assert note.state == DocumentState.HELD
    assert note.last_error == ("The order's invoice has not been issued by the connector in a week; issue or "
                               "credit it by hand.")
    assert note.attempts == 0  # waiting was never a failed attempt
    assert sandbox.documents() == []
    # Held: neither its own schedule nor the sweeper tries it again.
    assert ScheduledJobRegistry(queue=queue).get_job_ids() == []
    assert jobs.sweep()["documents"] == 0
    assert queue.count == 0


def test_a_draft_deletion_ix_did_but_answered_500_is_settled_on_the_next_try(sandbox, post_order, queue):
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="status",
                  status=503, times=1)
    issue(post_order, queue, "paid_b2c_tax_included.json")
    sandbox.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state.json", regex=True, kind="after",
                  status=500, times=1)
    post_order(cancelled_refunded(), topic="orders/cancelled")
    drain(queue)
    [sale] = documents().values()
    assert sale.state == DocumentState.CREATED  # we did not hear of the deletion
    assert [d["status"] for d in sandbox.documents()] == ["deleted"]
    sale.locked_until = utcnow() - timedelta(seconds=1)  # the failed try's lease runs out
    db.session.commit()

    sweep_the_cancellation_again(queue)  # IX now refuses to delete it again: it is deleted already
    run_scheduled_now(queue)
    drain(queue)

    [sale] = documents().values()
    assert sale.state == DocumentState.CANCELED
    assert timeline(sale)[-1] == ("canceled", "The order was cancelled before its document was final: "
                                              "the draft was deleted.")
    assert cancellation().status == EventStatus.PROCESSED
    jobs.sweep()
    assert FailedJobRegistry(queue=queue).get_job_ids() == []


# --- a refund's source: read once by the worker, kept on its credit note -------------------------------


def test_a_credit_notes_refund_is_read_once_and_kept_with_it(sandbox, post_order, queue, refund, monkeypatch):
    issue(post_order, queue, "paid_b2c_tax_included.json")
    refund("refund_partial_one_line.json")
    drain(queue)

    [note] = [d for key, d in documents().items() if key.startswith("refund:")]
    assert note.state == DocumentState.DONE
    timeline = [e.kind for e in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == note.id).order_by(DocumentEvent.id))]
    # Planned when the event came, read when it was issued, once.
    assert timeline.index("planned") < timeline.index("snapshot") and timeline.count("snapshot") == 1
    assert json.loads(note.snapshot) == json.loads(fixture_body("refund_partial_one_line.json"))
    assert note.total == "9.99"
    # A later plan (a re-dated draft, say) reads the stored source, never the platform again.
    monkeypatch.setattr(shopify, "snapshot", lambda *args: pytest.fail("the platform was asked again"))
    assert issuing.plan_document(note).expected_total == Decimal("9.99")


def test_a_platform_api_that_does_not_answer_is_retried_like_invoicexpress(sandbox, post_order, queue, refund,
                                                                          monkeypatch):
    issue(post_order, queue, "paid_b2c_tax_included.json")
    real_snapshot, calls = shopify.snapshot, []

    def unavailable_twice(change, payload, api):
        calls.append(change.refund_id)
        if len(calls) <= 2:
            raise PlatformUnavailable("timed out")
        return real_snapshot(change, payload, api)

    monkeypatch.setattr(shopify, "snapshot", unavailable_twice)
    refund("refund_partial_one_line.json")
    drain(queue)
    [note] = [d for key, d in documents().items() if key.startswith("refund:")]
    assert note.state == DocumentState.PENDING
    assert "Shopify did not answer properly (timed out)" in note.last_error
    assert sandbox.documents() and not ix(sandbox, "CreditNote")

    for _ in range(2):
        run_scheduled_now(queue)
        drain(queue)

    db.session.expire_all()
    note = db.session.get(Document, note.id)
    assert note.state == DocumentState.DONE
    assert len(calls) == 3
    assert len(ix(sandbox, "CreditNote")) == 1
    assert db.session.get(WebhookEvent, note.event_id).status == EventStatus.PROCESSED


def test_a_refund_the_platform_refuses_to_show_fails_its_credit_note_saying_so(sandbox, post_order, queue,
                                                                               refund, monkeypatch):
    issue(post_order, queue, "paid_b2c_tax_included.json")

    def refused(change, payload, api):
        raise PlatformRefused("403 Forbidden")

    monkeypatch.setattr(shopify, "snapshot", refused)
    refund("refund_partial_one_line.json")
    drain(queue)

    [note] = [d for key, d in documents().items() if key.startswith("refund:")]
    assert note.state == DocumentState.FAILED
    assert "refused" in note.last_error and "403 Forbidden" in note.last_error
    assert not ix(sandbox, "CreditNote")
