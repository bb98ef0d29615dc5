"""A one-shop database from before stores had secrets of their own, upgraded: its store is the default store's,
served with the environment's settings, and nothing it issued is issued again."""

from __future__ import annotations

import json

import flask_migrate
import pytest
import sqlalchemy as sa

from connector import create_app, stores
from connector.extensions import db
from connector.models import Document, DocumentState, EventStatus, Store, WebhookEvent
from connector.plans import proprietary_uid, sale_key
from tests.conftest import STORE, drain, fixture_body, settings
from tests.test_migrations import restore_logging  # noqa: F401  (a fixture)

BEFORE_STORE_SECRETS = "5e1f0c9a7b21"
ORDER = "paid_b2c_tax_included.json"
OLD_EVENT = "old-event-1"
OWN_SETTINGS = {"issue_test_orders": "true"}
AT = "2026-12-01 10:00:00.000000"


@pytest.fixture
def app(redis, tmp_path, restore_logging):  # noqa: F811
    """The app on an SQLite file that only migrations build (conftest's client, queue and sandbox use it)."""
    app = create_app(overrides={"REDIS_CONNECTION": redis},
                     environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'one-shop.db'}"))
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def a_one_shop_database() -> dict[str, int]:
    """The schema before stores' secrets, holding what the old code kept of one issued order."""
    flask_migrate.upgrade(revision=BEFORE_STORE_SECRETS)
    order = json.loads(fixture_body(ORDER))
    key = sale_key(str(order["id"]))
    with db.engine.begin() as connection:
        store = connection.execute(sa.text(
            "INSERT INTO stores (platform, domain, settings, created_at) "
            "VALUES ('shopify', :domain, :settings, :at)"
        ), {"domain": STORE, "settings": json.dumps(OWN_SETTINGS), "at": AT}).lastrowid
        event = connection.execute(sa.text(
            "INSERT INTO webhook_events (store_id, platform, event_key, topic, body, status, received_at, "
            "processed_at, source) VALUES (:store, 'shopify', :key, 'orders/paid', :body, 'processed', :at, :at, "
            "'webhook')"
        ), {"store": store, "key": OLD_EVENT, "body": fixture_body(ORDER), "at": AT}).lastrowid
        document = connection.execute(sa.text(
            "INSERT INTO documents (store_id, source_key, event_id, doc_type, order_ref, state, proprietary_uid, "
            "total, currency, ix_id, sequence_number, atcud, permalink, attempts, created_at, updated_at) VALUES "
            "(:store, :key, :event, 'invoice_receipts', '#1001', 'done', :uid, '59.86', 'EUR', 4242, 'SBX/1', "
            "'ABCD1234-1', 'https://example.invalid/doc/4242', 1, :at, :at)"
        ), {"store": store, "event": event, "key": key, "uid": proprietary_uid("shopify", STORE, key),
            "at": AT}).lastrowid
    return {"store": store, "event": event, "document": document}


def test_an_upgraded_one_shop_database_keeps_its_store_as_the_default_stores_and_issues_nothing_again(
        app, sandbox, post_order, queue):
    old = a_one_shop_database()

    flask_migrate.upgrade()

    store = db.session.get(Store, old["store"])
    assert (store.platform, store.domain, store.secrets) == ("shopify", STORE, None)
    assert store.settings == OWN_SETTINGS
    config = stores.resolve(store)
    assert not config.own_webhook_secrets
    assert config.invoicexpress == stores.environment_account(app.config)
    assert config.settings.issue_test_orders is True
    assert stores.startup_problems() == []

    # The old delivery again is a duplicate; the same order in a new delivery finds its document.
    assert post_order(fixture_body(ORDER), event_id=OLD_EVENT).json["status"] == "duplicate"
    assert post_order(fixture_body(ORDER), event_id="new-event-2").json["status"] == "accepted"
    drain(queue)

    new = db.session.scalar(sa.select(WebhookEvent).where(WebhookEvent.event_key == "new-event-2"))
    assert (new.store_id, new.status) == (old["store"], EventStatus.PROCESSED)
    [document] = db.session.scalars(sa.select(Document)).all()
    assert (document.id, document.state, document.ix_id) == (old["document"], DocumentState.DONE, 4242)
    assert db.session.scalars(sa.select(Store.id)).all() == [old["store"]]
    assert sandbox.documents() == []
    assert not any(call.startswith(("POST", "PUT")) for call in sandbox.calls())
