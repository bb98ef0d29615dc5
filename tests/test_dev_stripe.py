"""`./dev post` with Stripe samples: a session and its lines, or refunds, go to the fake; the event is signed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask, request
from werkzeug.serving import make_server

from connector.platforms.stripe import webhook
from devtools import stripe_fake

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "stripe"
SECRET = "whsec_local_stripe_secret"
KEY = stripe_fake.DEFAULT_KEY


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A stand-in for the connector's web process: records each POST and answers 200."""
    received: list[dict[str, Any]] = []
    app = Flask(__name__)

    @app.post("/webhooks/<path:platform>")
    def take(platform: str):
        received.append({"path": request.path, "headers": dict(request.headers), "body": request.get_data()})
        return {"stored": True}, 200

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port, received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def fake() -> Iterator[str]:
    with stripe_fake.running() as url:
        yield url


def post(receiver_port: int, fake_url: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    env.update(PORT=str(receiver_port), STRIPE_FAKE_PORT=fake_url.rsplit(":", 1)[1])
    return subprocess.run(["bash", str(ROOT / "dev"), "post", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def api(fake_url: str, path: str, **params: Any) -> Any:
    answer = requests.get(f"{fake_url}/v1/{path}", params=params, headers={"Authorization": f"Bearer {KEY}"},
                          timeout=5)
    answer.raise_for_status()
    return answer.json()


def delivered(received: list[dict[str, Any]]) -> dict[str, Any]:
    """The one delivery, checked as the connector checks it; its event."""
    assert len(received) == 1
    delivery = received[0]
    assert delivery["path"] == "/webhooks/stripe"
    assert webhook.verify(delivery["body"], delivery["headers"], [SECRET], now=time.time())
    return json.loads(delivery["body"])


def test_a_paid_session_event_puts_the_session_and_its_lines_in_the_fake_and_posts_it_signed_without_them(
    receiver, fake
):
    port, received = receiver
    ran = post(port, fake, str(FIXTURES / "checkout_session_completed_paid.json"))
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().endswith('200 {"stored":true}')

    event = delivered(received)
    assert event["type"] == "checkout.session.completed" and event["livemode"] is True
    session = event["data"]["object"]
    assert "line_items" not in session  # as Stripe's events come

    lines = api(fake, f"checkout/sessions/{session['id']}/line_items", **{"expand[]": "data.taxes"})["data"]
    assert [(line["description"], line["amount_total"]) for line in lines] == [
        ("Caneca de cerâmica", 5535), ("Postal ilustrado", 1328)]
    assert lines[0]["taxes"][0]["rate"]["percentage"] == 23.0
    assert api(fake, f"checkout/sessions/{session['id']}")["payment_status"] == "paid"


def test_a_session_without_lines_gets_one_sample_line_for_its_total_and_an_async_success_replaces_it(
    receiver, fake
):
    port, received = receiver
    ran = post(port, fake, str(FIXTURES / "checkout_session_completed_unpaid_multibanco.json"))
    assert ran.returncode == 0, ran.stderr
    session_id = delivered(received)["data"]["object"]["id"]
    assert api(fake, f"checkout/sessions/{session_id}")["payment_status"] == "unpaid"
    lines = api(fake, f"checkout/sessions/{session_id}/line_items")["data"]
    assert [(line["quantity"], line["amount_total"]) for line in lines] == [(1, 4990)]

    received.clear()
    ran = post(port, fake, str(FIXTURES / "async_payment_succeeded.json"))
    assert ran.returncode == 0, ran.stderr
    assert delivered(received)["type"] == "checkout.session.async_payment_succeeded"
    assert api(fake, f"checkout/sessions/{session_id}")["payment_status"] == "paid"
    lines = api(fake, f"checkout/sessions/{session_id}/line_items")["data"]
    assert [line["description"] for line in lines] == ["Cabaz de Natal"]


def test_refund_events_put_their_refunds_in_the_fake_listed_by_charge_newest_first(receiver, fake):
    port, received = receiver
    assert post(port, fake, str(FIXTURES / "charge_refunded_partial.json")).returncode == 0
    assert delivered(received)["type"] == "charge.refunded"
    received.clear()
    assert post(port, fake, "--stripe", str(FIXTURES / "refund_created.json")).returncode == 0
    assert delivered(received)["type"] == "refund.created"

    refunds = api(fake, "refunds", charge="ch_3QhT7uAbCdEfGh1J0kLm")["data"]
    assert [(r["id"], r["amount"]) for r in refunds] == [
        ("re_3QhY2fAbCdEfGh1Refund02", 5633), ("re_3QhX1eAbCdEfGh1Refund01", 1845)]


def test_a_charge_event_listing_no_refunds_leaves_one_refund_for_its_amount_refunded_however_often_posted(
    receiver, fake, tmp_path
):
    event = json.loads((FIXTURES / "charge_refunded_partial.json").read_text())
    del event["data"]["object"]["refunds"]  # as newer API versions send the charge
    sample = tmp_path / "charge.json"
    sample.write_text(json.dumps(event))
    port, _ = receiver
    for _ in range(2):
        assert post(port, fake, str(sample)).returncode == 0
    refunds = api(fake, "refunds", charge="ch_3QhT7uAbCdEfGh1J0kLm")["data"]
    assert [r["amount"] for r in refunds] == [1845]


def test_a_bare_session_is_sent_as_a_completed_session_event_and_topic_names_another_type(receiver, fake):
    port, received = receiver
    ran = post(port, fake, str(FIXTURES / "session_jpy.json"))
    assert ran.returncode == 0, ran.stderr
    event = delivered(received)
    assert event["object"] == "event" and event["id"].startswith("evt_")
    assert event["type"] == "checkout.session.completed" and event["livemode"] is True
    assert event["data"]["object"]["currency"] == "jpy" and "line_items" not in event["data"]["object"]
    lines = api(fake, "checkout/sessions/cs_live_c1Yen2Zero3Decimal4Session5/line_items")["data"]
    assert [line["quantity"] for line in lines] == [3]

    received.clear()
    ran = post(port, fake, "--topic", "checkout.session.expired", str(FIXTURES / "session_jpy.json"))
    assert ran.returncode == 0, ran.stderr
    assert delivered(received)["type"] == "checkout.session.expired"


def test_a_file_that_is_no_stripe_object_is_refused_with_stripe_and_posts_nothing(receiver, fake, tmp_path):
    sample = tmp_path / "order.json"
    sample.write_text(json.dumps({"id": 1, "line_items": []}))
    port, received = receiver
    ran = post(port, fake, "--stripe", str(sample))
    assert ran.returncode != 0
    assert "is not a Stripe event" in ran.stderr
    assert received == []
