"""End to end on real parts: PostgreSQL, Redis, gunicorn, an RQ worker process and the IX sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.integration import conftest, services

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"


def test_a_signed_order_becomes_one_settled_emailed_document(connector):
    answer = connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    assert answer.status_code == 200

    [document] = connector.wait_until(connector.settled_and_emailed, what="a settled, e-mailed document")
    assert document["type"] == "InvoiceReceipt"
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
    assert requests.get(f"{connector.url}/healthz", timeout=5).json()["database"] == "ok"


def test_one_event_sent_five_times_some_at_once_yields_one_document(connector):
    body = (FIXTURES / "paid_with_discount_and_nif.json").read_bytes()
    first = connector.post(body, event_id="evt-five")
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda _: connector.post(body, event_id="evt-five"), range(4)))

    assert first.status_code == 200
    assert [a.status_code for a in answers] == [200] * 4
    connector.wait_until(connector.settled_and_emailed, what="a settled document")
    time.sleep(3)  # give any duplicate the time to appear (one sweep and more)
    assert len(connector.ix_documents()) == 1
    assert connector.rows("SELECT count(*) FROM webhook_events") == [(1,)]
    assert connector.rows("SELECT count(*) FROM documents") == [(1,)]


def test_a_worker_killed_between_create_and_finalize_still_yields_one_finalized_document(connector):
    # IX holds the finalize call long enough for the worker to die waiting for it.
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="delay",
                    seconds=3, times=1)
    connector.post((FIXTURES / "paid_b2c_tax_included.json").read_bytes())
    connector.wait_until(lambda: [d for d in connector.ix_documents() if d["status"] == "draft"],
                         what="the draft to be created")
    connector.worker.wait_for_log(r"created", timeout=10)
    time.sleep(0.5)  # the finalize request is now in flight
    services.kill_like_a_crash(connector.worker)  # the worker and the job it was running
    assert connector.rows("SELECT state FROM documents") == [("created",)]

    connector.start_worker()
    [document] = connector.wait_until(connector.settled_and_emailed, timeout=60,
                                      what="the document to be finalized after the restart")
    assert len(document["emails"]) == 1
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("done",)], what="done")
    assert len(connector.ix_documents()) == 1


def test_a_bad_signature_gets_401_and_no_row(connector):
    body = (FIXTURES / "paid_b2c_tax_included.json").read_bytes()
    answer = connector.post(body, secret="wrong-secret")
    assert answer.status_code == 401
    assert connector.rows("SELECT count(*) FROM webhook_events") == [(0,)]
    assert connector.ix_documents() == []


def test_first_webhooks_of_a_new_store_arriving_at_once_are_all_stored_under_one_store(connector):
    body = (FIXTURES / "paid_b2c_tax_included.json").read_bytes()
    secret = conftest.SECRET.encode()
    digest = base64.b64encode(hmac.new(secret, body, hashlib.sha256).digest()).decode()

    def post(domain: str, event: int):
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/paid",
                   "X-Shopify-Hmac-Sha256": digest, "X-Shopify-Shop-Domain": domain,
                   "X-Shopify-Event-Id": f"{domain}-{event}"}
        return requests.post(f"{connector.url}/webhooks/shopify", data=body, headers=headers, timeout=20)

    domains = [f"new-{n}.myshopify.com" for n in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        for domain in domains:  # each store's first webhooks, six at once
            answers = list(pool.map(lambda event, domain=domain: post(domain, event), range(6)))
            assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]

    assert connector.rows("SELECT domain, count(*) FROM stores GROUP BY domain ORDER BY domain") == [
        (domain, 1) for domain in domains]
    assert connector.rows("SELECT count(*) FROM webhook_events") == [(36,)]
