"""Intake: what the shop gets back for each kind of delivery, and what is stored and queued."""

from __future__ import annotations

import json

import redis as redis_lib
import sqlalchemy as sa

from connector import jobs
from connector.extensions import db
from connector.models import EventStatus, WebhookEvent
from tests.conftest import fixture_body, shopify_headers


def events() -> list[WebhookEvent]:
    return list(db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def test_a_signed_paid_order_is_stored_and_queued(post_order, queue):
    answer = post_order(fixture_body("paid_b2c_tax_included.json"))

    assert answer.status_code == 200
    assert answer.json["status"] == "accepted"
    [event] = events()
    assert (event.platform, event.topic, event.status) == ("shopify", "orders/paid", EventStatus.RECEIVED)
    assert event.store.domain == "test-store.myshopify.com"
    assert queue.job_ids == [jobs.event_job_id(event.id)]


def test_the_same_event_delivered_five_times_is_stored_and_queued_once(post_order, queue):
    body = fixture_body("paid_b2c_tax_included.json")
    answers = [post_order(body, event_id="evt-1") for _ in range(5)]

    assert [a.status_code for a in answers] == [200] * 5
    assert [a.json["status"] for a in answers] == ["accepted"] + ["duplicate"] * 4
    assert len(events()) == 1
    assert len(queue.job_ids) == 1


def test_the_webhook_id_identifies_a_redelivery_when_there_is_no_event_id(client, queue):
    body = fixture_body("paid_b2c_tax_included.json")
    headers = shopify_headers(body)
    del headers["X-Shopify-Event-Id"]
    for _ in range(2):
        client.post("/webhooks/shopify", data=body, headers=headers)
    assert len(events()) == 1


def test_a_bad_signature_is_refused_and_nothing_is_stored(client, queue):
    body = fixture_body("paid_b2c_tax_included.json")
    headers = shopify_headers(body, secret="not-the-secret")

    answer = client.post("/webhooks/shopify", data=body, headers=headers)

    assert answer.status_code == 401
    assert events() == []
    assert queue.job_ids == []


def test_a_missing_signature_is_refused(client):
    body = fixture_body("paid_b2c_tax_included.json")
    headers = shopify_headers(body)
    del headers["X-Shopify-Hmac-Sha256"]
    assert client.post("/webhooks/shopify", data=body, headers=headers).status_code == 401
    assert events() == []


def test_a_tampered_body_is_refused(client):
    body = fixture_body("paid_b2c_tax_included.json")
    headers = shopify_headers(body)
    answer = client.post("/webhooks/shopify", data=body.replace(b'"paid"', b'"pending"'), headers=headers)
    assert answer.status_code == 401


def test_an_unreadable_signed_body_gets_400(post_order):
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b""):
        answer = post_order(body)
        assert answer.status_code == 400, body
    assert events() == []


def test_a_body_over_the_limit_gets_413(app, post_order):
    app.config["MAX_CONTENT_LENGTH"] = 2048
    answer = post_order(json.dumps({"id": 1, "padding": "x" * 4096}).encode())
    assert answer.status_code == 413
    assert events() == []


def test_other_topics_are_stored_as_ignored_and_not_queued(post_order, queue):
    answer = post_order(fixture_body("paid_b2c_tax_included.json"), topic="orders/updated")
    assert answer.status_code == 200
    assert answer.json["status"] == "ignored"
    [event] = events()
    assert event.status == EventStatus.IGNORED
    assert queue.job_ids == []


def test_an_unknown_platform_is_404(client):
    assert client.post("/webhooks/prestashop", data=b"{}").status_code == 404
    # WooCommerce and Stripe have no secret here, so they are not enabled.
    assert client.post("/webhooks/woocommerce", data=b"{}").status_code == 404


def test_database_down_gets_503_so_the_shop_retries(app, post_order):
    db.drop_all()  # every statement now fails, as with a database that is away
    try:
        answer = post_order(fixture_body("paid_b2c_tax_included.json"))
    finally:
        db.create_all()
    assert answer.status_code == 503


def test_redis_down_still_answers_200_and_the_sweeper_queues_it_later(app, post_order, redis):
    app.extensions["queue"].connection = redis_lib.Redis(port=1, socket_connect_timeout=0.2)
    answer = post_order(fixture_body("paid_b2c_tax_included.json"))
    assert answer.status_code == 200
    [event] = events()
    assert event.status == EventStatus.RECEIVED

    app.extensions["queue"].connection = redis
    event.received_at = event.received_at.replace(year=2000)
    db.session.commit()
    assert jobs.sweep()["events"] == 1
    assert app.extensions["queue"].job_ids == [jobs.event_job_id(event.id)]


def test_json_nested_absurdly_deep_gets_400_not_a_crash(post_order):
    for depth in (40, 100_000):
        answer = post_order(b'{"a":' * depth + b"1" + b"}" * depth)
        assert answer.status_code == 400
        assert "nested" in answer.json["error"]
    assert events() == []
