"""End to end on real parts: PostgreSQL, Redis, gunicorn, an RQ worker process and the IX sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.integration import services

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"
SECRET = "integration-shopify-secret"
API_KEY = "integration-ix-key"


class Connector:
    """The running connector and the sandbox it issues to, as a user would see them."""

    def __init__(self, procs, env: dict[str, str], web_port: int, sandbox_url: str):
        self.procs = procs
        self.env = env
        self.url = f"http://127.0.0.1:{web_port}"
        self.sandbox_url = sandbox_url
        self.engine = sa.create_engine(env["DATABASE_URL"], poolclass=sa.pool.NullPool)
        self.worker = None

    def start_worker(self):
        argv = [sys.executable, "-m", "flask", "--app", "wsgi", "worker"]
        self.worker = self.procs("worker", argv, env=self.env)
        self.worker.wait_for_log(r"Listening on", timeout=30)
        return self.worker

    def post(self, body: bytes, event_id: str | None = None, secret: str = SECRET, topic="orders/paid"):
        digest = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
        headers = {
            "Content-Type": "application/json", "X-Shopify-Topic": topic, "X-Shopify-Hmac-Sha256": digest,
            "X-Shopify-Shop-Domain": "integration.myshopify.com",
            "X-Shopify-Event-Id": event_id or str(uuid.uuid4()), "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        }
        return requests.post(f"{self.url}/webhooks/shopify", data=body, headers=headers, timeout=10)

    def rows(self, sql: str) -> list:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql)))

    def ix_documents(self) -> list[dict]:
        return requests.get(f"{self.sandbox_url}/_sandbox/documents", timeout=5).json()

    def fault(self, **rule) -> None:
        requests.post(f"{self.sandbox_url}/_sandbox/faults", json=[rule], timeout=5).raise_for_status()

    def wait_until(self, condition, timeout: float = 60, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.2)
        logs = self.worker.output(6000) if self.worker else ""
        raise AssertionError(f"timed out waiting for {what}; documents={self.rows('SELECT * FROM documents')}"
                             f"\nworker log:\n{logs}")

    def settled_and_emailed(self):
        documents = self.ix_documents()
        return documents if documents and all(
            d["status"] == "settled" and d["emails"] for d in documents) else None


@pytest.fixture
def connector(clean_db, clean_redis, procs):
    sandbox_port, web_port = services.free_port(), services.free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    env = {
        "DATABASE_URL": clean_db, "REDIS_URL": clean_redis, "SHOPIFY_WEBHOOK_SECRET": SECRET,
        "INVOICEXPRESS_API_KEY": API_KEY, "INVOICEXPRESS_BASE_URL": sandbox_url,
        "DOCUMENT_LEASE_SECONDS": "4", "SWEEP_INTERVAL_SECONDS": "2", "LOG_LEVEL": "INFO",
    }
    sandbox = procs("sandbox", [sys.executable, "-m", "connector.invoicexpress.sandbox", "--host", "127.0.0.1",
                                "--port", str(sandbox_port), "--api-key", API_KEY])
    sandbox.wait_for_http(f"{sandbox_url}/_sandbox/documents", timeout=20)
    upgrade = procs("migrate", [sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], env=env)
    assert upgrade.wait(timeout=60) == 0, upgrade.output()
    web = procs("web", [services.bin_path("gunicorn"), "wsgi:app", "--bind", f"127.0.0.1:{web_port}",
                        "--workers", "2"], env=env)
    web.wait_for_http(f"http://127.0.0.1:{web_port}/healthz", timeout=30)
    running = Connector(procs, env, web_port, sandbox_url)
    running.start_worker()
    yield running
    running.engine.dispose()


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
    connector.worker.kill(signal.SIGKILL)
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
