"""Reconciliation: a pass over a WooCommerce store (the local fake) fills the inbox with what webhooks missed."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from connector import create_app, reconcile, worker
from connector.extensions import db
from connector.models import Store, Watermark, WebhookEvent
from connector.platforms.common import PlatformUnavailable
from devtools import shopify_fake, woocommerce_fake
from tests.conftest import settings, tables_of

CONSUMER_KEY = "ck_test_0123456789abcdef"
CONSUMER_SECRET = "cs_test_0123456789abcdef"
WEBHOOK_SECRET = "wc-test-secret"
CUSTOMER_EMAIL = "maria.silva@example.pt"
CUSTOMER_NIF = "123456789"


@pytest.fixture(scope="module")
def fake_url():
    with woocommerce_fake.running(CONSUMER_KEY, CONSUMER_SECRET) as url:
        yield url


@pytest.fixture
def fake(fake_url):
    shop = Fake(fake_url, CONSUMER_KEY, CONSUMER_SECRET)
    shop.reset()
    return shop


@pytest.fixture
def app(redis, tmp_path, fake):
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
    if "reconcile" not in app.cli.commands:
        app.cli.add_command(reconcile.reconcile_command)
    with tables_of(app):
        yield app


class Fake(woocommerce_fake.Control):
    """The WooCommerce fake's control endpoints, with the shorthands these tests use."""

    def add(self, *orders: dict) -> None:
        for one in orders:
            self.add_order(one)

    def fail_listing(self, status: int = 500) -> None:
        """Every request for the order list answers `status` until the faults are cleared."""
        self.faults({"method": "GET", "path": "^orders$", "kind": str(status), "times": None})

    def clear_faults(self) -> None:
        self.faults()


def gmt(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def order(order_id: int, modified: datetime, status: str = "processing") -> dict:
    """A paid WooCommerce order as the REST API returns it, modified at `modified`."""
    return {
        "id": order_id, "number": str(order_id), "status": status, "currency": "EUR",
        "prices_include_tax": True, "date_modified_gmt": gmt(modified), "date_created_gmt": gmt(modified),
        "date_paid_gmt": gmt(modified), "date_paid": gmt(modified), "total": "12.30", "total_tax": "2.30",
        "billing": {"first_name": "Maria", "last_name": "Silva", "email": CUSTOMER_EMAIL, "country": "PT",
                    "company": ""},
        "meta_data": [{"id": 1, "key": "_billing_nif", "value": CUSTOMER_NIF}],
        "line_items": [{"id": order_id * 10, "name": "Caneca", "quantity": 1, "subtotal": "10.00",
                        "subtotal_tax": "2.30", "total": "10.00", "total_tax": "2.30",
                        "taxes": [{"id": 1, "total": "2.30", "subtotal": "2.30"}]}],
        "tax_lines": [{"id": 1, "rate_id": 1, "rate_percent": 23, "tax_total": "2.30"}],
        "shipping_lines": [], "fee_lines": [], "coupon_lines": [], "refunds": [],
    }


def recent(minutes: float) -> datetime:
    return datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=minutes)


def store_ref(app) -> str:
    return reconcile.poller("woocommerce").configured_store(app.config)


def one_pass(app, since: datetime | None = None) -> reconcile.PassResult:
    [target] = [t for t in reconcile.pollable_stores() if t.store.platform == "woocommerce"]
    return reconcile.run_pass(target, since=since)


def poll_events() -> list[WebhookEvent]:
    return list(db.session.scalars(sa.select(WebhookEvent).where(WebhookEvent.source == "poll")))


def watermark() -> Watermark:
    db.session.expire_all()
    return db.session.scalars(sa.select(Watermark)).one()


def queued_event_ids(queue) -> set[int]:
    return {int(job_id.split("-")[1]) for job_id in queue.job_ids if job_id.startswith("event-")}


def deliver_webhook(client, store: str, payload: dict, topic: str = "order.updated"):
    body = json.dumps(payload, separators=(",", ":")).encode()
    signature = base64.b64encode(hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).digest()).decode()
    return client.post("/webhooks/woocommerce", data=body, headers={
        "Content-Type": "application/json", "X-WC-Webhook-Signature": signature,
        "X-WC-Webhook-Source": f"http://{store}/", "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": topic.split(".")[1],
    })


# --- a pass ----------------------------------------------------------------------------------------------


def test_a_first_pass_takes_in_the_recent_orders_as_polled_events_and_queues_them(app, fake, queue):
    fake.add(order(101, recent(30)), order(102, recent(20)), order(103, recent(10)))

    result = one_pass(app)

    assert (result.polled, result.new, result.duplicates, result.error) == (3, 3, 0, None)
    events = poll_events()
    assert sorted(json.loads(e.body)["id"] for e in events) == [101, 102, 103]
    assert {e.platform for e in events} == {"woocommerce"}
    assert {e.store.domain for e in events} == {store_ref(app)}
    assert queued_event_ids(queue) == {e.id for e in events}


def test_a_first_pass_reads_one_day_back_and_no_further(app, fake):
    fake.add(order(201, recent(60 * 24 + 30)), order(202, recent(60 * 23)))

    result = one_pass(app)

    assert result.new == 1
    assert [json.loads(e.body)["id"] for e in poll_events()] == [202]


def test_a_second_pass_finds_nothing_new(app, fake, queue):
    fake.add(order(111, recent(15)), order(112, recent(5)))
    one_pass(app)
    queued = len(queue.job_ids)

    result = one_pass(app)

    assert (result.new, result.error) == (0, None)
    assert len(poll_events()) == 2
    assert len(queue.job_ids) == queued


def test_a_changed_order_is_a_new_event_on_the_next_pass(app, fake):
    fake.add(order(121, recent(30), status="on-hold"))
    one_pass(app)
    fake.add(order(121, recent(1)))

    result = one_pass(app)

    assert result.new == 1
    assert sorted(json.loads(e.body)["status"] for e in poll_events()) == ["on-hold", "processing"]


def test_an_order_a_webhook_already_brought_is_a_duplicate(app, fake, client, caplog):
    delivered = order(131, recent(10))
    assert deliver_webhook(client, store_ref(app), delivered).status_code == 200
    fake.add(delivered, order(132, recent(5)))

    with caplog.at_level(logging.WARNING, logger="connector.reconcile"):
        result = one_pass(app)

    assert (result.polled, result.new, result.duplicates) == (2, 1, 1)
    sources = {json.loads(e.body)["id"]: e.source for e in db.session.scalars(sa.select(WebhookEvent))}
    assert sources == {131: "webhook", 132: "poll"}
    assert "found 1 orders no webhook brought" in caplog.text


def test_the_watermark_is_the_newest_modification_seen_and_is_stored(app, fake):
    newest = recent(3)
    fake.add(order(141, recent(40)), order(142, newest), order(143, recent(20)))

    result = one_pass(app)

    mark = watermark()
    assert result.watermark == newest
    assert mark.reached.replace(tzinfo=UTC) == newest
    assert mark.last_found == 3 and mark.last_error is None and mark.last_run_at is not None


def test_the_next_pass_reads_from_the_watermark_less_the_overlap(app, fake):
    fake.add(order(151, recent(60)))
    one_pass(app)
    # Modified before the watermark but within the overlap: read again. Before the overlap: not asked for.
    fake.add(order(152, recent(60 + 3)), order(153, recent(60 + 30)))

    result = one_pass(app)

    assert sorted(json.loads(e.body)["id"] for e in poll_events()) == [151, 152]
    assert (result.polled, result.new) == (2, 1)


def test_the_watermark_never_moves_back(app, fake):
    fake.add(order(161, recent(2)))
    one_pass(app)
    reached = watermark().reached

    result = one_pass(app, since=recent(60 * 24 * 3))

    assert watermark().reached == reached
    assert result.watermark == reached.replace(tzinfo=UTC)


def test_a_pass_pages_through_more_than_a_hundred_orders(app, fake, queue):
    start = recent(300)
    fake.add(*(order(1000 + n, start + timedelta(seconds=60 * n)) for n in range(250)))

    result = one_pass(app)

    assert (result.polled, result.new, result.error) == (250, 250, None)
    assert len({json.loads(e.body)["id"] for e in poll_events()}) == 250
    assert len(queued_event_ids(queue)) == 250
    assert result.watermark == start + timedelta(seconds=60 * 249)


def test_a_failing_platform_keeps_the_watermark_records_the_error_and_the_next_pass_succeeds(app, fake):
    fake.add(order(171, recent(50)))
    one_pass(app)
    before = watermark().reached
    later = [order(1700 + n, recent(40 - n)) for n in range(5)]
    fake.add(*later)
    fake.fail_listing(500)

    failed = one_pass(app)

    mark = watermark()
    assert failed.error and mark.last_error == failed.error
    assert mark.reached == before
    assert CONSUMER_SECRET not in failed.error and CONSUMER_KEY not in failed.error

    fake.clear_faults()
    result = one_pass(app)

    assert (result.new, result.error) == (5, None)
    assert watermark().last_error is None
    assert gmt(watermark().reached.replace(tzinfo=UTC)) == later[-1]["date_modified_gmt"]


class CutShort:
    """A REST client whose listing breaks after handing on `orders` (a page read, the next one failing)."""

    def __init__(self, orders: list[dict]):
        self.orders = orders

    def orders_modified_after(self, since, until=None):
        yield from self.orders
        raise PlatformUnavailable("WooCommerce GET orders: HTTP 500")


def test_a_pass_cut_short_keeps_what_it_read_and_moves_the_watermark_that_far(app, fake, queue):
    read = [order(500 + n, recent(30 - n)) for n in range(3)]
    [target] = reconcile.pollable_stores()

    result = reconcile.run_pass(dataclasses.replace(target, client=CutShort(read)))

    assert (result.new, result.error) == (3, "WooCommerce GET orders: HTTP 500")
    assert len(queued_event_ids(queue)) == 3
    mark = watermark()
    assert gmt(mark.reached.replace(tzinfo=UTC)) == read[-1]["date_modified_gmt"]
    assert mark.last_error == "WooCommerce GET orders: HTTP 500"


def test_a_pass_cut_short_that_read_out_of_order_leaves_the_watermark_where_it_was(app, fake):
    fake.add(order(510, recent(60)))
    one_pass(app)
    before = watermark().reached
    read = [order(511, recent(5)), order(512, recent(30))]
    [target] = reconcile.pollable_stores()

    result = reconcile.run_pass(dataclasses.replace(target, client=CutShort(read)))

    assert result.new == 2
    assert watermark().reached == before


def test_since_reads_older_orders_again_as_duplicates_and_issues_nothing_new(app, fake, queue):
    fake.add(order(181, recent(60 * 24 * 2)), order(182, recent(10)))
    one_pass(app)
    fake.add(order(183, recent(60 * 24 * 3)))  # older than the first pass looked
    queued = set(queue.job_ids)

    result = one_pass(app, since=recent(60 * 24 * 4))

    # 181 was out of the first pass's day: new now; 182 is already in.
    assert (result.polled, result.new, result.duplicates) == (3, 2, 1)
    assert len(poll_events()) == 3
    assert len(set(queue.job_ids) - queued) == 2


# --- which stores, and when ------------------------------------------------------------------------------


def test_a_store_of_another_site_is_not_polled_with_this_sites_credentials(app, fake):
    db.session.add(Store(platform="woocommerce", domain="other-shop.example.com"))
    db.session.commit()

    stores = [t.store.domain for t in reconcile.pollable_stores()]

    assert stores == [store_ref(app)]


def test_without_rest_credentials_no_store_is_polled(app, fake):
    for name in ("WOOCOMMERCE_URL", "WOOCOMMERCE_CONSUMER_KEY", "WOOCOMMERCE_CONSUMER_SECRET"):
        app.config.pop(name, None)

    assert reconcile.pollable_stores() == []


def test_run_due_passes_over_a_store_only_once_its_interval_is_over(app, fake):
    app.config["RECONCILE_INTERVAL_SECONDS"] = 600
    fake.add(order(191, recent(5)))

    first = reconcile.run_due()
    fake.add(order(192, recent(1)))
    too_soon = reconcile.run_due()
    later = reconcile.run_due(now=datetime.now(UTC) + timedelta(seconds=601))

    assert [r["new"] for r in first] == [1]
    assert too_soon == []
    assert [r["new"] for r in later] == [1]


def test_one_stores_failure_does_not_stop_the_others(app, fake, monkeypatch):
    fake.add(order(195, recent(5)))
    good = reconcile.pollable_stores()
    broken = db.session.merge(Store(platform="woocommerce", domain="broken.example.com"))
    db.session.commit()
    broken_id = broken.id

    class Unreachable:
        def orders_modified_after(self, since, until=None):
            raise PlatformUnavailable("GET orders: connection refused")
            yield  # a generator, like the real client

    module = good[0].poller
    monkeypatch.setattr(reconcile, "pollable_stores",
                        lambda: [reconcile.Pollable(broken, module, Unreachable()), *good])

    results = {r["store"]: r for r in reconcile.run_due()}

    assert results["broken.example.com"]["error"] == "GET orders: connection refused"
    assert results[store_ref(app)]["new"] == 1
    assert db.session.get(Watermark, broken_id).last_error == "GET orders: connection refused"


def test_the_worker_queues_one_reconciliation_round_at_a_time(app, queue):
    worker.queue_reconcile(queue)
    worker.queue_reconcile(queue)

    assert queue.job_ids.count("reconcile") == 1
    assert queue.fetch_job("reconcile").func_name == "connector.reconcile.run_due"


# --- the command and the log ---------------------------------------------------------------------------


def test_the_command_prints_a_progress_line_per_store(app, fake):
    fake.add(order(301, recent(20)), order(302, recent(10)))
    runner = app.test_cli_runner()
    runner.invoke(args=["reconcile"])

    result = runner.invoke(args=["reconcile", "--store", store_ref(app), "--since", recent(60).isoformat()])

    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"store {store_ref(app)}: 2 polled, 0 new, 2 already in, watermark ")


def test_the_command_exits_non_zero_when_a_store_failed(app, fake):
    fake.fail_listing(500)

    result = app.test_cli_runner().invoke(args=["reconcile"])

    assert result.exit_code == 1
    assert f"store {store_ref(app)}: failed after 0 polled" in result.output


def test_the_command_refuses_an_unknown_store_and_a_bad_date(app, fake):
    runner = app.test_cli_runner()

    assert runner.invoke(args=["reconcile", "--store", "nowhere.example.com"]).exit_code == 2
    assert runner.invoke(args=["reconcile", "--since", "last tuesday"]).exit_code == 2


def test_the_warning_names_the_count_and_the_store_but_no_order_data(app, fake, caplog):
    fake.add(order(401, recent(20)), order(402, recent(10)))

    with caplog.at_level(logging.INFO):
        one_pass(app)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"reconciliation found 2 orders no webhook brought for store {store_ref(app)}: "
                        "check that the shop's webhooks are active"]
    assert not any(secret in caplog.text for secret in (CUSTOMER_EMAIL, CUSTOMER_NIF, "Silva", CONSUMER_SECRET))


# --- Shopify ---------------------------------------------------------------------------------------------

SHOPIFY_TOKEN = "shpat_test_0123456789"
SHOP = "reconcile-test.myshopify.com"


@pytest.fixture(scope="module")
def shopify_url():
    url, server = shopify_fake.serve_in_thread(access_token=SHOPIFY_TOKEN)
    yield url
    server.shutdown()


@pytest.fixture
def shopify(shopify_url):
    requests.post(f"{shopify_url.split('/admin/')[0]}/_fake/reset", timeout=5).raise_for_status()
    return shopify_url


def shopify_order(order_id: int, updated: datetime, financial_status: str = "paid", **extra) -> dict:
    return {"id": order_id, "name": f"#{order_id}", "financial_status": financial_status,
            "updated_at": updated.isoformat(timespec="seconds"), "cancelled_at": None, "refunds": [], **extra}


def add_shopify(url: str, *orders: dict) -> None:
    for one in orders:
        requests.post(f"{url.split('/admin/')[0]}/_fake/orders", json=one, timeout=5).raise_for_status()


def test_shopify_polls_paid_and_cancelled_orders_and_their_refunds_and_skips_the_rest(shopify):
    paid, refunded, cancelled, pending = recent(30), recent(25), recent(20), recent(15)
    add_shopify(shopify,
                shopify_order(11, paid),
                shopify_order(12, refunded, "partially_refunded", refunds=[{"id": 901, "order_id": 12}]),
                shopify_order(13, cancelled, "voided", cancelled_at=cancelled.isoformat()),
                shopify_order(14, pending, "pending"))
    module = reconcile.poller("shopify")
    client = module.api({"SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN, "SHOPIFY_API_BASE_URL": shopify}, SHOP)

    polled = list(module.poll(client, recent(60)))

    def stamp(moment):
        return moment.isoformat(timespec="seconds")

    assert [(p.order_id, p.topic, p.event_key) for p in polled if p.acted_on] == [
        ("11", "orders/paid", f"poll:11:{stamp(paid)}"),
        ("12", "orders/paid", f"poll:12:{stamp(refunded)}"),
        ("12", "refunds/create", "poll:refund:901"),
        ("13", "orders/cancelled", f"poll:13:{stamp(cancelled)}"),
    ]
    assert [p.order_id for p in polled if not p.acted_on] == ["14"]
    assert json.loads(polled[2].body) == {"id": 901, "order_id": 12}
    assert polled[-1].modified_at == pending


def test_shopify_is_polled_only_with_an_access_token():
    module = reconcile.poller("shopify")

    assert module.api({}, SHOP) is None
    assert module.api({"SHOPIFY_ACCESS_TOKEN": SHOPIFY_TOKEN}, SHOP) is not None
