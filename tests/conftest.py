"""Shared fixtures for the fast tier: the app on SQLite, the queue on fakeredis, signed requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import fakeredis
import pytest
import requests
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from rq import SimpleWorker
from rq.registry import ScheduledJobRegistry

from connector import create_app
from connector.extensions import db
from connector.issuing import init_invoicexpress
from devtools.invoicexpress_sandbox import serve_in_thread

# Hypothesis: in CI (which sets CI=true) the same examples every run, and a failure prints the blob that
# replays it (@reproduce_failure), so a red build reproduces on a laptop; locally every run explores new
# inputs. No deadline in either: on a busy machine an example's time says nothing about the code.
# HYPOTHESIS_PROFILE picks one explicitly.
# Both start from hypothesis' defaults: it picks a built-in "ci" profile itself whenever a CI variable exists.
hypothesis_settings.register_profile(
    "ci", hypothesis_settings.get_profile("default"), derandomize=True, print_blob=True, deadline=None,
    database=None, suppress_health_check=[HealthCheck.too_slow],
)
hypothesis_settings.register_profile("dev", hypothesis_settings.get_profile("default"), deadline=None)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
)

# pytest-timeout's default (pyproject.toml) suits the unit tier; the integration tier starts servers and
# processes and waits on them, so it gets longer before a hang is called one.
INTEGRATION_TIMEOUT = 900


@pytest.hookimpl(trylast=True)  # after tests/integration/conftest.py has marked its items
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("integration") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT))


FIXTURES = Path(__file__).parent / "fixtures"
SHOPIFY_SECRET = "test-shopify-secret"
STORE = "test-store.myshopify.com"


def settings(**extra: str) -> dict[str, str]:
    """A complete environment for create_app; tests override what they are about."""
    env = {
        "DATABASE_URL": "sqlite://",
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "SHOPIFY_WEBHOOK_SECRET": SHOPIFY_SECRET,
        "INVOICEXPRESS_API_KEY": "test-api-key-0123456789",
        "INVOICEXPRESS_BASE_URL": "http://127.0.0.1:9",
        "LOG_LEVEL": "INFO",
    }
    env.update(extra)
    return env


def fixture_body(name: str) -> bytes:
    return (FIXTURES / "shopify" / name).read_bytes()


def shopify_headers(body: bytes, topic: str = "orders/paid", event_id: str | None = None,
                    secret: str = SHOPIFY_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Hmac-Sha256": base64.b64encode(digest).decode(),
        "X-Shopify-Shop-Domain": STORE,
        "X-Shopify-Event-Id": event_id or str(uuid.uuid4()),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
    }


@pytest.fixture
def redis():
    return fakeredis.FakeStrictRedis()


@contextmanager
def tables_of(app, drop: bool = True):
    """Inside `app`'s context with its tables made; afterwards the session closed, the tables dropped
    (unless the test's database is reset by other means) and the connection pool let go."""
    with app.app_context():
        db.create_all()
        try:
            yield app
        finally:
            db.session.remove()
            if drop:
                db.drop_all()
            db.engine.dispose()


@pytest.fixture
def app(redis, tmp_path):
    app = create_app(
        overrides={"REDIS_CONNECTION": redis},
        environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}"),
    )
    with tables_of(app):
        yield app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def queue(app):
    return app.extensions["queue"]


@pytest.fixture
def post_order(client):
    """Post a signed Shopify webhook; returns the response."""

    def post(body: bytes | dict, **headers_kwargs):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return client.post("/webhooks/shopify", data=body, headers=shopify_headers(body, **headers_kwargs))

    return post


# --- The IX sandbox, served in a thread for the fast tier ------------------------------------------

API_KEY = "test-api-key-0123456789"


@pytest.fixture(scope="module")
def sandbox_url():
    url, server = serve_in_thread(api_key=API_KEY)
    yield url
    server.shutdown()


@pytest.fixture
def sandbox(app, sandbox_url):
    """The IX sandbox, emptied, with the app pointed at it."""
    requests.post(f"{sandbox_url}/_sandbox/reset", timeout=5).raise_for_status()
    app.config.update(INVOICEXPRESS_BASE_URL=sandbox_url, INVOICEXPRESS_API_KEY=API_KEY,
                      INVOICEXPRESS_READ_TIMEOUT=2)
    init_invoicexpress(app)
    return Sandbox(sandbox_url)


class Sandbox:
    def __init__(self, url: str):
        self.url = url

    def documents(self) -> list[dict]:
        return requests.get(f"{self.url}/_sandbox/documents", timeout=5).json()

    def calls(self) -> dict:
        return requests.get(f"{self.url}/_sandbox/calls", timeout=5).json()

    def fault(self, **rule) -> None:
        requests.post(f"{self.url}/_sandbox/faults", json=[rule], timeout=5).raise_for_status()


def drain(queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def run_scheduled_now(queue) -> None:
    """Move every scheduled job to the queue, as the RQ scheduler does when its time comes."""
    registry = ScheduledJobRegistry(queue=queue)
    for job_id in registry.get_job_ids():
        registry.remove(job_id)
        queue._enqueue_job(queue.fetch_job(job_id))
