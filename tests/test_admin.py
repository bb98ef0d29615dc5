"""The operator pages: what needs a person, a document's timeline, webhook events, reconciliation, retrying."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime
from decimal import Decimal
from html import unescape
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pytest
import requests
import sqlalchemy as sa
from markupsafe import escape
from rq import SimpleWorker

from config import ConfigError, from_env
from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, Store, Watermark, WebhookEvent
from tests.conftest import FIXTURES, fixture_body, settings

PASSWORD = "correct horse battery staple"
ORIGIN = {"Origin": "http://localhost"}


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


AUTH = basic("admin", PASSWORD)


@pytest.fixture
def admin(app):
    app.config["ADMIN_PASSWORD"] = PASSWORD
    return app


@pytest.fixture
def no_ix(app):
    """An IX client factory that fails the test if anything tries to reach InvoiceXpress."""

    def factory(store=None):
        raise AssertionError("InvoiceXpress must not be called")

    app.extensions["invoicexpress"] = factory


def drain(queue) -> None:
    SimpleWorker([queue], connection=queue.connection).work(burst=True)


def held_order(app, post_order, queue) -> Document:
    """A paid order held because no tax name is set for its 23 % VAT (decided before IX is involved)."""
    issuing = app.config["ISSUING"]
    issuing["tax_names"] = {rate: name for rate, name in issuing["tax_names"].items() if rate != Decimal(23)}
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.state == DocumentState.HELD
    return document


def location(answer) -> tuple[str, dict[str, str]]:
    """Where a redirect sends the browser: the path and its query arguments."""
    parts = urlsplit(answer.headers["Location"])
    return parts.path, dict(parse_qsl(parts.query))


def make_document(state: str, ix_id: int | None = None, number: int = 1, **fields) -> Document:
    store = db.session.scalar(sa.select(Store)) or Store(platform="shopify", domain="loja.myshopify.com")
    event = WebhookEvent(store=store, platform="shopify", event_key=f"evt-{number}", topic="orders/paid",
                         body=b"{}", status=EventStatus.PROCESSED)
    document = Document(store=store, event=event, source_key=f"order:{number}:receipt",
                        doc_type="invoice_receipts", order_ref=f"#{1000 + number}", state=state,
                        proprietary_uid=f"uid-{number}", total="10.00", currency="EUR", ix_id=ix_id, **fields)
    db.session.add(document)
    db.session.commit()
    return document


# --- Off, and who may in -------------------------------------------------------------------------


def test_without_a_password_every_admin_url_is_not_found(app, client):
    app.config["ADMIN_PASSWORD"] = None
    make_document(DocumentState.HELD)

    for url in ("/admin/", "/admin/events", "/admin/documents/1", "/admin/stores"):
        answer = client.get(url, headers=AUTH)
        assert answer.status_code == 404
        assert "WWW-Authenticate" not in answer.headers
        assert "X-Frame-Options" not in answer.headers
    assert client.post("/admin/documents/1/retry", headers={**AUTH, **ORIGIN}).status_code == 404
    assert db.session.get(Document, 1).state == DocumentState.HELD


@pytest.mark.parametrize("headers", [
    {},
    basic("admin", "wrong password!!"),
    basic("root", PASSWORD),
    basic("admin", PASSWORD + "x"),
    {"Authorization": "Basic not-base64"},
    {"Authorization": f"Bearer {PASSWORD}"},
])
def test_missing_or_wrong_credentials_are_refused_with_a_challenge(admin, client, headers):
    for url in ("/admin/", "/admin/events", "/admin/documents/1", "/admin/stores"):
        answer = client.get(url, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["WWW-Authenticate"] == 'Basic realm="connector"'
    assert client.post("/admin/documents/1/retry", headers={**headers, **ORIGIN}).status_code == 401


def test_admin_pages_carry_security_headers(admin, client):
    answer = client.get("/admin/", headers=AUTH)

    assert answer.status_code == 200
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Frame-Options"] == "DENY"
    assert answer.headers["Content-Security-Policy"] == (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'")
    assert client.get("/admin/").headers["X-Frame-Options"] == "DENY"  # the 401 too


def test_the_password_must_be_long_enough_and_is_optional():
    assert from_env(settings())["ADMIN_PASSWORD"] is None
    assert from_env(settings(ADMIN_PASSWORD=PASSWORD))["ADMIN_PASSWORD"] == PASSWORD
    with pytest.raises(ConfigError) as raised:
        from_env(settings(ADMIN_PASSWORD="short"))
    assert "- ADMIN_PASSWORD must be at least 12 characters" in str(raised.value).splitlines()


# --- Documents -----------------------------------------------------------------------------------


def test_the_list_shows_a_held_documents_reason_and_counts_per_state(admin, client, post_order, queue, no_ix):
    document = held_order(admin, post_order, queue)
    make_document(DocumentState.DONE, ix_id=7, number=2, sequence_number="FR 2024/7")

    page = client.get("/admin/", headers=AUTH).get_data(as_text=True)

    assert str(escape(document.last_error)) in page  # in full
    assert "23 %" in page
    assert "test-store.myshopify.com" in page and "#1001" in page
    assert "held 1" in page and "done 1" in page and "all 2" in page
    assert "FR 2024/7" in page
    assert f'href="/admin/documents/{document.id}"' in page


def test_the_list_filters_by_state(admin, client):
    make_document(DocumentState.HELD, number=1, last_error="Needs a tax name.")
    make_document(DocumentState.DONE, number=2)

    held = client.get("/admin/?state=held", headers=AUTH).get_data(as_text=True)
    done = client.get("/admin/?state=done", headers=AUTH).get_data(as_text=True)

    assert "#1001" in held and "#1002" not in held
    assert "#1002" in done and "#1001" not in done
    assert client.get("/admin/?state=lost", headers=AUTH).status_code == 400


def test_the_detail_shows_every_field_and_the_timeline_in_order(admin, client, post_order, queue, no_ix):
    document = held_order(admin, post_order, queue)
    db.session.add(DocumentEvent(document_id=document.id, kind="ix_call", message="POST answered 503",
                                 status_code=503))
    document.permalink = "https://www.app.invoicexpress.com/documents/abc"
    db.session.commit()

    page = client.get(f"/admin/documents/{document.id}", headers=AUTH).get_data(as_text=True)

    assert document.proprietary_uid in page
    assert '<a href="https://www.app.invoicexpress.com/documents/abc"' in page
    assert page.index(">held<", page.index("Timeline")) < page.index("POST answered 503")
    assert ">503<" in page
    assert "ana.silva@example.pt" not in page
    assert client.get("/admin/documents/999", headers=AUTH).status_code == 404


def test_a_permalink_that_is_not_a_web_address_is_not_a_link(admin, client):
    document = make_document(DocumentState.DONE, permalink="javascript:alert(1)")

    page = client.get(f"/admin/documents/{document.id}", headers=AUTH).get_data(as_text=True)

    assert 'href="javascript:' not in page
    assert "javascript:alert(1)" in page


def test_text_from_orders_is_escaped(admin, client):
    make_document(DocumentState.HELD, last_error="<script>alert(1)</script>")

    page = client.get("/admin/", headers=AUTH).get_data(as_text=True)

    assert "<script>" not in page and "&lt;script&gt;" in page


# --- Retry ---------------------------------------------------------------------------------------


def test_retry_sends_a_held_document_back_to_pending_and_queues_it(admin, client, post_order, queue, no_ix,
                                                                   caplog):
    document = held_order(admin, post_order, queue)
    document.attempts = 3
    db.session.commit()
    caplog.set_level(logging.INFO)

    answer = client.post(f"/admin/documents/{document.id}/retry", headers={**AUTH, **ORIGIN})

    assert answer.status_code == 303
    assert location(answer) == (f"/admin/documents/{document.id}", {"notice": "retried"})
    db.session.expire_all()
    document = db.session.get(Document, document.id)
    assert document.state == DocumentState.PENDING
    assert (document.attempts, document.next_attempt_at, document.last_error) == (0, None, None)
    assert document.job_id and queue.job_ids == [document.job_id]
    last = db.session.scalars(sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id)
                              .order_by(DocumentEvent.id.desc())).first()
    assert last.kind == "retry" and "retry requested by operator" in last.message.lower()
    assert "23 %" in last.message  # the reason it was held stays in the timeline
    lines = [r.getMessage() for r in caplog.records if "retry requested" in r.getMessage()]
    assert lines == [f"document {document.id} retry requested by operator: held -> pending"]
    assert PASSWORD not in caplog.text


def test_retry_of_a_failed_document_ix_already_has_resumes_from_created(admin, client, queue):
    document = make_document(DocumentState.FAILED, ix_id=42, attempts=30, last_error="Gave up.")

    answer = client.post(f"/admin/documents/{document.id}/retry", data={"next": "/admin/?state=failed"},
                         headers={**AUTH, **ORIGIN})

    assert answer.status_code == 303
    assert location(answer) == ("/admin/", {"state": "failed", "notice": "retried"})
    db.session.expire_all()
    document = db.session.get(Document, document.id)
    assert (document.state, document.attempts, document.last_error) == (DocumentState.CREATED, 0, None)
    assert queue.job_ids == [document.job_id]


def test_retry_goes_back_only_to_admin_pages(admin, client):
    document = make_document(DocumentState.HELD)

    answer = client.post(f"/admin/documents/{document.id}/retry", data={"next": "https://evil.example/"},
                         headers={**AUTH, **ORIGIN})

    assert location(answer)[0] == f"/admin/documents/{document.id}"


@pytest.mark.parametrize("state", [DocumentState.DONE, DocumentState.PENDING, DocumentState.CREATED])
def test_retry_of_a_document_that_is_not_held_or_failed_is_a_conflict(admin, client, queue, state):
    document = make_document(state, ix_id=None if state == DocumentState.PENDING else 9)

    answer = client.post(f"/admin/documents/{document.id}/retry", headers={**AUTH, **ORIGIN})

    assert answer.status_code == 409
    assert "only held or failed" in answer.get_data(as_text=True)
    assert "Nothing was done" in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Document, document.id).state == state
    assert queue.job_ids == []


def test_retry_of_an_unknown_document_is_not_found(admin, client):
    assert client.post("/admin/documents/999/retry", headers={**AUTH, **ORIGIN}).status_code == 404


@pytest.mark.parametrize("headers", [
    {},
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Referer": "https://evil.example/admin/"},
    {"Origin": "https://evil.example", "Referer": "http://localhost/admin/"},
    {"Referer": "http://localhost@evil.example/admin/"},
])
def test_a_post_not_from_these_pages_is_forbidden(admin, client, queue, headers):
    document = make_document(DocumentState.HELD)

    answer = client.post(f"/admin/documents/{document.id}/retry", headers={**AUTH, **headers})

    assert answer.status_code == 403
    db.session.expire_all()
    assert db.session.get(Document, document.id).state == DocumentState.HELD
    assert queue.job_ids == []


def test_a_post_with_only_a_referer_from_this_host_is_accepted(admin, client):
    document = make_document(DocumentState.HELD)

    answer = client.post(f"/admin/documents/{document.id}/retry",
                         headers={**AUTH, "Referer": f"https://localhost/admin/documents/{document.id}"})

    assert answer.status_code == 303


# --- Events and pages ----------------------------------------------------------------------------


def test_the_events_list_shows_events_but_never_their_bodies(admin, client, post_order, queue, no_ix):
    body = fixture_body("paid_b2c_tax_included.json")
    post_order(body)
    post_order(fixture_body("authorized_not_paid.json"), topic="orders/create")

    page = client.get("/admin/events", headers=AUTH).get_data(as_text=True)

    assert "orders/paid" in page and "orders/create" in page
    assert f"{len(body)} bytes" in page
    assert "ana.silva@example.pt" not in page and "#1001" not in page
    ignored = client.get("/admin/events?status=ignored", headers=AUTH).get_data(as_text=True)
    assert "orders/create" in ignored and "orders/paid" not in ignored
    assert client.get("/admin/events?status=nope", headers=AUTH).status_code == 400


def test_lists_come_fifty_to_a_page_newest_first(admin, client):
    for number in range(1, 52):
        make_document(DocumentState.HELD, number=number)

    first = client.get("/admin/?state=held", headers=AUTH).get_data(as_text=True)
    second = client.get("/admin/?state=held&page=2", headers=AUTH).get_data(as_text=True)
    beyond = client.get("/admin/?state=held&page=99", headers=AUTH).get_data(as_text=True)

    assert first.count("<tr>") - 1 == 50  # minus the header row
    assert first.index("#1051") < first.index("#1050") and "#1001<" not in first
    assert "page=2" in first and "state=held" in first
    assert "#1001<" in second and "#1051<" not in second
    assert "page 2 of 2" in beyond and "#1001<" in beyond  # past the end: the last page
    events = client.get("/admin/events?page=2", headers=AUTH).get_data(as_text=True)
    assert events.count("<tr>") - 1 == 1


def test_a_held_order_retried_after_the_setting_is_fixed_is_issued(admin, client, post_order, queue):
    from connector.issuing import init_invoicexpress
    from devtools.invoicexpress_sandbox import serve_in_thread

    document_id = held_order(admin, post_order, queue).id  # the jobs end their sessions: keep the id only
    url, server = serve_in_thread(api_key="test-api-key-0123456789")
    try:
        admin.config.update(INVOICEXPRESS_BASE_URL=url, INVOICEXPRESS_READ_TIMEOUT=2)
        init_invoicexpress(admin)
        admin.config["ISSUING"]["tax_names"][Decimal(23)] = "IVA23"  # the operator fixes the setting

        client.post(f"/admin/documents/{document_id}/retry", headers={**AUTH, **ORIGIN})
        drain(queue)
    finally:
        server.shutdown()

    db.session.expire_all()
    document = db.session.get(Document, document_id)
    assert document.state == DocumentState.DONE
    assert document.sequence_number


# --- What reconciliation found ---------------------------------------------------------------------------

FOUND = "found by reconciliation"
LISBON = ZoneInfo("Europe/Lisbon")


def make_event(source: str, number: int, topic: str = "order.updated", status: str = EventStatus.PROCESSED,
               store: Store | None = None) -> WebhookEvent:
    store = store or db.session.scalar(sa.select(Store)) or Store(platform="woocommerce", domain="loja.exemplo.pt")
    event = WebhookEvent(store=store, platform=store.platform, event_key=f"key-{number}", topic=topic,
                         body=b"{}", status=status, source=source)
    db.session.add(event)
    db.session.commit()
    return event


def rows(page: str) -> list[str]:
    """The table's body rows, header left out."""
    return page.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:] if "<tbody>" in page else []


def lisbon(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).astimezone(LISBON).strftime("%Y-%m-%d %H:%M:%S")


def test_the_events_list_says_how_each_event_arrived(admin, client):
    make_event("webhook", 1, topic="order.created")
    make_event("poll", 2, topic="order.updated")

    page = client.get("/admin/events", headers=AUTH).get_data(as_text=True)

    by_topic = {("order.created" in row, "order.updated" in row): row for row in rows(page)}
    assert FOUND not in by_topic[(True, False)] and ">webhook<" in by_topic[(True, False)]
    assert FOUND in by_topic[(False, True)]


def test_the_events_list_filters_to_those_found_by_reconciliation(admin, client):
    make_event("webhook", 1, topic="order.created")
    make_event("poll", 2, topic="order.updated")
    make_event("poll", 3, topic="order.deleted", status=EventStatus.FAILED)

    everything = client.get("/admin/events", headers=AUTH).get_data(as_text=True)
    found = client.get("/admin/events?source=poll", headers=AUTH).get_data(as_text=True)
    found_and_failed = client.get("/admin/events?source=poll&status=failed", headers=AUTH).get_data(as_text=True)

    assert len(rows(everything)) == 3
    assert f"{FOUND} 2" in everything  # the filter's link, with how many it holds
    assert len(rows(found)) == 2 and "order.created" not in found
    assert "webhook is disabled or failing" in " ".join(found.split())
    assert "all 2" in found  # the status counts are of the events shown
    assert len(rows(found_and_failed)) == 1 and "order.deleted" in found_and_failed
    assert "source=poll" in found_and_failed and "status=failed" in found_and_failed
    assert client.get("/admin/events?source=email", headers=AUTH).status_code == 400


def test_the_filter_to_what_reconciliation_found_keeps_its_pages(admin, client):
    for number in range(1, 52):
        make_event("poll", number)
    make_event("webhook", 99, topic="order.created")

    first = client.get("/admin/events?source=poll", headers=AUTH).get_data(as_text=True)
    second = client.get("/admin/events?source=poll&page=2", headers=AUTH).get_data(as_text=True)

    assert len(rows(first)) == 50 and "page 1 of 2" in first
    assert "page=2" in first and "source=poll" in first
    assert len(rows(second)) == 1 and "order.created" not in second


def test_a_documents_page_says_its_event_was_found_by_reconciliation(admin, client):
    polled = make_document(DocumentState.DONE, number=1)
    polled.event.source = "poll"
    db.session.commit()
    delivered = make_document(DocumentState.DONE, number=2)

    assert FOUND in client.get(f"/admin/documents/{polled.id}", headers=AUTH).get_data(as_text=True)
    assert FOUND not in client.get(f"/admin/documents/{delivered.id}", headers=AUTH).get_data(as_text=True)


def test_the_stores_page_shows_each_stores_watermark_last_run_found_count_and_error(admin, client):
    polled = Store(platform="woocommerce", domain="loja.exemplo.pt")
    quiet = Store(platform="shopify", domain="quiet.myshopify.com")
    reached, ran = datetime(2025, 11, 24, 11, 2, 47), datetime(2025, 11, 24, 11, 10, 0)
    db.session.add_all([polled, quiet, Watermark(store=polled, reached=reached, last_run_at=ran, last_found=3,
                                                 last_error="WooCommerce GET orders: HTTP 503 <b>busy</b>")])
    db.session.commit()
    for number in range(3):
        make_event("poll", number, store=polled)
    make_event("webhook", 9, store=quiet)

    page = client.get("/admin/stores", headers=AUTH).get_data(as_text=True)
    polled_row, quiet_row = rows(page)

    assert "loja.exemplo.pt" in polled_row and "woocommerce" in polled_row
    assert lisbon(reached) in polled_row and lisbon(ran) in polled_row
    assert '<td class="num">3</td>' in polled_row  # the last pass's count
    assert "source=poll" in polled_row  # its events found by reconciliation, one click away
    assert str(escape("HTTP 503 <b>busy</b>")) in polled_row and "<b>busy</b>" not in polled_row
    assert "quiet.myshopify.com" in quiet_row and "never reconciled" in quiet_row
    assert "source=poll" not in quiet_row
    assert 'href="/admin/stores"' in client.get("/admin/", headers=AUTH).get_data(as_text=True)


def test_the_stores_page_without_stores_says_so(admin, client):
    page = client.get("/admin/stores", headers=AUTH).get_data(as_text=True)

    assert "No stores yet" in page


# --- ... and the same seen through a real pass over the WooCommerce fake ----------------------------------

WOO_KEY, WOO_SECRET, WOO_WEBHOOK_SECRET = "ck_admin_0123456789", "cs_admin_0123456789", "wc-admin-secret"


@pytest.fixture(scope="module")
def woocommerce_url():
    from devtools import woocommerce_fake

    with woocommerce_fake.running(WOO_KEY, WOO_SECRET) as url:
        yield url


@pytest.fixture
def woo_admin(redis, tmp_path, woocommerce_url):
    """The connector with ADMIN_PASSWORD, polling the WooCommerce fake (emptied) for its default store."""
    from connector import create_app
    from tests.conftest import tables_of

    requests.post(f"{woocommerce_url}/_fake/reset", timeout=5).raise_for_status()
    requests.post(f"{woocommerce_url}/_fake/faults", json=[], timeout=5).raise_for_status()
    app = create_app(overrides={"REDIS_CONNECTION": redis}, environ=settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}", ADMIN_PASSWORD=PASSWORD,
        WOOCOMMERCE_WEBHOOK_SECRET=WOO_WEBHOOK_SECRET, WOOCOMMERCE_URL=woocommerce_url,
        WOOCOMMERCE_CONSUMER_KEY=WOO_KEY, WOOCOMMERCE_CONSUMER_SECRET=WOO_SECRET))
    with tables_of(app):
        yield app


def woo_order(url: str, order_id: int, number: str) -> dict:
    """A paid WooCommerce order put in the fake (modified now), as its REST API returns it."""
    order = json.loads((FIXTURES / "woocommerce" / "paid_b2c_prices_include_tax.json").read_text())
    order.update(id=order_id, number=number)
    for key in ("date_modified", "date_modified_gmt"):
        order.pop(key, None)
    answer = requests.post(f"{url}/_fake/orders", json=order, timeout=5)
    answer.raise_for_status()
    return answer.json()


def test_an_order_no_webhook_brought_shows_as_found_by_reconciliation(woo_admin, woocommerce_url):
    from devtools.woocommerce_fake import encode, sign

    client = woo_admin.test_client()
    delivered = woo_order(woocommerce_url, 501, "A-501")
    woo_order(woocommerce_url, 502, "B-502")  # its webhook never came
    body = encode(delivered)
    answer = client.post("/webhooks/woocommerce", data=body, headers={
        "Content-Type": "application/json", "X-WC-Webhook-Source": f"{woocommerce_url}/",
        "X-WC-Webhook-Topic": "order.updated", "X-WC-Webhook-Resource": "order", "X-WC-Webhook-Event": "updated",
        "X-WC-Webhook-Signature": sign(body, WOO_WEBHOOK_SECRET)})
    assert answer.status_code == 200

    result = woo_admin.test_cli_runner().invoke(args=["reconcile"])
    assert result.exit_code == 0, result.output

    events = client.get("/admin/events", headers=AUTH).get_data(as_text=True)
    found = client.get("/admin/events?source=poll", headers=AUTH).get_data(as_text=True)
    stores = client.get("/admin/stores", headers=AUTH).get_data(as_text=True)
    assert len(rows(events)) == 2 and f"{FOUND} 1" in events
    assert len(rows(found)) == 1
    [store_row] = rows(stores)
    assert '<td class="num">1</td>' in store_row  # the pass found one event no webhook brought
    assert "never reconciled" not in store_row


def test_a_failed_pass_shows_its_error_on_the_stores_page(woo_admin, woocommerce_url):
    woo_order(woocommerce_url, 601, "601")
    rule = {"method": "GET", "path": "^orders$", "kind": "500", "times": None}
    requests.post(f"{woocommerce_url}/_fake/faults", json=[rule], timeout=5).raise_for_status()

    woo_admin.test_cli_runner().invoke(args=["reconcile"])

    [store_row] = rows(woo_admin.test_client().get("/admin/stores", headers=AUTH).get_data(as_text=True))
    error = db.session.scalars(sa.select(Watermark)).one().last_error
    assert error and "500" in error
    assert f'<td class="reason alert">{escape(error)}</td>' in store_row
    assert WOO_KEY not in store_row and WOO_SECRET not in store_row


# --- One store at a time ---------------------------------------------------------------------------------


def two_stores() -> tuple[Store, Store]:
    """Two stores of the same name on different platforms: only their ids tell them apart."""
    acme = Store(platform="shopify", domain="acme")
    other = Store(platform="stripe", domain="acme")
    db.session.add_all([acme, other])
    db.session.commit()
    return acme, other


def document_of(store: Store, state: str, number: int, **fields) -> Document:
    event = WebhookEvent(store=store, platform=store.platform, event_key=f"evt-{number}", topic="orders/paid",
                         body=b"{}", status=fields.pop("event_status", EventStatus.PROCESSED))
    document = Document(store=store, event=event, source_key=f"order:{number}:receipt",
                        doc_type="invoice_receipts", order_ref=f"#{1000 + number}", state=state,
                        proprietary_uid=f"uid-{number}", total="10.00", currency="EUR", **fields)
    db.session.add(document)
    db.session.commit()
    return document


def test_the_documents_list_shows_one_store_when_asked(admin, client):
    acme, other = two_stores()
    document_of(acme, DocumentState.DONE, 1)
    document_of(acme, DocumentState.HELD, 2, last_error="Needs a tax name.")
    document_of(other, DocumentState.HELD, 3, last_error="Needs a tax name.")

    everything = client.get("/admin/", headers=AUTH).get_data(as_text=True)
    only_acme = client.get(f"/admin/?store={acme.id}", headers=AUTH).get_data(as_text=True)
    acme_held = client.get(f"/admin/?store={acme.id}&state=held", headers=AUTH).get_data(as_text=True)

    assert len(rows(everything)) == 3
    assert "acme (shopify)" in everything and "acme (stripe)" in everything  # each row's store
    assert f'href="/admin/?store={other.id}"' in everything  # a row's store is one click from its list
    assert [("#1002" in row, "#1001" in row) for row in rows(only_acme)] == [(True, False), (False, True)]
    assert "#1003" not in only_acme
    assert "<h1>Documents · acme (shopify)</h1>" in only_acme  # which store it shows
    assert "<th>store</th>" not in only_acme
    assert "all 2" in only_acme and "held 1" in only_acme and "done 1" in only_acme  # this store's counts
    assert f"state=held&amp;store={acme.id}" in only_acme  # the state links keep the store
    [row] = rows(acme_held)
    assert "#1002" in row
    assert 'href="/admin/?state=held"' in acme_held  # back to every store's held documents


def test_the_events_list_shows_one_store_when_asked(admin, client):
    acme, other = two_stores()
    make_event("webhook", 1, topic="orders/paid", store=acme)
    make_event("poll", 2, topic="orders/updated", store=acme)
    make_event("poll", 3, topic="checkout.session.completed", store=other)

    everything = client.get("/admin/events", headers=AUTH).get_data(as_text=True)
    only_acme = client.get(f"/admin/events?store={acme.id}", headers=AUTH).get_data(as_text=True)
    acme_found = client.get(f"/admin/events?store={acme.id}&source=poll", headers=AUTH).get_data(as_text=True)

    assert len(rows(everything)) == 3 and f'href="/admin/events?store={other.id}"' in everything
    assert len(rows(only_acme)) == 2 and "checkout.session.completed" not in only_acme
    assert "all 2" in only_acme and f"{FOUND} 1" in only_acme
    assert f"source=poll&amp;store={acme.id}" in only_acme
    [row] = rows(acme_found)
    assert "orders/updated" in row


def test_the_store_filter_keeps_its_pages(admin, client):
    acme, other = two_stores()
    for number in range(1, 52):
        document_of(acme, DocumentState.HELD, number)
    document_of(other, DocumentState.HELD, 99)

    first = client.get(f"/admin/?store={acme.id}&state=held", headers=AUTH).get_data(as_text=True)
    second = client.get(f"/admin/?store={acme.id}&state=held&page=2", headers=AUTH).get_data(as_text=True)
    events = client.get(f"/admin/events?store={acme.id}", headers=AUTH).get_data(as_text=True)

    assert len(rows(first)) == 50 and "page 1 of 2 · 51 in all" in first
    assert f'href="/admin/?page=2&amp;state=held&amp;store={acme.id}"' in first
    [row] = rows(second)
    assert "#1001<" in row and "#1099" not in second
    assert f'href="/admin/events?page=2&amp;store={acme.id}"' in events


@pytest.mark.parametrize("value", ["999", "acme", "-1", "0", "99999999999999999999", "<b>x</b>"])
def test_an_unknown_store_shows_an_empty_list_saying_so(admin, client, value):
    acme, _ = two_stores()
    document_of(acme, DocumentState.HELD, 1)

    for url in ("/admin/", "/admin/events"):
        answer = client.get(url, query_string={"store": value}, headers=AUTH)
        page = answer.get_data(as_text=True)

        assert answer.status_code == 404
        assert "No such store" in page
        assert rows(page) == [] and "#1001" not in page
        assert "<b>x</b>" not in page
        assert f'href="{url}"' in page  # the way back to every store's list


def test_the_stores_page_counts_each_stores_documents_and_events(admin, client):
    acme, other = two_stores()
    document_of(acme, DocumentState.DONE, 1)
    document_of(acme, DocumentState.DONE, 2)
    document_of(acme, DocumentState.PENDING, 3)
    document_of(acme, DocumentState.EMAILED, 4)
    document_of(acme, DocumentState.HELD, 5)
    document_of(other, DocumentState.FAILED, 6, event_status=EventStatus.FAILED)
    make_event("poll", 7, store=other)

    acme_row, other_row = rows(client.get("/admin/stores", headers=AUTH).get_data(as_text=True))

    def links(row: str) -> set[tuple]:
        """Each link in the row: (what it shows, the page, its filters)."""
        found = set()
        for href, text in re.findall(r'<a[^>]* href="([^"]+)">([^<]*)</a>', row):
            parts = urlsplit(unescape(href))
            found.add((text, parts.path, *sorted(parse_qsl(parts.query))))
        return found

    acme_id, other_id = str(acme.id), str(other.id)
    assert links(acme_row) == {
        ("acme", "/admin/", ("store", acme_id)),  # the store's name leads to its documents
        ("5", "/admin/", ("store", acme_id)),
        ("2", "/admin/", ("state", "done"), ("store", acme_id)),
        ("2", "/admin/", ("state", "open"), ("store", acme_id)),  # pending and e-mailed: still moving
        ("1", "/admin/", ("state", "held"), ("store", acme_id)),
        ("5", "/admin/events", ("store", acme_id)),
    }
    assert links(other_row) == {
        ("acme", "/admin/", ("store", other_id)),
        ("1", "/admin/", ("store", other_id)),
        ("1", "/admin/", ("state", "failed"), ("store", other_id)),
        ("2", "/admin/events", ("store", other_id)),
        ("1", "/admin/events", ("status", "failed"), ("store", other_id)),
        ("1", "/admin/events", ("source", "poll"), ("store", other_id)),
    }
    in_progress = client.get(f"/admin/?store={acme.id}&state=open", headers=AUTH).get_data(as_text=True)
    assert [("#1004" in row, "#1003" in row) for row in rows(in_progress)] == [(True, False), (False, True)]
    assert "Documents · acme (shopify) · in progress" in in_progress


def test_the_stores_page_asks_the_same_queries_however_many_stores(admin, client):
    def statements() -> int:
        seen = []

        def count(*args) -> None:
            seen.append(args[2])

        sa.event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert client.get("/admin/stores", headers=AUTH).status_code == 200
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", count)
        return len(seen)

    acme, other = two_stores()
    document_of(acme, DocumentState.DONE, 1)
    document_of(other, DocumentState.HELD, 2)
    with_two = statements()
    for number in range(3, 7):
        document_of(Store(platform="woocommerce", domain=f"shop{number}.example"), DocumentState.DONE, number)

    assert statements() == with_two


# --- Filters and search ----------------------------------------------------------------------------------


def listed(page: str) -> list[str]:
    """The order names the documents list shows, top to bottom."""
    return re.findall(r'<td class="nowrap"><a href="/admin/documents/\d+">([^<]+)</a></td>', page)


def test_the_documents_list_filters_by_platform(admin, client):
    shop, stripe = two_stores()
    document_of(shop, DocumentState.DONE, 1)
    document_of(stripe, DocumentState.HELD, 2)

    page = client.get("/admin/?platform=stripe", headers=AUTH).get_data(as_text=True)

    assert listed(page) == ["#1002"]
    assert "all 1" in page and "held 1" in page and "done 0" in page
    assert listed(client.get("/admin/?platform=shopify", headers=AUTH).get_data(as_text=True)) == ["#1001"]
    assert client.get("/admin/?platform=magento", headers=AUTH).status_code == 400


def test_the_documents_list_filters_by_the_shops_days_of_creation(admin, client):
    # 23:30 in Lisbon on 31 July is 22:30 UTC: a day of the shop's, not of UTC.
    make_document(DocumentState.DONE, number=1, created_at=datetime(2024, 7, 31, 22, 30, tzinfo=UTC))
    make_document(DocumentState.DONE, number=2, created_at=datetime(2024, 7, 31, 23, 30, tzinfo=UTC))
    make_document(DocumentState.DONE, number=3, created_at=datetime(2024, 8, 2, 12, 0, tzinfo=UTC))

    def shown(query: str) -> list[str]:
        return listed(client.get(f"/admin/?{query}", headers=AUTH).get_data(as_text=True))

    assert shown("created_from=2024-08-01") == ["#1003", "#1002"]
    assert shown("created_to=2024-07-31") == ["#1001"]
    assert shown("created_from=2024-08-01&created_to=2024-08-01") == ["#1002"]
    assert shown("created_from=2024-08-03") == []
    answer = client.get("/admin/?created_from=31/07/2024", headers=AUTH)
    assert answer.status_code == 400 and "YYYY-MM-DD" in answer.get_data(as_text=True)


def test_the_search_finds_an_order_by_its_name_or_its_platform_id(admin, client):
    make_document(DocumentState.DONE, number=1)
    make_document(DocumentState.DONE, number=22)

    assert listed(client.get("/admin/?q=%231001", headers=AUTH).get_data(as_text=True)) == ["#1001"]
    assert listed(client.get("/admin/?q=1022", headers=AUTH).get_data(as_text=True)) == ["#1022"]
    # The platform's own order id (source_key order:22:receipt), as the shop's admin URL shows it.
    assert listed(client.get("/admin/?q=22", headers=AUTH).get_data(as_text=True)) == ["#1022"]
    assert listed(client.get("/admin/?q=%23", headers=AUTH).get_data(as_text=True)) == ["#1022", "#1001"]


def test_the_search_finds_a_document_by_its_number(admin, client):
    make_document(DocumentState.DONE, number=1, sequence_number="FR 2024/7")
    make_document(DocumentState.DONE, number=2, sequence_number="FR 2024/17")

    assert listed(client.get("/admin/?q=2024/7", headers=AUTH).get_data(as_text=True)) == ["#1001"]
    assert listed(client.get("/admin/?q=fr+2024/1", headers=AUTH).get_data(as_text=True)) == ["#1002"]


def test_wildcards_in_a_search_are_taken_literally(admin, client):
    make_document(DocumentState.DONE, number=1, sequence_number="FR 2024/7")

    for term in ("%", "_", "FR_2024", "\\"):
        page = client.get("/admin/", query_string={"q": term}, headers=AUTH).get_data(as_text=True)
        assert listed(page) == [], term
        assert "matching these filters" in page


def test_the_search_finds_an_orders_documents_by_the_customers_email(admin, client, sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))  # ana.silva@example.pt
    post_order(fixture_body("paid_madeira.json"))
    drain(queue)
    post_order(fixture_body("refund_full_b2c.json"), topic="refunds/create")  # no e-mail in it
    drain(queue)
    by_key = {d.source_key: d for d in db.session.scalars(sa.select(Document))}
    madeira = json.loads(fixture_body("paid_madeira.json"))
    assert madeira["email"] != "ana.silva@example.pt"

    def shown(term: str) -> set[int]:
        page = client.get("/admin/", query_string={"q": term}, headers=AUTH).get_data(as_text=True)
        return {int(n) for n in re.findall(r'<td><a href="/admin/documents/(\d+)">', page)}

    ana = {by_key["order:5801234567001:receipt"].id, by_key["refund:1012345678002:credit_note"].id}
    assert shown("ana.silva@example.pt") == ana  # the sale and its credit note
    assert shown("ANA.Silva@Example.PT") == ana
    assert shown("silva@") == ana
    assert shown(madeira["email"]) == {by_key[f"order:{madeira['id']}:receipt"].id}
    assert shown("nobody@example.pt") == set()
    assert shown("_na.silva@example.pt") == set()  # a LIKE wildcard is a character like any other
    assert shown("%@%") == set()


def test_filters_combine_and_survive_pagination(admin, client):
    shop, stripe = two_stores()
    for number in range(1, 53):
        document_of(shop, DocumentState.HELD, number, sequence_number=f"FR 2024/{number}")
    document_of(stripe, DocumentState.HELD, 99, sequence_number="FR 2024/99")
    document_of(shop, DocumentState.DONE, 100, sequence_number="FR 2024/100")

    first = client.get(f"/admin/?state=held&store={shop.id}&platform=shopify&q=FR+2024&created_from=2000-01-01",
                       headers=AUTH).get_data(as_text=True)

    assert "page 1 of 2 · 52 in all" in first
    [later] = re.findall(r'href="([^"]*page=2[^"]*)"', first)
    asked = dict(parse_qsl(urlsplit(unescape(later)).query))
    assert asked == {"page": "2", "state": "held", "store": str(shop.id), "platform": "shopify", "q": "FR 2024",
                     "created_from": "2000-01-01"}
    second = client.get(unescape(later), headers=AUTH).get_data(as_text=True)
    assert listed(second) == ["#1002", "#1001"]
    assert "#1099" not in second and "#1100" not in second
    # The counts are of the other filters: a state link keeps the search, the store and the dates.
    assert "done 1" in first
    [done] = re.findall(r'href="([^"]*state=done[^"]*)"', first)
    assert listed(client.get(unescape(done), headers=AUTH).get_data(as_text=True)) == ["#1100"]


# --- An order's whole story -------------------------------------------------------------------------------


def story_times(page: str) -> list[str]:
    story = page[page.index("<h2>Story</h2>"):]
    return re.findall(r'<td class="nowrap">(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [A-Z+\d]+)</td>', story)


def test_an_orders_story_shows_its_events_and_documents_in_time_order(admin, client, sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    post_order(fixture_body("paid_madeira.json"))
    drain(queue)
    post_order(fixture_body("refund_full_b2c.json"), topic="refunds/create")
    post_order(fixture_body("paid_b2c_tax_included.json"))  # delivered again: covered already
    drain(queue)
    by_key = {d.source_key: d for d in db.session.scalars(sa.select(Document))}
    sale, credit = by_key["order:5801234567001:receipt"], by_key["refund:1012345678002:credit_note"]
    madeira = by_key[f"order:{json.loads(fixture_body('paid_madeira.json'))['id']}:receipt"]
    events = db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id)).all()
    ours = [e.id for e in events if e.id != madeira.event_id]
    assert len(ours) == 3

    document_page = client.get(f"/admin/documents/{credit.id}", headers=AUTH).get_data(as_text=True)
    url = f"/admin/stores/{sale.store_id}/orders/5801234567001"
    assert f'href="{url}"' in document_page  # from the credit note too
    page = client.get(url, headers=AUTH).get_data(as_text=True)

    assert "Order #1001" in page
    for event_id in ours:
        assert f">event {event_id}<" in page
    assert f">event {madeira.event_id}<" not in page
    assert f'href="/admin/documents/{sale.id}"' in page and f'href="/admin/documents/{credit.id}"' in page
    assert f'href="/admin/documents/{madeira.id}"' not in page
    assert "credit note" in page and sale.sequence_number in page and credit.sequence_number in page
    assert "already covers this order" in page  # the second delivery's note
    assert "ana.silva@example.pt" not in page  # the bodies stay unshown
    times = story_times(page)
    assert len(times) >= 3 + 8 and times == sorted(times)
    # The sale was finalized before its refund came, and its credit note after.
    story = [(of, message) for of, message in re.findall(
        r'<tr>\s*<td class="nowrap">[^<]*</td>\s*<td class="nowrap">(?:<a [^>]*>)?([^<]+)(?:</a>)?</td>\s*<td>.*?'
        r'</td>\s*<td class="reason">([^<]*)</td>', page[page.index("<h2>Story</h2>"):], re.S)]
    assert len(story) == len(times)

    def finalized(document: Document) -> int:
        return next(n for n, (of, message) in enumerate(story)
                    if of == f"document {document.id}" and f"Finalized as {document.sequence_number}" in message)

    sale_final, credit_final = finalized(sale), finalized(credit)
    refund_came = story.index((f"event {ours[1]}", ""))
    assert sale_final < refund_came < credit_final


def test_an_order_nothing_names_is_not_found(admin, client):
    make_document(DocumentState.DONE, number=1)
    store_id = db.session.scalar(sa.select(Store.id))

    answer = client.get(f"/admin/stores/{store_id}/orders/777", headers=AUTH)
    assert answer.status_code == 404
    assert "No event or document of this store names order 777" in answer.get_data(as_text=True)
    assert client.get("/admin/stores/999/orders/1", headers=AUTH).status_code == 404
    assert client.get(f"/admin/stores/{store_id}/orders/1", headers=AUTH).status_code == 200


# --- Actions ---------------------------------------------------------------------------------------------


def timeline_of(document: Document) -> list[DocumentEvent]:
    return db.session.scalars(sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id)
                              .order_by(DocumentEvent.id)).all()


def post_action(client, url: str, **form):
    return client.post(url, data=form, headers={**AUTH, **ORIGIN})


def fresh(document: Document | int) -> Document:
    """The document as the database has it now (from its id: a job that ran may have ended its session)."""
    db.session.expire_all()
    return db.session.get(Document, document if isinstance(document, int) else document.id)


def test_an_action_answers_with_a_message_on_the_page_it_goes_back_to(admin, client):
    document = make_document(DocumentState.HELD)

    answer = post_action(client, f"/admin/documents/{document.id}/retry", next="/admin/?state=held")
    page = client.get(answer.headers["Location"], headers=AUTH).get_data(as_text=True)

    assert 'class="notice"' in page and "Retry requested" in page
    assert 'class="notice"' not in client.get("/admin/?state=held", headers=AUTH).get_data(as_text=True)
    assert 'class="notice"' not in client.get("/admin/?notice=<b>hi</b>", headers=AUTH).get_data(as_text=True)


def test_releasing_a_hold_plans_it_again_with_todays_settings(admin, client, post_order, queue, caplog):
    from connector.issuing import init_invoicexpress
    from devtools.invoicexpress_sandbox import serve_in_thread

    document = held_order(admin, post_order, queue).id  # the jobs end their sessions: keep the id only
    caplog.set_level(logging.INFO)
    url, server = serve_in_thread(api_key="test-api-key-0123456789")
    try:
        admin.config.update(INVOICEXPRESS_BASE_URL=url, INVOICEXPRESS_READ_TIMEOUT=2)
        init_invoicexpress(admin)
        admin.config["ISSUING"]["tax_names"][Decimal(23)] = "IVA23"  # the fix

        answer = post_action(client, f"/admin/documents/{document}/release")
        released = fresh(document)
        assert location(answer) == (f"/admin/documents/{document}", {"notice": "released"})
        assert (released.state, released.last_error, released.attempts) == (DocumentState.PENDING, None, 0)
        assert queue.job_ids == [released.job_id]
        drain(queue)
    finally:
        server.shutdown()

    document = fresh(document)
    assert document.state == DocumentState.DONE and document.sequence_number
    kinds = [entry.kind for entry in timeline_of(document)]
    assert kinds[:2] == ["held", "released"]
    released_entry = timeline_of(document)[1]
    assert "today's settings" in released_entry.message and "23 %" in released_entry.message
    assert [r.getMessage() for r in caplog.records if "released" in r.getMessage()] == [
        f"document {document.id} hold released by operator"]


@pytest.mark.parametrize(("state", "ix_id", "says"), [
    (DocumentState.FAILED, None, "only a held document can be released"),
    (DocumentState.DONE, 5, "only a held document can be released"),
    (DocumentState.HELD, 5, "use Retry, which continues from that draft"),
])
def test_release_of_what_is_not_a_hold_before_ix_is_refused(admin, client, queue, state, ix_id, says):
    document = make_document(state, ix_id=ix_id, last_error="Why.")

    answer = post_action(client, f"/admin/documents/{document.id}/release")

    assert answer.status_code == 409 and says in answer.get_data(as_text=True)
    document = fresh(document)
    assert (document.state, document.last_error) == (state, "Why.")
    assert timeline_of(document) == [] and queue.job_ids == []


class EmailingClient:
    def __init__(self, fail: Exception | None = None):
        self.sent: list[tuple] = []
        self.fail = fail

    def email_document(self, doc_type, document_id, body):
        if self.fail:
            raise self.fail
        self.sent.append((doc_type, document_id, body))


def done_order(app, post_order, queue) -> Document:
    document = held_order(app, post_order, queue)
    document.state, document.ix_id, document.sequence_number = DocumentState.DONE, 321, "FR 2024/9"
    document.last_error = None
    db.session.commit()
    return document


def test_resending_the_email_of_a_done_document_emails_it_again(admin, client, post_order, queue, no_ix, caplog):
    document = done_order(admin, post_order, queue)
    ix = EmailingClient()
    admin.extensions["invoicexpress"] = lambda store=None: ix
    caplog.set_level(logging.INFO)

    answer = post_action(client, f"/admin/documents/{document.id}/email")
    assert location(answer) == (f"/admin/documents/{document.id}", {"notice": "emailing"})
    assert ix.sent == []  # queued, not sent by the page
    drain(queue)

    [(doc_type, ix_id, body)] = ix.sent
    assert (doc_type, ix_id) == ("invoice_receipts", 321)
    assert body["message"]["client"]["email"] == "ana.silva@example.pt"
    messages = [entry.message for entry in timeline_of(document) if entry.kind == "email"]
    assert messages == ["Re-send of the e-mail requested by operator.",
                        "E-mailed again to the customer, as the operator asked."]
    assert fresh(document).state == DocumentState.DONE
    assert "ana.silva@example.pt" not in caplog.text


def test_a_resend_ix_refuses_says_so_in_the_timeline(admin, client, post_order, queue):
    from connector.invoicexpress.client import PermanentError

    document = done_order(admin, post_order, queue)
    admin.extensions["invoicexpress"] = lambda store=None: EmailingClient(PermanentError("Client has no email",
                                                                                         422))
    post_action(client, f"/admin/documents/{document.id}/email")
    drain(queue)

    last = timeline_of(document)[-1]
    assert (last.kind, last.status_code) == ("email", 422)
    assert "not sent again" in last.message and "Client has no email" in last.message


@pytest.mark.parametrize(("state", "ix_id"), [(DocumentState.HELD, None), (DocumentState.PENDING, None),
                                              (DocumentState.DONE, None), (DocumentState.FINALIZED, 4)])
def test_resending_the_email_of_an_unfinished_or_hand_issued_document_is_refused(admin, client, queue, state,
                                                                                 ix_id):
    document = make_document(state, ix_id=ix_id)

    answer = post_action(client, f"/admin/documents/{document.id}/email")

    assert answer.status_code == 409
    assert "only a document the connector issued and finished" in answer.get_data(as_text=True)
    assert queue.job_ids == [] and timeline_of(document) == []


def test_replaying_an_event_never_issues_its_order_twice(admin, client, sandbox, post_order, queue, caplog):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)
    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.state == DocumentState.DONE
    document_id, event_id = document.id, document.event_id  # the jobs end their sessions: keep the ids only
    caplog.set_level(logging.INFO)

    answer = post_action(client, f"/admin/events/{event_id}/replay", next="/admin/events")
    assert location(answer) == ("/admin/events", {"notice": "replayed"})
    event = db.session.get(WebhookEvent, event_id)
    db.session.refresh(event)
    assert (event.status, event.note) == (EventStatus.RECEIVED, None)
    drain(queue)

    db.session.expire_all()
    assert len(db.session.scalars(sa.select(Document)).all()) == 1
    assert len([d for d in sandbox.documents() if d["type"] == "InvoiceReceipt"]) == 1
    event = db.session.get(WebhookEvent, event_id)
    assert event.status == EventStatus.PROCESSED and "already covers this order" in event.note
    assert fresh(document_id).state == DocumentState.DONE
    replayed = [entry for entry in timeline_of(fresh(document_id)) if entry.kind == "replay"]
    assert len(replayed) == 1 and f"Event {event.id}" in replayed[0].message
    assert f"event {event.id} replayed by operator (was processed)" in caplog.text


def test_a_failed_event_replayed_after_a_fix_is_read_again(admin, client, queue):
    event = make_event("webhook", 1, status=EventStatus.FAILED)

    post_action(client, f"/admin/events/{event.id}/replay")

    db.session.expire_all()
    assert db.session.get(WebhookEvent, event.id).status == EventStatus.RECEIVED
    assert queue.job_ids == [f"event-{event.id}"]
    page = client.get("/admin/events", headers=AUTH).get_data(as_text=True)
    assert f'action="/admin/events/{event.id}/replay"' not in page  # received: nothing to replay yet


@pytest.mark.parametrize("status", [EventStatus.RECEIVED, EventStatus.IGNORED])
def test_replaying_an_event_not_processed_or_failed_is_refused(admin, client, queue, status):
    event = make_event("webhook", 1, status=status)

    answer = post_action(client, f"/admin/events/{event.id}/replay")

    assert answer.status_code == 409 and "only processed or failed events" in answer.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(WebhookEvent, event.id).status == status
    assert queue.job_ids == []


def test_a_held_order_closed_as_issued_by_hand_is_done_with_its_number(admin, client, queue, caplog):
    document = make_document(DocumentState.HELD, last_error="Needs a tax name.")
    caplog.set_level(logging.INFO)

    answer = post_action(client, f"/admin/documents/{document.id}/close", outcome="by_hand",
                         number="  FR 2024/55 ")

    assert location(answer) == (f"/admin/documents/{document.id}", {"notice": "by_hand"})
    document = fresh(document)
    assert (document.state, document.sequence_number, document.ix_id, document.last_error) == (
        DocumentState.DONE, "FR 2024/55", None, None)
    [entry] = timeline_of(document)
    assert entry.kind == "closed" and "issued by hand as FR 2024/55" in entry.message
    assert "Needs a tax name." in entry.message
    assert queue.job_ids == []
    page = client.get(f"/admin/documents/{document.id}", headers=AUTH).get_data(as_text=True)
    assert "Re-send the e-mail" not in page  # IX never had it


def test_a_held_order_closed_as_owing_nothing_is_canceled_with_the_reason(admin, client):
    document = make_document(DocumentState.HELD, last_error="Needs a tax name.")

    post_action(client, f"/admin/documents/{document.id}/close", outcome="owes_nothing",
                reason="Staff test order, never shipped.")

    document = fresh(document)
    assert (document.state, document.last_error) == (DocumentState.CANCELED, "Staff test order, never shipped.")
    [entry] = timeline_of(document)
    assert entry.kind == "closed" and "owes nothing" in entry.message and "never shipped" in entry.message
    listed_page = client.get("/admin/?state=canceled", headers=AUTH).get_data(as_text=True)
    assert "Staff test order, never shipped." in listed_page


@pytest.mark.parametrize(("state", "form", "status", "says"), [
    (DocumentState.HELD, {"outcome": "by_hand", "number": "  "}, 400, "Give the number"),
    (DocumentState.HELD, {"outcome": "by_hand", "number": "X" * 65}, 400, "Give the number"),
    (DocumentState.HELD, {"outcome": "owes_nothing", "reason": ""}, 400, "Say why"),
    (DocumentState.HELD, {"outcome": "vanished"}, 400, "Choose how"),
    (DocumentState.FAILED, {"outcome": "by_hand", "number": "FR 1"}, 409, "only a held document"),
    (DocumentState.DONE, {"outcome": "owes_nothing", "reason": "x"}, 409, "only a held document"),
])
def test_closing_by_hand_refuses_what_it_cannot_do(admin, client, state, form, status, says):
    document = make_document(state, last_error="Why.")

    answer = post_action(client, f"/admin/documents/{document.id}/close", **form)

    assert answer.status_code == status and says in answer.get_data(as_text=True)
    document = fresh(document)
    assert (document.state, document.last_error, document.sequence_number) == (state, "Why.", None)
    assert timeline_of(document) == []


@pytest.mark.parametrize(("path", "form"), [
    ("documents/1/release", {}),
    ("documents/1/email", {}),
    ("documents/1/close", {"outcome": "by_hand", "number": "FR 1"}),
    ("documents/1/close", {"outcome": "owes_nothing", "reason": "none"}),
    ("events/1/replay", {}),
])
def test_every_action_refuses_a_post_from_another_site(admin, client, queue, path, form):
    document = make_document(DocumentState.HELD, last_error="Why.")
    db.session.get(WebhookEvent, document.event_id).status = EventStatus.FAILED
    db.session.commit()

    answer = client.post(f"/admin/{path}", data=form, headers={**AUTH, "Origin": "https://evil.example"})

    assert answer.status_code == 403
    document = fresh(document)
    assert (document.state, document.last_error) == (DocumentState.HELD, "Why.")
    assert db.session.get(WebhookEvent, document.event_id).status == EventStatus.FAILED
    assert timeline_of(document) == [] and queue.job_ids == []
    assert client.post(f"/admin/{path}", data=form, headers={**basic("admin", "nope-nope-nope"),
                                                              **ORIGIN}).status_code == 401


def test_a_documents_pdf_link_shows_in_the_list_and_its_page_offers_what_fits_its_state(admin, client):
    done = make_document(DocumentState.DONE, ix_id=8, number=1, permalink="https://ix.example/pdf/abc")
    held = make_document(DocumentState.HELD, number=2)

    page = client.get("/admin/", headers=AUTH).get_data(as_text=True)
    assert '<a href="https://ix.example/pdf/abc" rel="noopener noreferrer">PDF</a>' in page

    done_page = client.get(f"/admin/documents/{done.id}", headers=AUTH).get_data(as_text=True)
    held_page = client.get(f"/admin/documents/{held.id}", headers=AUTH).get_data(as_text=True)
    assert "Re-send the e-mail" in done_page and "Release the hold" not in done_page
    assert "Retry" not in done_page
    for action in ("Retry", "Release the hold", "Close: issued by hand", "Close: owes nothing"):
        assert action in held_page
    assert "Re-send the e-mail" not in held_page
