"""Shared fixtures for the fast tier: the app on SQLite, the queue on fakeredis, signed requests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from pathlib import Path

import fakeredis
import pytest

from connector import create_app
from connector.extensions import db

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


@pytest.fixture
def app(redis, tmp_path):
    app = create_app(
        overrides={"REDIS_CONNECTION": redis},
        environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}"),
    )
    with app.app_context():
        db.create_all()
        yield app
        db.session.remove()
        db.drop_all()


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
