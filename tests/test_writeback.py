"""Write-back: a done document's number and PDF link land on its shop order exactly once, whatever fails."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import requests
import sqlalchemy as sa
from rq.registry import ScheduledJobRegistry

from connector import create_app, jobs
from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState, utcnow
from connector.platforms.woocommerce.api import WooCommerceAPI
from connector.writeback import WriteBack, WriteBackState
from devtools import serving, shopify_fake, stripe_fake, woocommerce_fake
from tests.conftest import drain, fixture_body, run_scheduled_now, settings, tables_of
from tests.test_webhooks_stripe import INTENT, LINES, SECRET, event, session, signature
from tests.test_webhooks_woocommerce import CONSUMER_KEY, CONSUMER_SECRET, WOO_SECRET, woo_headers, woo_order

SHOPIFY_ORDER = json.loads(fixture_body("paid_b2c_tax_included.json"))
TOKEN = "shpat_test_writeback"


@pytest.fixture(scope="module")
def fakes():
    with (serving.running(shopify_fake.serve_in_thread(access_token=TOKEN)) as shopify_url,
          woocommerce_fake.running(CONSUMER_KEY, CONSUMER_SECRET) as woo_url,
          stripe_fake.running() as stripe_url):
        yield {"shopify": shopify_url, "woocommerce": woo_url, "stripe": stripe_url}


@pytest.fixture
def env_extra() -> dict[str, str]:
    return {}


@pytest.fixture
def app(redis, tmp_path, fakes, env_extra):
    """Shopify, WooCommerce and Stripe on, each platform's API served by its fake (unless a test takes it away)."""
    environ = settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}",
        SHOPIFY_ACCESS_TOKEN=TOKEN, SHOPIFY_API_BASE_URL=fakes["shopify"],
        WOOCOMMERCE_WEBHOOK_SECRET=WOO_SECRET, WOOCOMMERCE_URL=fakes["woocommerce"],
        WOOCOMMERCE_CONSUMER_KEY=CONSUMER_KEY, WOOCOMMERCE_CONSUMER_SECRET=CONSUMER_SECRET,
        WOOCOMMERCE_READ_TIMEOUT="1",
        STRIPE_WEBHOOK_SECRET=SECRET, STRIPE_API_KEY=stripe_fake.DEFAULT_KEY, STRIPE_API_BASE_URL=fakes["stripe"],
        STRIPE_READ_TIMEOUT="1",
    )
    environ.update(env_extra)
    environ = {k: v for k, v in environ.items() if v != ""}
    app = create_app(overrides={"REDIS_CONNECTION": redis}, environ=environ)
    with tables_of(app):
        yield app


@pytest.fixture
def shopify(fakes):
    fake = serving.ControlClient(fakes["shopify"].removesuffix(shopify_fake.API))
    fake.reset()
    return fake


@pytest.fixture
def woo(fakes):
    fake = woocommerce_fake.Control(fakes["woocommerce"], CONSUMER_KEY, CONSUMER_SECRET)
    fake.reset()
    return fake


@pytest.fixture
def stripe(fakes):
    fake = stripe_fake.Control(fakes["stripe"])
    fake.reset()
    return fake


def settle(queue, rounds: int = 10) -> None:
    """Run every job, and every retry it schedules, as a worker with its scheduler would, until none is left."""
    for _ in range(rounds):
        drain(queue)
        if not ScheduledJobRegistry(queue=queue).get_job_ids():
            return
        run_scheduled_now(queue)
    raise AssertionError("jobs still scheduled after many rounds")


def sweep_now(queue) -> None:
    """What the sweeper does once a stalled write-back's next attempt is due."""
    db.session.execute(sa.update(WriteBack).values(next_attempt_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    jobs.sweep()
    settle(queue)


def the_document() -> Document:
    [document] = db.session.scalars(sa.select(Document)).all()
    return document


def the_write_back() -> WriteBack:
    db.session.expire_all()
    [row] = db.session.scalars(sa.select(WriteBack)).all()
    return row


def calls(fake, method: str, part: str) -> list[dict]:
    return [c for c in fake.calls() if c["method"] == method and part in c["path"]]


# --- Shopify ---------------------------------------------------------------------------------------------------


def put_shopify_order(shopify) -> None:
    order = {**SHOPIFY_ORDER, "tags": "vip, gift", "note_attributes": [{"name": "gift_wrap", "value": "não"}]}
    requests.post(f"{shopify.url}/_fake/orders", json=order, timeout=5).raise_for_status()


def shopify_order(shopify) -> dict:
    answer = requests.get(f"{shopify.url}{shopify_fake.API}/orders/{SHOPIFY_ORDER['id']}.json",
                          headers={"X-Shopify-Access-Token": TOKEN}, timeout=5)
    answer.raise_for_status()
    return answer.json()["order"]


def test_shopify_gets_the_number_and_pdf_once_after_the_pdf_is_ready_keeping_its_tags_and_attributes(
        sandbox, post_order, queue, shopify):
    put_shopify_order(shopify)
    shopify.faults({"method": "PUT", "path": r"orders/\d+\.json", "kind": "500", "times": 1})
    post_order(fixture_body("paid_b2c_tax_included.json"))
    settle(queue)

    document, row = the_document(), the_write_back()
    assert document.state == DocumentState.DONE
    assert row.state == WriteBackState.DONE, row.last_error
    order = shopify_order(shopify)
    number = document.sequence_number
    assert order["tags"] == f"vip, gift, IX {number}"
    assert order["note_attributes"] == [{"name": "gift_wrap", "value": "não"},
                                        {"name": f"Invoice {number}", "value": row.pdf_url}]
    assert row.pdf_url.endswith(f"/_sandbox/documents/{document.ix_id}.pdf")
    assert requests.get(row.pdf_url, timeout=5).content.startswith(b"%PDF")
    # IX answered 202 first, then 200 with the address.
    assert sandbox.calls()["GET /api/pdf/{id}.json"] == 2
    assert len(calls(shopify, "PUT", "orders/")) == 2  # the 500, then the one that landed

    # Run again (a replay, a second worker): the order already says it all, nothing more is sent.
    db.session.execute(sa.update(WriteBack).values(state=WriteBackState.PDF))
    db.session.commit()
    sweep_now(queue)
    assert the_write_back().state == WriteBackState.DONE
    assert len(calls(shopify, "PUT", "orders/")) == 2
    assert shopify_order(shopify)["tags"] == f"vip, gift, IX {number}"


@pytest.mark.parametrize("env_extra", [{"SHOPIFY_ACCESS_TOKEN": ""}])
def test_a_store_without_platform_api_credentials_is_skipped_saying_so(sandbox, post_order, queue, shopify):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    settle(queue)

    row = the_write_back()
    assert the_document().state == DocumentState.DONE
    assert row.state == WriteBackState.SKIPPED
    assert "no Shopify API credentials" in row.last_error and "SHOPIFY_ACCESS_TOKEN" in row.last_error
    assert shopify.calls() == []
    assert "GET /api/pdf/{id}.json" not in sandbox.calls()


def test_a_shop_that_refuses_fails_the_write_back_and_never_the_document(sandbox, post_order, queue, shopify):
    # The order is not in the shop (404): writing cannot succeed, and the invoice stands.
    post_order(fixture_body("paid_b2c_tax_included.json"))
    settle(queue)

    document, row = the_document(), the_write_back()
    assert row.state == WriteBackState.FAILED
    assert "Shopify refused" in row.last_error and "404" in row.last_error
    assert TOKEN not in row.last_error
    assert (document.state, document.last_error) == (DocumentState.DONE, None)
    kinds = [e.kind for e in db.session.scalars(sa.select(DocumentEvent).order_by(DocumentEvent.id))]
    assert kinds[-1] == "write_back"


def test_ix_unavailable_for_the_pdf_is_retried_and_the_document_stays_done(sandbox, post_order, queue, shopify):
    put_shopify_order(shopify)
    sandbox.fault(method="GET", path="/api/pdf/", kind="status", status=503, times=2)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    row = the_write_back()
    assert row.state == WriteBackState.PENDING and "retrying" in row.last_error
    assert the_document().state == DocumentState.DONE

    settle(queue)
    assert the_write_back().state == WriteBackState.DONE
    assert len(calls(shopify, "PUT", "orders/")) == 1


# --- WooCommerce -----------------------------------------------------------------------------------------------


def post_woo_order(client, woo, fakes) -> dict:
    order = woo_order(meta_data=[{"id": 1, "key": "_billing_nif", "value": ""}])
    woo.add_order(order)
    body = json.dumps(order).encode()
    response = client.post("/webhooks/woocommerce", data=body,
                           headers=woo_headers(body, topic="order.updated", source=fakes["woocommerce"] + "/"))
    assert response.status_code == 200
    return order


def test_woocommerce_gets_one_note_and_its_meta_though_the_note_answer_was_lost(
        sandbox, client, queue, woo, fakes):
    # The note is posted, but its answer never comes back in time: the retry must find it, not post another.
    woo.faults({"method": "POST", "path": r"orders/\d+/notes", "kind": "timeout", "seconds": 1.5, "times": 1})
    order = post_woo_order(client, woo, fakes)
    drain(queue)  # issued; IX is still making the PDF
    run_scheduled_now(queue)
    drain(queue)  # the PDF is ready; the note's answer is lost
    assert the_write_back().step is None
    time.sleep(1)
    assert len(woo.notes(order["id"])) == 1  # it landed all the same
    woo.faults({"method": "PUT", "path": r"orders/\d+$", "kind": "503", "times": 1})
    settle(queue)

    document, row = the_document(), the_write_back()
    assert row.state == WriteBackState.DONE, row.last_error
    notes = woo.notes(order["id"])
    assert [n["note"] for n in notes] == [f"InvoiceXpress invoice {document.sequence_number}: {row.pdf_url}"]
    assert notes[0]["customer_note"] is False
    meta = {m["key"]: m["value"] for m in woo.order(order["id"])["meta_data"]}
    assert meta["invoicexpress_invoice_number"] == document.sequence_number
    assert meta["invoicexpress_invoice_pdf"] == row.pdf_url
    assert "_billing_nif" in meta  # the order's own meta is kept


def test_a_crash_between_the_note_and_the_meta_resumes_without_a_second_note(
        sandbox, client, queue, woo, fakes, monkeypatch):
    order = post_woo_order(client, woo, fakes)
    real = WooCommerceAPI.update_order_meta
    crashed = []

    def crash_once(self, *args, **kwargs):
        if not crashed:
            crashed.append(True)
            raise RuntimeError("worker lost")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WooCommerceAPI, "update_order_meta", crash_once)
    settle(queue)
    row = the_write_back()
    assert (row.state, row.step) == (WriteBackState.PDF, "note")

    sweep_now(queue)

    assert the_write_back().state == WriteBackState.DONE
    assert len(woo.notes(order["id"])) == 1
    assert len(calls(woo, "POST", "/notes")) == 1
    assert the_document().state == DocumentState.DONE


# --- Stripe ----------------------------------------------------------------------------------------------------


def test_stripe_gets_metadata_on_the_payment_intent_once_under_500s_and_a_lost_answer(
        sandbox, client, queue, stripe):
    stripe.add_session(session(), LINES)
    stripe.faults({"method": "POST", "path": r"payment_intents/", "kind": "500", "times": 1},
                  {"method": "POST", "path": r"payment_intents/", "kind": "timeout", "seconds": 1.5, "times": 1})
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    response = client.post("/webhooks/stripe", data=body, headers={"Content-Type": "application/json",
                                                                   "Stripe-Signature": signature(body)})
    assert response.status_code == 200
    drain(queue)  # issued; IX is still making the PDF
    for _ in range(2):  # a 500, then an answer that comes too late (the write is done all the same)
        run_scheduled_now(queue)
        drain(queue)
    time.sleep(1)
    assert len(stripe.writes()) == 1
    settle(queue)

    document, row = the_document(), the_write_back()
    assert row.state == WriteBackState.DONE, row.last_error
    metadata = stripe.payment_intent(INTENT)["metadata"]
    assert metadata == {"invoicexpress_number": document.sequence_number, "invoicexpress_pdf": row.pdf_url}
    # Sent three times (a 500, a lost answer, the retry Stripe answered from its idempotency record): done once.
    assert len(calls(stripe, "POST", "payment_intents/")) == 3
    [write] = stripe.writes()
    assert write["idempotency_key"] == f"invoicexpress-writeback-{document.proprietary_uid}"
