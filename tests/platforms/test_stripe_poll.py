"""Stripe reconciliation against the local fake: the events the connector acts on, oldest first, webhooks' keys."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests
import sqlalchemy as sa

from connector import create_app, reconcile
from connector.extensions import db
from connector.models import WebhookEvent
from connector.platforms.common import PlatformUnavailable
from connector.platforms.stripe import poll, webhook
from connector.platforms.stripe.api import StripeAPI
from devtools import stripe_fake
from tests.conftest import FIXTURES, settings, tables_of

KEY = "rk_test_51Nabcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ"
WEBHOOK_SECRET = "whsec_test_poll"
T0 = 1_764_000_000  # 2025-11-24T16:00:00Z


@pytest.fixture(scope="module")
def base_url():
    with stripe_fake.running(KEY) as url:
        yield url


@pytest.fixture
def fake(base_url):
    control = stripe_fake.Control(base_url)
    control.reset()
    return control


@pytest.fixture
def client(base_url):
    return StripeAPI(KEY, base_url=base_url, timeout=(2, 5))


def fixture_event(name: str, **changes) -> dict:
    return {**json.loads((FIXTURES / "stripe" / f"{name}.json").read_text(encoding="utf-8")), **changes}


def event(n: int, kind: str = "checkout.session.completed") -> dict:
    return {"id": f"evt_{n:05d}", "object": "event", "type": kind, "created": T0 + n,
            "data": {"object": {"id": f"cs_test_{n:05d}", "object": "checkout.session",
                                "payment_intent": f"pi_{n:05d}"}}}


def at(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def test_every_event_is_read_over_several_pages_oldest_first(fake, client):
    for n in range(250):
        fake.add_event(event(n))

    polled = list(poll.poll(client, at(T0 - 60)))
    pages = [c for c in fake.calls() if c["path"] == "events"]

    assert [p.event_key for p in polled] == [f"evt_{n:05d}" for n in range(250)]
    assert [p.modified_at for p in polled] == [at(T0 + n) for n in range(250)]
    assert len(pages) == 3 and all(p["query"]["limit"] == "100" for p in pages)
    assert [p["query"].get("starting_after") for p in pages] == [None, "evt_00150", "evt_00050"]


def test_only_the_types_the_connector_acts_on_are_read(fake, client):
    fake.add_event(event(1, "customer.created"))
    fake.add_event(event(2, "payment_intent.created"))
    fake.add_event(event(3, "charge.refunded"))
    succeeded = event(4, "payment_intent.succeeded")
    succeeded["data"]["object"] = {"id": "pi_3Direct", "object": "payment_intent", "amount": 1000}
    fake.add_event(succeeded)
    fake.add_event(event(5, "checkout.session.expired"))

    polled = list(poll.poll(client, at(T0 - 60)))

    assert [(p.topic, p.order_id) for p in polled] == [
        ("charge.refunded", "pi_00003"),
        ("payment_intent.succeeded", "pi_3Direct"),
        ("checkout.session.expired", "pi_00005"),
    ]
    asked = next(c for c in fake.calls() if c["path"] == "events")["query"]
    assert "types[]" in asked and "type" not in asked


def test_events_older_than_since_are_not_read_and_its_own_second_is(fake, client):
    for n in (0, 9, 10, 11):
        fake.add_event(event(n))

    polled = list(poll.poll(client, at(T0 + 10) + timedelta(milliseconds=400)))

    assert [p.event_key for p in polled] == ["evt_00010", "evt_00011"]


def test_a_polled_event_is_the_webhooks_body_and_key_and_names_its_payment(fake, client):
    paid = fixture_event("checkout_session_completed_paid")
    refunded = fixture_event("charge_refunded_partial")
    refund = fixture_event("refund_created")
    for one in (refund, paid, refunded):  # put in out of order: the list is by creation time
        fake.add_event(one)

    polled = list(poll.poll(client, at(paid["created"] - 1)))

    assert [p.event_key for p in polled] == [paid["id"], refunded["id"], refund["id"]]
    assert [json.loads(p.body) for p in polled] == [paid, refunded, refund]
    assert {p.order_id for p in polled} == {"pi_3QhT7uAbCdEfGh1J0kLmNoPq"}
    assert all(p.acted_on for p in polled)


def test_a_session_without_a_payment_is_named_by_its_own_id(fake, client):
    expired = event(1, "checkout.session.expired")
    expired["data"]["object"]["payment_intent"] = None
    expanded = event(2, "refund.created")
    expanded["data"]["object"] = {"id": "re_1", "object": "refund", "payment_intent": {"id": "pi_3Expanded"}}
    fake.add_event(expired)
    fake.add_event(expanded)

    assert [p.order_id for p in poll.poll(client, at(T0))] == ["cs_test_00001", "pi_3Expanded"]


def test_nothing_new_polls_nothing(fake, client):
    fake.add_event(event(1))

    assert list(poll.poll(client, at(T0 + 3600))) == []


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_stripe_failing_a_page_is_worth_trying_again_and_no_key_is_logged(fake, client, caplog, status):
    for n in range(150):
        fake.add_event(event(n))
    fake.faults({"path": "^events$", "kind": status, "times": 1})
    caplog.set_level(logging.DEBUG)

    with pytest.raises(PlatformUnavailable) as unavailable:
        list(poll.poll(client, at(T0)))

    assert status in str(unavailable.value)
    assert KEY not in str(unavailable.value) and KEY not in caplog.text
    assert len(list(poll.poll(client, at(T0)))) == 150  # the fault was used up


class _Answering(requests.Session):
    """A transport that answers every GET with one list page, as a server handing back odd events might."""

    def __init__(self, page: dict) -> None:
        super().__init__()
        self.page = page

    def get(self, url, **kwargs):  # noqa: ARG002
        answer = requests.Response()
        answer.status_code = 200
        answer._content = json.dumps(self.page).encode()
        answer._content_consumed = True
        return answer


def test_events_without_a_usable_id_type_or_time_are_skipped_with_a_line_that_tells_nothing_of_them(caplog):
    secret_looking = "PT501964843"
    odd = [
        {"id": None, "type": "refund.created", "created": T0, "data": {"object": {"id": secret_looking}}},
        {"id": "evt_ok_later", "type": "refund.created", "created": T0 + 2,
         "data": {"object": {"id": "re_1", "payment_intent": "pi_1"}}},
        {"id": "evt_no_type", "created": T0 + 1, "data": {"object": {"id": secret_looking}}},
        {"id": "evt_no_time", "type": "charge.refunded", "created": "yesterday",
         "data": {"object": {"id": secret_looking}}},
        {"id": "not_an_event", "type": "charge.refunded", "created": T0,
         "data": {"object": {"id": secret_looking}}},
    ]
    transport = _Answering({"object": "list", "data": odd, "has_more": False})
    caplog.set_level(logging.DEBUG)

    polled = list(poll.poll(StripeAPI(KEY, base_url="http://stripe.invalid", session=transport), at(T0)))

    assert [p.event_key for p in polled] == ["evt_ok_later"]
    assert caplog.text.count("Stripe event skipped by reconciliation") == 4
    assert secret_looking not in caplog.text and KEY not in caplog.text


def test_the_environments_key_is_the_default_stores(base_url, fake):
    config = {"STRIPE_API_KEY": KEY, "STRIPE_API_BASE_URL": base_url, "STRIPE_READ_TIMEOUT": "3"}
    fake.add_event(event(1))

    assert poll.configured_store(config) == "default"
    assert poll.configured_store({"STRIPE_API_KEY": ""}) is None
    assert poll.configured_store({}) is None
    assert poll.api({"STRIPE_API_BASE_URL": base_url}, "default") is None
    client = poll.api(config, "default")
    assert client.base_url == f"{base_url}/v1/"
    assert [p.event_key for p in poll.poll(client, at(T0))] == ["evt_00001"]


def test_without_a_base_url_the_client_is_stripes_own():
    assert poll.api({"STRIPE_API_KEY": KEY}, "default").base_url == "https://api.stripe.com/v1/"


def test_a_polled_event_is_keyed_as_its_webhook_delivery_is(fake, client):
    paid = fixture_event("checkout_session_completed_paid")
    fake.add_event(paid)
    delivered = webhook.delivery(stripe_fake.encode(paid), {})

    [polled] = poll.poll(client, at(paid["created"]))

    assert poll.SAME_KEYS_AS_WEBHOOKS is True
    assert (polled.event_key, polled.topic, polled.acted_on) == (delivered.event_key, delivered.topic, True)


@pytest.fixture
def app(redis, tmp_path, base_url, fake):
    app = create_app(
        overrides={"REDIS_CONNECTION": redis},
        environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}", STRIPE_API_KEY=KEY,
                         STRIPE_API_BASE_URL=base_url, STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET),
    )
    with tables_of(app):
        yield app


def test_a_pass_takes_in_the_event_no_webhook_brought_and_the_delivered_one_is_a_duplicate(app, fake, caplog):
    delivered = fixture_event("checkout_session_completed_paid")
    missed = fixture_event("refund_created")
    body = stripe_fake.encode(delivered)
    answer = app.test_client().post("/webhooks/stripe", data=body, headers={
        "Content-Type": "application/json", "Stripe-Signature": stripe_fake.sign(body, WEBHOOK_SECRET)})
    assert answer.status_code == 200
    fake.add_event(delivered)
    fake.add_event(missed)
    caplog.set_level(logging.DEBUG)

    [target] = [t for t in reconcile.pollable_stores() if t.store.platform == "stripe"]
    result = reconcile.run_pass(target, since=at(delivered["created"] - 60))

    assert target.store.domain == "default"
    assert (result.polled, result.new, result.duplicates, result.error) == (2, 1, 1, None)
    assert result.watermark == at(missed["created"])
    stored = {e.event_key: e.source for e in db.session.scalars(sa.select(WebhookEvent))}
    assert stored == {delivered["id"]: "webhook", missed["id"]: "poll"}
    assert KEY not in caplog.text
