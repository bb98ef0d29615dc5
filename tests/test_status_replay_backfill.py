"""The operator's commands `status`, `replay` and `backfill`: what they print, change, and never do."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import redis as redis_lib
import sqlalchemy as sa

from connector import create_app
from connector.extensions import db
from connector.models import Document, DocumentState, EventStatus, Store, WebhookEvent, utcnow
from connector.platforms.woocommerce import poll as woocommerce_poll
from tests import test_reconcile
from tests.conftest import STORE, drain, fixture_body, settings, tables_of
from tests.test_reconcile import CONSUMER_KEY, CONSUMER_SECRET, WEBHOOK_SECRET, order, recent, store_ref

# The WooCommerce fake, served as reconciliation's own tests serve it (their fixtures, not copies).
fake_url = test_reconcile.fake_url
fake = test_reconcile.fake


@pytest.fixture
def app(redis, tmp_path, fake):
    """A Shopify app (the default settings) that can also poll the WooCommerce fake."""
    app = create_app(
        overrides={"REDIS_CONNECTION": redis},
        environ=settings(
            DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}",
            WOOCOMMERCE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            WOOCOMMERCE_URL=fake.url,
            WOOCOMMERCE_CONSUMER_KEY=CONSUMER_KEY,
            WOOCOMMERCE_CONSUMER_SECRET=CONSUMER_SECRET,
        ),
    )
    with tables_of(app):
        yield app


def run(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def events(**where) -> list[WebhookEvent]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(WebhookEvent).filter_by(**where).order_by(WebhookEvent.id)))


def documents() -> list[Document]:
    db.session.expire_all()
    return list(db.session.scalars(sa.select(Document).order_by(Document.id)))


# --- status ------------------------------------------------------------------------------------------------


def _one_done_and_one_stuck(post_order, queue) -> Document:
    """A store with one order issued and another whose document has been pending for three hours."""
    assert post_order(fixture_body("paid_b2c_tax_included.json")).status_code == 200
    drain(queue)
    assert post_order(fixture_body("paid_azores.json")).status_code == 200
    [_, second] = events()
    stuck = Document(store_id=second.store_id, source_key="order:stuck:receipt", event_id=second.id,
                     doc_type="invoice_receipts", order_ref="#9001", state=DocumentState.PENDING,
                     proprietary_uid="stuck-uid", created_at=utcnow() - timedelta(hours=3))
    db.session.add(stuck)
    db.session.commit()
    return stuck


def test_status_shows_each_store_its_documents_oldest_open_one_last_webhook_and_the_queue(
        app, sandbox, post_order, queue):
    stuck = _one_done_and_one_stuck(post_order, queue)

    result = run(app, "status")

    assert result.exit_code == 0, result.output
    assert f"shopify {STORE}" in result.output
    assert "documents: pending 1, done 1" in result.output
    assert f"oldest open: order #9001 (pending, document {stuck.id}) for 3h 0m" in result.output
    assert "last webhook: never" not in result.output
    assert "last reconciliation: never" in result.output
    assert "queue: 1 queued, 0 scheduled, 0 failed" in result.output  # the second order's event job


def test_status_json_is_one_object_scripts_can_read(app, sandbox, post_order, queue):
    stuck = _one_done_and_one_stuck(post_order, queue)

    result = run(app, "status", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [shop] = [one for one in report["stores"] if one["store"] == STORE]
    assert shop["documents"] == {"pending": 1, "done": 1}
    assert shop["oldest_open"]["document"] == stuck.id
    assert 3 * 3600 - 60 <= shop["oldest_open"]["age_seconds"] <= 3 * 3600 + 60
    assert shop["last_webhook_at"] is not None
    assert report["queue"] == {"queued": 1, "scheduled": 0, "failed": 0}


def test_status_shows_the_last_reconciliation_and_its_error(app, fake):
    fake.add(order(301, recent(10)))
    fake.fail_listing(503)
    assert run(app, "reconcile").exit_code == 1

    report = json.loads(run(app, "status", "--json").stdout)

    [shop] = [one for one in report["stores"] if one["store"] == store_ref(app)]
    assert shop["last_reconciliation"]["at"] is not None
    assert "503" in shop["last_reconciliation"]["error"]
    assert shop["last_webhook_at"] is None


def test_status_with_redis_away_says_so_and_still_shows_the_stores(app, sandbox, post_order, queue):
    _one_done_and_one_stuck(post_order, queue)
    queue.connection = redis_lib.Redis(port=1, socket_connect_timeout=0.2)

    result = run(app, "status")

    assert result.exit_code == 0, result.output
    assert "queue: Redis unavailable" in result.output
    assert "documents: pending 1, done 1" in result.output


# --- replay ------------------------------------------------------------------------------------------------


def test_replaying_a_processed_event_queues_it_again_and_never_issues_twice(app, sandbox, post_order, queue):
    assert post_order(fixture_body("paid_b2c_tax_included.json"), event_id="shopify-event-77").status_code == 200
    drain(queue)
    assert len(sandbox.documents()) == 1
    [event] = events()
    event_id = event.id

    for reference in (str(event_id), "shopify-event-77"):
        result = run(app, "replay", reference)
        assert result.exit_code == 0, result.output
        assert f"event {event_id}" in result.output and "was processed" in result.output
        [replayed] = events()
        assert replayed.status == EventStatus.RECEIVED
        assert "Replayed" in replayed.note
        assert queue.job_ids == [f"event-{event_id}"]
        drain(queue)

    [event] = events()
    assert event.status == EventStatus.PROCESSED
    assert len(sandbox.documents()) == 1
    [document] = documents()
    assert document.state == DocumentState.DONE


def test_replay_of_a_platform_event_id_in_two_stores_lists_them_and_asks_for_the_store(app, post_order, queue):
    assert post_order(fixture_body("paid_b2c_tax_included.json"), event_id="same-id").status_code == 200
    other = Store(platform="shopify", domain="other-shop.myshopify.com", settings={})
    db.session.add(other)
    db.session.flush()
    db.session.add(WebhookEvent(store_id=other.id, platform="shopify", event_key="same-id", topic="orders/paid",
                                body=b"{}", status=EventStatus.PROCESSED))
    db.session.commit()
    waiting = queue.job_ids  # the first delivery's own job

    result = run(app, "replay", "same-id")

    assert result.exit_code == 2
    assert STORE in result.output and "other-shop.myshopify.com" in result.output and "--store" in result.output
    assert queue.job_ids == waiting

    chosen = run(app, "replay", "same-id", "--store", "other-shop.myshopify.com")
    assert chosen.exit_code == 0, chosen.output
    assert [e.status for e in events(store_id=other.id)] == [EventStatus.RECEIVED]


def test_replay_of_an_unknown_event_is_an_error(app):
    result = run(app, "replay", "evt_nothing_like_it")
    assert result.exit_code == 2
    assert "no stored event" in result.output


# --- backfill ----------------------------------------------------------------------------------------------


def test_backfill_takes_past_orders_in_and_the_worker_issues_each_once(app, sandbox, fake, queue):
    fake.add(order(401, recent(60 * 24 * 20)), order(402, recent(60 * 24 * 10)), order(403, recent(60)))
    since = (utcnow() - timedelta(days=30)).date().isoformat()

    result = run(app, "backfill", "--store", store_ref(app), "--since", since)

    assert result.exit_code == 0, result.output
    assert "3 polled, 3 new, 0 already in" in result.stdout
    assert "3 read in all" in result.stderr
    drain(queue)
    assert len(sandbox.documents()) == 3

    again = run(app, "backfill", "--store", store_ref(app), "--since", since)
    assert "3 polled, 0 new, 3 already in" in again.stdout
    drain(queue)
    assert len(sandbox.documents()) == 3


def test_backfill_killed_half_way_goes_on_when_run_again(app, sandbox, fake, queue, monkeypatch):
    fake.add(order(501, recent(60 * 24 * 3)), order(502, recent(60 * 24 * 2)), order(503, recent(60 * 24)))
    since = (utcnow() - timedelta(days=5)).isoformat()
    real_poll = woocommerce_poll.poll

    def killed_after_two(client, since):
        for count, polled in enumerate(real_poll(client, since), start=1):
            yield polled
            if count == 2:
                raise KeyboardInterrupt  # as a kill between two orders

    monkeypatch.setattr(woocommerce_poll, "poll", killed_after_two)
    assert run(app, "backfill", "--since", since).exit_code != 0
    assert len(events(source="poll")) == 2

    monkeypatch.setattr(woocommerce_poll, "poll", real_poll)
    result = run(app, "backfill", "--since", since)

    assert result.exit_code == 0, result.output
    assert "3 polled, 1 new, 2 already in" in result.stdout
    drain(queue)
    assert len(sandbox.documents()) == 3


def test_backfill_dry_run_prints_each_orders_verdict_and_stores_and_calls_nothing(app, sandbox, fake, queue):
    fake.add(order(601, recent(60 * 24 * 4)), order(602, recent(60 * 24 * 3), status="pending"))
    since = (utcnow() - timedelta(days=7)).date().isoformat()

    result = run(app, "backfill", "--store", store_ref(app), "--since", since, "--dry-run")

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    verdicts = {line["order"]: line["verdict"] for line in lines}
    assert verdicts == {"601": "issue", "602": "none"}
    [paid] = [line for line in lines if line["order"] == "601"]
    assert paid["expected_total"] == "12.30" and paid["requests"][0]["method"] == "POST"
    assert paid["already_in"] is False
    assert "nothing stored" in result.stderr
    assert events() == [] and documents() == []
    assert queue.job_ids == []
    assert sandbox.documents() == []


def test_backfill_of_an_unknown_or_unpollable_store_exits_2(app):
    result = run(app, "backfill", "--store", "nowhere.example.com", "--since", "2024-01-01")
    assert result.exit_code == 2
    assert "nowhere.example.com" in result.output and "cannot be polled" in result.output

    shopify = run(app, "backfill", "--store", STORE, "--since", "2024-01-01")  # no SHOPIFY_ACCESS_TOKEN
    assert shopify.exit_code == 2


def test_backfill_refuses_a_since_that_is_not_a_date(app):
    result = run(app, "backfill", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "ISO date" in result.output
