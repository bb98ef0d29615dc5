"""The local fakes: the WooCommerce fake's control endpoints and deliveries; the product never needs them."""

from __future__ import annotations

import ast
import base64
import hashlib
import hmac
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from devtools import stripe_fake, woocommerce_fake

ROOT = Path(__file__).resolve().parents[1]
KEY, SECRET = "ck_test_key", "cs_test_secret"
API = "/wp-json/wc/v3"


@pytest.fixture
def site():
    with woocommerce_fake.running(KEY, SECRET) as url:
        yield url


def get(site, path, **params):
    return requests.get(f"{site}{API}/{path}", params=params, auth=(KEY, SECRET), timeout=5)


def test_the_product_never_imports_devtools():
    sources = [*(ROOT / "connector").rglob("*.py"), *(ROOT / "config").rglob("*.py"), ROOT / "wsgi.py"]
    importing = []
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            if any(name.split(".")[0] == "devtools" for name in names):
                importing.append(str(path.relative_to(ROOT)))
    assert len(sources) > 20 and importing == []


def test_an_order_put_without_a_modification_time_is_modified_now_and_listed_once(site):
    created = requests.post(f"{site}/_fake/orders", json={"id": 31, "status": "processing"}, timeout=5)
    updated = requests.post(f"{site}/_fake/orders", json={"id": 31, "status": "completed"}, timeout=5)

    assert created.status_code == 201 and updated.status_code == 200
    assert updated.json()["date_modified_gmt"] > created.json()["date_modified_gmt"]
    listed = get(site, "orders", status="any")
    assert [o["status"] for o in listed.json()] == ["completed"]
    assert listed.headers["X-WP-Total"] == "1" and listed.headers["X-WP-TotalPages"] == "1"


def test_a_refund_is_listed_on_its_order_newest_first_and_modifies_it(site):
    order = requests.post(f"{site}/_fake/orders", json={"id": 32, "status": "completed"}, timeout=5).json()
    first = requests.post(f"{site}/_fake/orders/32/refunds", json={"amount": "5.00"}, timeout=5).json()
    second = requests.post(f"{site}/_fake/orders/32/refunds", json={"amount": "2.5", "reason": "late"},
                           timeout=5).json()

    now = get(site, "orders/32").json()
    assert [r["id"] for r in now["refunds"]] == [second["id"], first["id"]]
    assert now["refunds"][0] == {"id": second["id"], "reason": "late", "total": "-2.5"}
    assert now["date_modified_gmt"] > order["date_modified_gmt"]
    assert [r["id"] for r in get(site, "orders/32/refunds").json()] == [second["id"], first["id"]]
    assert get(site, f"orders/32/refunds/{first['id']}").json()["amount"] == "5.00"


def test_a_refund_needs_an_amount_and_a_known_order(site):
    requests.post(f"{site}/_fake/orders", json={"id": 33}, timeout=5)

    assert requests.post(f"{site}/_fake/orders/33/refunds", json={}, timeout=5).status_code == 400
    assert requests.post(f"{site}/_fake/orders/34/refunds", json={"amount": "1"}, timeout=5).status_code == 404


def test_the_api_answers_401_without_the_right_basic_auth_as_woocommerce_does(site):
    anonymous = requests.get(f"{site}{API}/orders", timeout=5)
    wrong = requests.get(f"{site}{API}/orders", auth=(KEY, "nope"), timeout=5)

    for answer in (anonymous, wrong):
        assert answer.status_code == 401 and answer.json()["code"] == "woocommerce_rest_cannot_view"


def test_unknown_ids_answer_woocommerces_404_codes(site):
    requests.post(f"{site}/_fake/orders", json={"id": 35}, timeout=5)

    assert get(site, "orders/36").json()["code"] == "woocommerce_rest_shop_order_invalid_id"
    assert get(site, "orders/36/refunds/1").status_code == 404
    assert get(site, "orders/35/refunds/1").json()["code"] == "woocommerce_rest_invalid_id"


def test_the_list_filters_strictly_by_modification_time_and_refuses_pages_over_100(site):
    for n, second in enumerate(("00", "10", "20")):
        order = {"id": 40 + n, "date_modified_gmt": f"2025-03-01T10:00:{second}"}
        requests.post(f"{site}/_fake/orders", json=order, timeout=5)

    between = get(site, "orders", modified_after="2025-03-01T10:00:00", modified_before="2025-03-01T10:00:20",
                  dates_are_gmt="true", orderby="modified", order="asc")
    assert [o["id"] for o in between.json()] == [41]
    newest_first = get(site, "orders", orderby="modified", order="desc", per_page=2, page=1)
    assert [o["id"] for o in newest_first.json()] == [42, 41] and newest_first.headers["X-WP-TotalPages"] == "2"
    assert get(site, "orders", per_page=101).status_code == 400


def test_faults_strike_as_often_as_asked_and_calls_are_recorded(site):
    requests.post(f"{site}/_fake/orders", json={"id": 50}, timeout=5)
    requests.post(f"{site}/_fake/faults", json=[{"method": "GET", "path": r"^orders/\d+$", "kind": "500",
                                                 "times": 2}], timeout=5)

    statuses = [get(site, "orders/50").status_code for _ in range(3)]
    get(site, "orders", page=2)

    assert statuses == [500, 500, 200]
    calls = requests.get(f"{site}/_fake/calls", timeout=5).json()
    assert calls[-1] == {"method": "GET", "path": "orders", "query": {"page": "2"}}
    assert [c["path"] for c in calls] == ["orders/50"] * 3 + ["orders"]


def test_reset_forgets_orders_faults_and_calls(site):
    requests.post(f"{site}/_fake/orders", json={"id": 60}, timeout=5)
    requests.post(f"{site}/_fake/faults", json=[{"path": "orders", "kind": "503", "times": None}], timeout=5)
    get(site, "orders")

    requests.post(f"{site}/_fake/reset", timeout=5)

    assert get(site, "orders").json() == []
    assert requests.get(f"{site}/_fake/calls", timeout=5).json() == [
        {"method": "GET", "path": "orders", "query": {}}]


def test_the_state_file_keeps_orders_and_refunds_across_a_restart(tmp_path):
    state = tmp_path / "woo.json"
    url, server = woocommerce_fake.serve_in_thread(consumer_key=KEY, consumer_secret=SECRET, state_path=state)
    requests.post(f"{url}/_fake/orders", json={"id": 70, "status": "completed"}, timeout=5)
    refund = requests.post(f"{url}/_fake/orders/70/refunds", json={"amount": "3.00"}, timeout=5).json()
    server.shutdown()
    server.server_close()

    url, server = woocommerce_fake.serve_in_thread(consumer_key=KEY, consumer_secret=SECRET, state_path=state)
    try:
        again = get(url, f"orders/70/refunds/{refund['id']}")
        assert again.status_code == 200 and again.json()["amount"] == "3.00"
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_line_fake_serves_until_stopped(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.woocommerce_fake", "--port", "0", "--consumer-key", KEY,
         "--consumer-secret", SECRET], cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        line = process.stdout.readline()
        url = line.rsplit(" ", 1)[-1].strip()
        assert line.startswith("WooCommerce fake listening on http://127.0.0.1:")
        assert get(url, "orders").json() == []
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def receiver():
    """A server that keeps what it is sent."""
    received = []

    def app(environ, start_response):
        incoming = Request(environ)
        received.append((incoming.get_data(), dict(incoming.headers)))
        return Response("ok")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/webhooks/woocommerce", received
    server.shutdown()
    server.server_close()


def test_a_delivery_is_signed_and_headed_as_woocommerce_sends_it(receiver):
    url, received = receiver
    order = {"id": 80, "status": "processing", "line_items": [{"name": "Caf\u00e9 1/2 kg"}]}

    answer = woocommerce_fake.deliver(url, order, "s3cret&amp;more", topic="order.created",
                                      source="https://loja.example/", webhook_id=12)

    [(body, headers)] = received
    assert answer.status_code == 200
    # wp_json_encode: compact, "/" escaped, non-ASCII as \u escapes.
    assert body == b'{"id":80,"status":"processing","line_items":[{"name":"Caf\\u00e9 1\\/2 kg"}]}'
    assert json.loads(body) == order
    # WooCommerce signs with the entity-decoded secret.
    expected = base64.b64encode(hmac.new(b"s3cret&more", body, hashlib.sha256).digest()).decode()
    assert headers["X-Wc-Webhook-Signature"] == expected
    assert headers["X-Wc-Webhook-Topic"] == "order.created"
    assert headers["X-Wc-Webhook-Resource"] == "order" and headers["X-Wc-Webhook-Event"] == "created"
    assert headers["X-Wc-Webhook-Source"] == "https://loja.example/" and headers["X-Wc-Webhook-Id"] == "12"
    assert len(headers["X-Wc-Webhook-Delivery-Id"]) == 32
    assert headers["User-Agent"].startswith("WooCommerce/")


def test_a_delivery_is_accepted_by_the_connectors_woocommerce_signature_check(receiver):
    verify = pytest.importorskip("connector.platforms.woocommerce.webhook").verify
    url, received = receiver

    woocommerce_fake.deliver(url, {"id": 81, "total": "9.99"}, "local-woocommerce-secret")

    [(body, headers)] = received
    assert verify(body, headers, ["old-secret", "local-woocommerce-secret"])
    assert not verify(body, headers, ["old-secret"])
    assert not verify(body + b" ", headers, ["local-woocommerce-secret"])


def test_a_ping_is_the_unsigned_form_body_woocommerce_sends_on_creation(receiver):
    url, received = receiver

    woocommerce_fake.ping(url, webhook_id=7)

    [(body, headers)] = received
    assert body == b"webhook_id=7" and "X-Wc-Webhook-Signature" not in headers


# --- the Stripe fake -----------------------------------------------------------------------------

STRIPE_KEY = "sk_test_local_fake_devtools"


@pytest.fixture
def stripe():
    with stripe_fake.running(STRIPE_KEY) as url:
        yield url


def stripe_get(url, path, params=None):
    return requests.get(f"{url}/v1/{path}", params=params, headers={"Authorization": f"Bearer {STRIPE_KEY}"},
                        timeout=5)


def test_stripe_events_are_filtered_by_type_and_time_newest_first(stripe):
    control = stripe_fake.Control(stripe)
    for n, kind in enumerate(["charge.refunded", "charge.succeeded", "refund.created", "charge.refunded"]):
        control.add_event({"id": f"evt_{n}", "type": kind, "created": 100 + n})

    by_wildcard = stripe_get(stripe, "events", {"type": "charge.*", "created[gte]": "101"}).json()
    by_types = stripe_get(stripe, "events", {"types[]": ["refund.created", "charge.refunded"],
                                             "created[lt]": "103"}).json()

    assert [e["id"] for e in by_wildcard["data"]] == ["evt_3", "evt_1"]
    assert [e["id"] for e in by_types["data"]] == ["evt_2", "evt_0"] and by_types["has_more"] is False


def test_stripe_events_list_refuses_what_stripe_refuses(stripe):
    too_many = {"types[]": [f"t.n{n}" for n in range(21)]}
    both = {"type": "charge.refunded", "types[]": ["refund.created"]}

    for params in (too_many, both, {"limit": "101"}, {"created[gt]": "soon"}):
        answer = stripe_get(stripe, "events", params)
        assert answer.status_code == 400 and answer.json()["error"]["type"] == "invalid_request_error"


def test_a_stripe_event_put_in_gets_an_id_and_a_creation_time(stripe):
    control = stripe_fake.Control(stripe)

    kept = control.add_event({"type": "refund.created", "data": {"object": {"id": "re_1"}}})

    assert kept["id"].startswith("evt_") and kept["object"] == "event" and isinstance(kept["created"], int)
    assert stripe_get(stripe, "events").json()["data"] == [kept]
    with pytest.raises(requests.HTTPError):
        control.add_event({"type": "refund.created", "created": "yesterday"})


def test_a_stripe_charge_is_an_id_until_expanded_and_a_missing_rate_is_named(stripe):
    control = stripe_fake.Control(stripe)
    control.add_session({"id": "cs_test_1", "payment_intent": "pi_3Jpy", "amount_total": 4500,
                         "currency": "jpy", "payment_status": "paid"})

    plain = stripe_get(stripe, "payment_intents/pi_3Jpy").json()
    charge_only = stripe_get(stripe, "payment_intents/pi_3Jpy", {"expand[]": "latest_charge"}).json()
    without_rate = stripe_get(stripe, "payment_intents/pi_3Jpy",
                              {"expand[]": "latest_charge.balance_transaction"})

    assert plain["latest_charge"] == charge_only["latest_charge"]["id"]
    assert charge_only["latest_charge"]["balance_transaction"].startswith("txn_")
    assert without_rate.status_code == 400 and "/_fake/exchange_rates" in without_rate.json()["error"]["message"]


def test_a_stripe_payment_outside_checkout_is_no_sessions(stripe):
    control = stripe_fake.Control(stripe)
    control.add_payment_intent({"id": "pi_3Direct", "amount": 1000})

    listed = stripe_get(stripe, "checkout/sessions", {"payment_intent": "pi_3Direct"}).json()

    assert listed["data"] == []
    assert stripe_get(stripe, "payment_intents/pi_3Direct").json()["status"] == "succeeded"
    with pytest.raises(requests.HTTPError):
        control.add_payment_intent({"id": "pi_3Free", "amount": 0})


def test_stripe_faults_strike_the_events_and_payments_as_the_other_endpoints(stripe):
    control = stripe_fake.Control(stripe)
    control.add_payment_intent({"id": "pi_3Direct", "amount": 1000})
    control.faults({"path": "^events$", "kind": "503", "times": 1},
                   {"path": "^payment_intents/", "kind": "429", "times": 1})

    assert stripe_get(stripe, "events").status_code == 503
    assert stripe_get(stripe, "payment_intents/pi_3Direct").status_code == 429
    assert stripe_get(stripe, "events").status_code == 200
    assert stripe_get(stripe, "payment_intents/pi_3Direct").status_code == 200
    assert [c["path"] for c in control.calls()] == ["events", "payment_intents/pi_3Direct"] * 2


def test_stripe_reset_forgets_events_payments_and_rates(stripe):
    control = stripe_fake.Control(stripe)
    control.add_event({"type": "refund.created"})
    control.add_payment_intent({"id": "pi_3Usd", "amount": 1000, "currency": "usd"})
    control.set_exchange_rates({"usd": 0.92})

    control.reset()

    assert stripe_get(stripe, "events").json()["data"] == []
    assert stripe_get(stripe, "payment_intents/pi_3Usd").status_code == 404
    control.add_payment_intent({"id": "pi_3Usd", "amount": 1000, "currency": "usd"})
    answer = stripe_get(stripe, "payment_intents/pi_3Usd", {"expand[]": "latest_charge.balance_transaction"})
    assert answer.status_code == 400  # the rate went with the reset
