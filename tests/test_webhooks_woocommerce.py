"""WooCommerce intake: what the shop gets back for each delivery, what is stored, and what the event job makes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connector import create_app, jobs
from connector.extensions import db
from connector.models import Document, DocumentState, EventStatus, WebhookEvent
from devtools import woocommerce_fake
from tests.conftest import drain, settings, tables_of

URL = "/webhooks/woocommerce"
WOO_SECRET = "test-woocommerce-secret"
WOO_SOURCE = "https://loja.example.pt/"
WOO_STORE = "loja.example.pt"
CONSUMER_KEY = "ck_test_0123456789"
CONSUMER_SECRET = "cs_test_0123456789"


# --- WooCommerce orders as the REST API (and so a webhook) writes them ---------------------------------


def woo_order(order_id: int = 727, status: str = "processing", paid: bool = True, modified: str | None = None,
              **changes) -> dict:
    """A WooCommerce v3 order: two mugs at 10.00 + 23% VAT, prices entered without tax, paid by card."""
    created = "2026-11-30T10:00:00"
    order = {
        "id": order_id, "parent_id": 0, "number": str(order_id), "order_key": f"wc_order_{order_id}",
        "created_via": "checkout", "version": "9.4.0", "status": status, "currency": "EUR",
        "date_created": created, "date_created_gmt": created,
        "date_modified": modified or "2026-11-30T10:05:00", "date_modified_gmt": modified or "2026-11-30T10:05:00",
        "date_paid": "2026-11-30T10:05:00" if paid else None,
        "date_paid_gmt": "2026-11-30T10:05:00" if paid else None,
        "date_completed": None, "date_completed_gmt": None,
        "discount_total": "0.00", "discount_tax": "0.00", "shipping_total": "0.00", "shipping_tax": "0.00",
        "cart_tax": "4.60", "total": "24.60", "total_tax": "4.60", "prices_include_tax": False,
        "customer_id": 0, "customer_ip_address": "", "customer_user_agent": "", "customer_note": "",
        "billing": {"first_name": "Maria", "last_name": "Silva", "company": "", "address_1": "Rua das Flores 1",
                    "address_2": "", "city": "Lisboa", "state": "", "postcode": "1000-001", "country": "PT",
                    "email": "maria@example.pt", "phone": ""},
        "shipping": {"first_name": "Maria", "last_name": "Silva", "company": "", "address_1": "Rua das Flores 1",
                     "address_2": "", "city": "Lisboa", "state": "", "postcode": "1000-001", "country": "PT"},
        "payment_method": "stripe", "payment_method_title": "Cartão", "transaction_id": "ch_1",
        "meta_data": [],
        "line_items": [{
            "id": 1, "name": "Caneca", "product_id": 10, "variation_id": 0, "quantity": 2, "tax_class": "",
            "subtotal": "20.00", "subtotal_tax": "4.60", "total": "20.00", "total_tax": "4.60",
            "taxes": [{"id": 1, "total": "4.6", "subtotal": "4.6"}], "meta_data": [], "sku": "MUG",
            "price": 10,
        }],
        "tax_lines": [{"id": 90, "rate_code": "PT-IVA-1", "rate_id": 1, "label": "IVA", "compound": False,
                       "tax_total": "4.60", "shipping_tax_total": "0.00", "rate_percent": 23, "meta_data": []}],
        "shipping_lines": [], "fee_lines": [], "coupon_lines": [], "refunds": [],
    }
    order.update(changes)
    return order


def woo_refund(refund_id: int = 800) -> dict:
    """One mug of order 727 given back (12.30 with its VAT), as GET …/orders/727/refunds/800 answers."""
    return {
        "id": refund_id, "date_created": "2026-12-01T09:00:00", "date_created_gmt": "2026-12-01T09:00:00",
        "amount": "12.30", "reason": "Partida no transporte", "refunded_by": 1, "refunded_payment": True,
        "meta_data": [],
        "line_items": [{
            "id": 2, "name": "Caneca", "product_id": 10, "variation_id": 0, "quantity": -1, "tax_class": "",
            "subtotal": "-10.00", "subtotal_tax": "-2.30", "total": "-10.00", "total_tax": "-2.30",
            "taxes": [{"id": 1, "total": "-2.3", "subtotal": "-2.3"}],
            "meta_data": [{"id": 5, "key": "_refunded_item_id", "value": "1"}], "sku": "MUG", "price": -10,
        }],
        "shipping_lines": [], "tax_lines": [], "fee_lines": [],
    }


def woo_sign(body: bytes, secret: str = WOO_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def woo_headers(body: bytes, topic: str = "order.created", secret: str | None = WOO_SECRET,
                source: str = WOO_SOURCE) -> dict[str, str]:
    """The headers WooCommerce's WC_Webhook::deliver() sends (no signature when `secret` is None)."""
    resource, _, event = topic.partition(".")
    headers = {
        "Content-Type": "application/json", "User-Agent": "WooCommerce/9.4.0 Hookshot (WordPress/6.7)",
        "X-WC-Webhook-Source": source, "X-WC-Webhook-Topic": topic, "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event, "X-WC-Webhook-ID": "12",
        "X-WC-Webhook-Delivery-ID": hashlib.md5(body).hexdigest(),  # noqa: S324 - only an id, as wp_hash is
    }
    if secret is not None:
        headers["X-WC-Webhook-Signature"] = woo_sign(body, secret)
    return headers


# --- the app, with WooCommerce on and its REST API served by the fake --------------------------------


def woo_settings(woocommerce_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    return settings(WOOCOMMERCE_WEBHOOK_SECRET=WOO_SECRET, WOOCOMMERCE_URL=woocommerce_url,
                    WOOCOMMERCE_CONSUMER_KEY=CONSUMER_KEY, WOOCOMMERCE_CONSUMER_SECRET=CONSUMER_SECRET, **extra)


@pytest.fixture(scope="module")
def woo_fake_url():
    with woocommerce_fake.running(CONSUMER_KEY, CONSUMER_SECRET) as url:
        yield url


@pytest.fixture
def app(redis, tmp_path, woo_fake_url):
    """The conftest app with WooCommerce enabled (conftest's client, queue and sandbox use this one)."""
    app = create_app(overrides={"REDIS_CONNECTION": redis},
                     environ=woo_settings(woo_fake_url, DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}"))
    with tables_of(app):
        yield app


@pytest.fixture
def woo(woo_fake_url):
    fake = woocommerce_fake.Control(woo_fake_url, CONSUMER_KEY, CONSUMER_SECRET)
    fake.reset()
    return fake


@pytest.fixture
def post_woo(client):
    """Post a WooCommerce webhook (signed unless secret=None); returns the response."""

    def post(body: bytes | dict, topic: str = "order.created", **headers_kwargs):
        if isinstance(body, dict):
            body = json.dumps(body).encode()
        return client.post(URL, data=body, headers=woo_headers(body, topic, **headers_kwargs))

    return post


def events() -> list[WebhookEvent]:
    db.session.remove()
    return list(db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)))


def documents() -> list[Document]:
    db.session.remove()
    return list(db.session.scalars(sa.select(Document).order_by(Document.id)))


# --- intake ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("topic", ["order.created", "order.updated"])
def test_a_signed_order_is_stored_for_the_source_site_and_queued(post_woo, queue, topic):
    answer = post_woo(woo_order(), topic)

    assert (answer.status_code, answer.json["status"]) == (200, "accepted"), answer.json
    [event] = events()
    assert (event.platform, event.topic, event.status) == ("woocommerce", topic, EventStatus.RECEIVED)
    assert event.store.domain == WOO_STORE
    assert queue.job_ids == [jobs.event_job_id(event.id)]


def test_the_same_delivery_twice_is_one_event(post_woo, queue):
    body = json.dumps(woo_order()).encode()
    answers = [post_woo(body) for _ in range(2)]

    assert [(a.status_code, a.json["status"]) for a in answers] == [(200, "accepted"), (200, "duplicate")]
    assert len(events()) == 1
    assert len(queue.job_ids) == 1


def test_the_same_order_state_under_both_topics_is_one_event(post_woo):
    """WooCommerce has no event id: the order and its modification time are the event."""
    order = woo_order()
    assert post_woo(order, "order.created").json["status"] == "accepted"
    assert post_woo(order, "order.updated").json["status"] == "duplicate"
    assert len(events()) == 1


def test_a_later_state_of_the_same_order_is_a_new_event(post_woo):
    post_woo(woo_order(modified="2026-11-30T10:05:00"), "order.updated")
    answer = post_woo(woo_order(modified="2026-11-30T11:00:00"), "order.updated")
    assert answer.json["status"] == "accepted"
    assert len(events()) == 2


def test_the_unsigned_creation_ping_gets_200_and_stores_nothing(client, queue):
    answer = client.post(URL, data=b"webhook_id=5", headers={
        "Content-Type": "application/x-www-form-urlencoded", "User-Agent": "WordPress/6.7",
    })
    assert (answer.status_code, answer.json["status"]) == (200, "ping")
    assert events() == []
    assert queue.job_ids == []


@pytest.mark.parametrize("how", ["another secret", "missing", "tampered body", "hex digest"])
def test_a_bad_or_missing_signature_is_refused_and_nothing_is_stored(client, queue, how):
    body = json.dumps(woo_order()).encode()
    headers = woo_headers(body)
    if how == "another secret":
        headers = woo_headers(body, secret="not-the-secret")
    elif how == "missing":
        del headers["X-WC-Webhook-Signature"]
    elif how == "tampered body":
        body = body.replace(b'"processing"', b'"completed"')
    else:
        headers["X-WC-Webhook-Signature"] = hmac.new(WOO_SECRET.encode(), body, hashlib.sha256).hexdigest()

    answer = client.post(URL, data=body, headers=headers)

    assert answer.status_code == 401
    assert events() == []
    assert queue.job_ids == []


def test_a_ping_with_a_json_body_is_no_ping(client):
    """Only WooCommerce's form body `webhook_id=N` is let through unsigned."""
    answer = client.post(URL, data=b'{"webhook_id": 5}', headers={"Content-Type": "application/json"})
    assert answer.status_code == 401
    assert events() == []


def test_an_order_signed_with_a_previous_secret_is_accepted_during_a_rotation(app, post_woo):
    app.config["WEBHOOK_SECRETS"]["woocommerce"] = ["the-new-secret", WOO_SECRET]
    assert post_woo(woo_order(), secret=WOO_SECRET).json["status"] == "accepted"
    assert post_woo(woo_order(modified="2026-11-30T12:00:00"), secret="the-new-secret").status_code == 200
    assert post_woo(woo_order(modified="2026-11-30T13:00:00"), secret="an-old-one").status_code == 401
    assert len(events()) == 2


def test_an_unreadable_signed_body_gets_400(post_woo):
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe", b""):
        answer = post_woo(body)
        assert answer.status_code == 400, body
        assert answer.json["status"] == "unreadable body"
    assert events() == []


@pytest.mark.parametrize("topic, payload", [
    ("product.updated", {"id": 10, "name": "Caneca", "price": "10.00",
                         "date_modified_gmt": "2026-11-30T10:00:00"}),
    ("coupon.created", {"id": 3, "code": "natal", "amount": "10", "date_modified_gmt": "2026-11-30T10:00:00"}),
])
def test_products_and_coupons_are_stored_as_ignored_and_not_queued(post_woo, queue, topic, payload):
    answer = post_woo(payload, topic)

    assert (answer.status_code, answer.json["status"]) == (200, "ignored")
    [event] = events()
    assert (event.topic, event.status) == (topic, EventStatus.IGNORED)
    assert queue.job_ids == []


# --- the event job -----------------------------------------------------------------------------------


@pytest.mark.parametrize("field, malformed", [
    ("total", {"total": "twenty"}),
    ("quantity", {"line_items": [{**woo_order()["line_items"][0], "quantity": "two"}]}),
    ("prices_include_tax", {"prices_include_tax": None}),
    ("currency", {"currency": "EURO"}),
])
def test_a_malformed_order_is_stored_then_failed_with_a_reason_naming_the_field(app, post_woo, queue, field,
                                                                                malformed):
    answer = post_woo(woo_order(**malformed))
    assert answer.json["status"] == "accepted"

    drain(queue)  # must not raise

    [event] = events()
    assert event.status == EventStatus.FAILED
    assert event.note and field in event.note, event.note
    assert documents() == []
    # Failed is final: neither the queue nor the sweeper picks it up again.
    event.received_at = datetime.now(UTC) - timedelta(days=1)
    db.session.commit()
    assert jobs.sweep()["events"] == 0
    assert queue.job_ids == []


def test_a_paid_order_is_issued_as_one_document(sandbox, post_woo, queue):
    post_woo(woo_order())
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    [issued] = sandbox.documents()
    assert issued["status"] == "settled"
    assert issued["emails"]
    [event] = events()
    assert event.status == EventStatus.PROCESSED


@pytest.mark.parametrize("status, paid", [("on-hold", False), ("pending", False), ("failed", False),
                                          ("completed", False)])
def test_an_order_not_paid_as_woocommerce_means_it_owes_nothing(post_woo, queue, status, paid):
    post_woo(woo_order(status=status, paid=paid))
    drain(queue)

    assert documents() == []
    [event] = events()
    assert event.status == EventStatus.PROCESSED
    assert event.note and event.note.strip()


def test_an_on_hold_order_then_its_processing_update_is_one_document(sandbox, post_woo, queue):
    post_woo(woo_order(status="on-hold", paid=False, modified="2026-11-30T10:00:00"), "order.created")
    drain(queue)
    assert documents() == []

    post_woo(woo_order(status="processing", modified="2026-11-30T10:05:00"), "order.updated")
    post_woo(woo_order(status="completed", modified="2026-11-30T12:00:00",
                       date_completed_gmt="2026-11-30T12:00:00"), "order.updated")
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert len(sandbox.documents()) == 1
    assert len(events()) == 3


def test_a_refund_in_an_order_update_becomes_one_credit_note_with_its_lines_from_the_rest_api(
        sandbox, woo, post_woo, queue):
    woo.add_order(woo_order())
    post_woo(woo.order(727), "order.created")
    drain(queue)

    woo.add_refund(727, woo_refund())
    refunded = woo.order(727)
    assert [entry["id"] for entry in refunded["refunds"]] == [800]
    post_woo(refunded, "order.updated")
    post_woo(refunded, "order.updated")  # redelivered: a duplicate
    drain(queue)

    sale, credit_note = documents()
    assert (sale.state, credit_note.state) == (DocumentState.DONE, DocumentState.DONE), credit_note.last_error
    assert credit_note.original_id == sale.id
    [invoice] = [d for d in sandbox.documents() if d["type"] in ("InvoiceReceipt", "Invoice")]
    [credit] = [d for d in sandbox.documents() if d["type"] == "CreditNote"]
    assert credit["document"]["owner_invoice_id"] == invoice["id"]
    assert Decimal(str(credit["totals"]["total"])) == Decimal("12.30")
    # The refund's own lines (one mug), not the order's two.
    assert [(int(float(i["quantity"])), i["tax"]["name"]) for i in credit["document"]["items"]] == [(1, "IVA23")]
    assert len(credit["emails"]) == 1
    refund_fetches = [call for call in woo.calls()
                      if call["method"] == "GET" and call["path"] == "orders/727/refunds/800"]
    assert len(refund_fetches) == 1  # fetched once, then kept with the document
