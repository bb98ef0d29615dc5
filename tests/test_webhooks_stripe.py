"""Stripe intake and pipeline: what Stripe gets back for each delivery, what is stored, and what is issued at
InvoiceXpress once the worker has read the sale's lines (and refunds) from Stripe."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from connector import create_app, jobs
from connector.extensions import db
from connector.inbox import find_or_create_store
from connector.issuing import plan_document
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, Store
from devtools import stripe_fake
from tests.conftest import drain, run_scheduled_now, settings, tables_of
from tests.test_webhooks_woocommerce import documents, events

URL = "/webhooks/stripe"
SECRET = "whsec_test_stripe_secret"
KEY = stripe_fake.DEFAULT_KEY
INTENT = "pi_3QhT7uAbCdEfGh1J0kLmNoPq"
SESSION = "cs_live_a1B2c3D4e5F6g7H8i9J0kLmNoPq"
CHARGE = "ch_3QhT7uAbCdEfGh1J0kLmNoPq"


# --- Stripe objects as its API writes them ------------------------------------------------------------


def tax(amount: int, percentage: float = 23.0, inclusive: bool = False) -> dict:
    return {"amount": amount, "rate": {"id": "txr_1PqRs2AbCdEfGh", "object": "tax_rate", "percentage": percentage,
                                       "inclusive": inclusive, "display_name": "IVA", "country": "PT"},
            "taxability_reason": "standard_rated", "taxable_amount": None}


def line_item(description: str, quantity: int, unit_amount: int, percentage: float | None = 23.0,
              product: str = "prod_RzMug001") -> dict:
    """A Checkout line priced without VAT with Stripe's tax on top (or, `percentage` None, no tax at all)."""
    subtotal = unit_amount * quantity
    vat = round(subtotal * percentage / 100) if percentage is not None else 0
    return {
        "id": f"li_{product}", "object": "item", "amount_discount": 0, "amount_subtotal": subtotal,
        "amount_tax": vat, "amount_total": subtotal + vat, "currency": "eur", "description": description,
        "quantity": quantity,
        "price": {"id": f"price_{product}", "object": "price", "product": product, "unit_amount": unit_amount,
                  "tax_behavior": "exclusive" if percentage is not None else "unspecified"},
        "taxes": [tax(vat, percentage)] if percentage is not None else [],
    }


# Two mugs at 25.00 and a postcard at 12.00, 23 % VAT on top: 50.00 + 11.50 + 12.00 + 2.76 = 76.26.
LINES = [line_item("Caneca de cerâmica", 2, 2500), line_item("Postal ilustrado", 1, 1200, product="prod_RzPost01")]


def session(lines: list[dict] | None = None, **changes) -> dict:
    """A paid Checkout Session as its events carry it (no line items), Stripe Tax on, total of `lines`."""
    lines = LINES if lines is None else lines
    taxed = any(item["taxes"] for item in lines)
    obj = {
        "id": SESSION, "object": "checkout.session",
        "amount_subtotal": sum(item["amount_subtotal"] for item in lines),
        "amount_total": sum(item["amount_total"] for item in lines),
        "automatic_tax": {"enabled": taxed, "liability": None, "status": "complete" if taxed else None},
        "client_reference_id": None, "created": 1763976000, "currency": "eur", "customer": "cus_RzX4kQ9bLm2Vt1",
        "customer_details": {
            "address": {"city": "Lisboa", "country": "PT", "line1": "Rua Augusta 100", "line2": None,
                        "postal_code": "1100-053", "state": None},
            "business_name": None, "email": "ana.ferreira@example.pt", "individual_name": None,
            "name": "Ana Ferreira", "phone": None, "tax_exempt": "none", "tax_ids": [],
        },
        "invoice_creation": {"enabled": False}, "livemode": True, "mode": "payment", "payment_intent": INTENT,
        "payment_method_types": ["card"], "payment_status": "paid", "status": "complete", "shipping_cost": None,
        "shipping_details": None,
        "total_details": {"amount_discount": 0, "amount_shipping": 0,
                          "amount_tax": sum(item["amount_tax"] for item in lines)},
    }
    obj.update(changes)
    return obj


def refund(refund_id: str = "re_3QhX1eAbCdEfGh1Refund01", amount: int = 1845, intent: str = INTENT,
           **changes) -> dict:
    obj = {"id": refund_id, "object": "refund", "amount": amount, "balance_transaction": "txn_3QhT7uAbCdEf",
           "charge": CHARGE, "created": 1764235200, "currency": "eur", "metadata": {}, "payment_intent": intent,
           "reason": "requested_by_customer", "status": "succeeded"}
    obj.update(changes)
    return obj


def charge(refunds: list[dict] | None, intent: str = INTENT, amount: int = 7626) -> dict:
    """A refunded charge; `refunds` None: as API versions since 2022-11-15 send it, without its refunds."""
    obj = {"id": CHARGE, "object": "charge", "amount": amount, "amount_captured": amount,
           "amount_refunded": sum(r["amount"] for r in refunds or []), "captured": True, "created": 1763976003,
           "currency": "eur", "livemode": True, "paid": True, "payment_intent": intent, "refunded": False,
           "status": "succeeded"}
    if refunds is not None:
        obj["refunds"] = {"object": "list", "data": refunds, "has_more": False, "total_count": len(refunds),
                          "url": f"/v1/charges/{CHARGE}/refunds"}
    return obj


def payment_intent(intent_id: str = "pi_3QhZ9zAbCdEfGh1NoSession", amount: int = 12300, **changes) -> dict:
    obj = {"id": intent_id, "object": "payment_intent", "amount": amount, "amount_received": amount,
           "currency": "eur", "status": "succeeded", "created": 1764000000, "livemode": True,
           "customer": None, "receipt_email": None, "description": None, "latest_charge": f"ch_{intent_id[3:]}"}
    obj.update(changes)
    return obj


_counter = iter(range(1, 10**9))


def event(kind: str, obj: dict, event_id: str | None = None, livemode: bool = True) -> dict:
    """A Stripe event about `obj`, as Stripe delivers it."""
    return {"id": event_id or f"evt_1QhT7vAbCdEf{next(_counter):06d}", "object": "event",
            "api_version": "2025-03-31.basil", "created": int(time.time()), "data": {"object": obj},
            "livemode": livemode, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
            "type": kind}


def signature(body: bytes, secret: str = SECRET, t: int | None = None) -> str:
    return stripe_fake.sign(body, secret, t)


# --- the app, with Stripe on and its API served by the fake -------------------------------------------


def stripe_settings(api_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    return settings(**{"STRIPE_WEBHOOK_SECRET": SECRET, "STRIPE_API_KEY": KEY, "STRIPE_API_BASE_URL": api_url,
                       "STRIPE_READ_TIMEOUT": "2", **extra})


@pytest.fixture(scope="module")
def stripe_url():
    with stripe_fake.running() as url:
        yield url


@pytest.fixture
def env_extra() -> dict[str, str]:
    """More environment for the app; a test parametrizes it to set, say, DEFAULT_VAT_RATE."""
    return {}


@pytest.fixture
def app(redis, tmp_path, stripe_url, env_extra):
    """The conftest app with Stripe enabled (conftest's client, queue and sandbox use this one)."""
    app = create_app(overrides={"REDIS_CONNECTION": redis},
                     environ=stripe_settings(stripe_url, DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}",
                                             **env_extra))
    with tables_of(app):
        yield app


@pytest.fixture
def stripe(stripe_url):
    fake = stripe_fake.Control(stripe_url)
    fake.reset()
    return fake


@pytest.fixture
def post_stripe(client):
    """Deliver a Stripe event to `url`, signed as Stripe signs it; returns the response."""

    def post(body: bytes | dict, url: str = URL, secret: str = SECRET, t: int | None = None):
        if isinstance(body, dict):
            body = stripe_fake.encode(body)
        return client.post(url, data=body, headers={"Content-Type": "application/json; charset=utf-8",
                                                    "User-Agent": stripe_fake.USER_AGENT,
                                                    "Stripe-Signature": signature(body, secret, t)})

    return post


def timeline(document: Document) -> list[tuple[str, str]]:
    return [(entry.kind, entry.message) for entry in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id))]


def calls_to(stripe, path_part: str) -> list[dict]:
    return [call for call in stripe.calls() if path_part in call["path"]]


def items_of(issued: dict) -> list[tuple[str, Decimal, str]]:
    """What an IX document lists: each line's description, quantity and tax name."""
    return [(item["description"], Decimal(str(item["quantity"])), item["tax"]["name"])
            for item in issued["document"]["items"]]


def total_of(issued: dict) -> Decimal:
    return Decimal(str(issued["totals"]["total"]))


def set_store(domain: str = "default", **values: str) -> None:
    """The store's own settings, as `flask stores set DOMAIN KEY=VALUE --platform stripe` keeps them."""
    store = find_or_create_store("stripe", domain)
    store.settings = {**store.settings, **values}
    db.session.commit()


# --- intake ------------------------------------------------------------------------------------------


def test_a_signed_event_is_accepted_stored_once_and_queued(post_stripe, queue):
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    answers = [post_stripe(body) for _ in range(2)]  # Stripe redelivers until it hears 200

    assert [(a.status_code, a.json["status"]) for a in answers] == [(200, "accepted"), (200, "duplicate")]
    [stored] = events()
    assert (stored.platform, stored.topic, stored.status) == ("stripe", "checkout.session.completed",
                                                              EventStatus.RECEIVED)
    assert stored.body == body
    assert stored.store.domain == "default"
    assert queue.job_ids == [jobs.event_job_id(stored.id)]


def test_the_same_event_id_is_one_event_even_if_its_body_changed(post_stripe):
    """Stripe's `evt_` id is the event: a redelivery after an API upgrade is still the same event."""
    first = event("checkout.session.completed", session(), event_id="evt_1SameSameSame0001")
    again = {**first, "pending_webhooks": 2}
    assert post_stripe(first).json["status"] == "accepted"
    assert post_stripe(again).json["status"] == "duplicate"
    assert len(events()) == 1


@pytest.mark.parametrize("how", ["another secret", "missing", "tampered body", "no v1", "stale", "future",
                                 "not hex", "two timestamps"])
def test_a_bad_missing_or_out_of_window_signature_is_401_and_stores_nothing(client, queue, how):
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    now = int(time.time())
    headers = {"Content-Type": "application/json", "Stripe-Signature": signature(body)}
    if how == "another secret":
        headers["Stripe-Signature"] = signature(body, "whsec_not_the_secret")
    elif how == "missing":
        del headers["Stripe-Signature"]
    elif how == "tampered body":
        body = body.replace(b'"paid"', b'"unpaid"', 1)
    elif how == "no v1":
        headers["Stripe-Signature"] = f"t={now}"
    elif how == "stale":  # older than Stripe's 5 minutes: a replay
        headers["Stripe-Signature"] = signature(body, t=now - 301)
    elif how == "future":
        headers["Stripe-Signature"] = signature(body, t=now + 301)
    elif how == "not hex":
        headers["Stripe-Signature"] = f"t={now},v1=" + "zz" * 32
    else:
        headers["Stripe-Signature"] = signature(body) + f",t={now}"

    answer = client.post(URL, data=body, headers=headers)

    assert (answer.status_code, answer.json["status"]) == (401, "invalid signature")
    assert events() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Store)) == 0
    assert queue.job_ids == []


def test_a_signature_just_inside_the_window_is_accepted(post_stripe):
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    assert post_stripe(body, t=int(time.time()) - 290).json["status"] == "accepted"


def test_any_of_several_v1_signatures_may_match(client):
    """While Stripe rolls an endpoint's secret it signs with the old and the new one."""
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    now = int(time.time())
    valid = signature(body, t=now).split(",v1=")[1]
    other = signature(body, "whsec_the_rolled_out_one", t=now).split(",v1=")[1]
    header = f"t={now},v1={other},v0=ignored,v1={valid}"
    answer = client.post(URL, data=body, headers={"Stripe-Signature": header})
    assert (answer.status_code, answer.json["status"]) == (200, "accepted")


@pytest.mark.parametrize("env_extra", [{"STRIPE_WEBHOOK_SECRET": f"whsec_the_new_one,{SECRET}"}])
def test_both_secrets_of_a_rotation_are_accepted_and_no_other(post_stripe):
    statuses = [post_stripe(event("checkout.session.completed", session()), secret=secret).status_code
                for secret in (SECRET, "whsec_the_new_one", "whsec_an_old_one")]
    assert statuses == [200, 200, 401]
    assert len(events()) == 2


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe", b"", b'"evt_1"'])
def test_an_unreadable_signed_body_gets_400_and_stores_nothing(post_stripe, body):
    answer = post_stripe(body)
    assert (answer.status_code, answer.json["status"]) == (400, "unreadable body")
    assert answer.json["error"]
    assert events() == []


@pytest.mark.parametrize("path, store", [("/webhooks/stripe/shop-a", "shop-a"), ("/webhooks/stripe", "default"),
                                         ("/webhooks/stripe/loja.example_2", "loja.example_2")])
def test_the_url_names_the_store_and_no_name_is_the_default_store(post_stripe, path, store):
    answer = post_stripe(event("checkout.session.completed", session()), url=path)
    assert answer.json["status"] == "accepted"
    [stored] = events()
    assert (stored.store.platform, stored.store.domain) == ("stripe", store)


def test_the_same_event_for_two_stores_is_two_events(post_stripe):
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    assert post_stripe(body, url="/webhooks/stripe/shop-a").json["status"] == "accepted"
    assert post_stripe(body, url="/webhooks/stripe/shop-b").json["status"] == "accepted"
    assert sorted(e.store.domain for e in events()) == ["shop-a", "shop-b"]


@pytest.mark.parametrize("name", ["Shop-A", "-shop", "shop%20a", "a" * 101, "sh%C3%B6p", "_x", ".hidden"])
def test_a_store_name_that_is_no_store_name_is_404_and_stores_nothing(post_stripe, queue, name):
    answer = post_stripe(event("checkout.session.completed", session()), url=f"/webhooks/stripe/{name}")
    assert answer.status_code == 404
    assert events() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Store)) == 0
    assert queue.job_ids == []


@pytest.mark.parametrize("kind, obj", [
    ("customer.created", {"id": "cus_RzX4kQ9bLm2Vt1", "object": "customer"}),
    ("payment_intent.created", payment_intent(status="requires_payment_method")),
    ("invoice.paid", {"id": "in_1QhT7v", "object": "invoice"}),
])
def test_other_event_types_are_stored_as_ignored_and_not_queued(post_stripe, queue, kind, obj):
    answer = post_stripe(event(kind, obj))
    assert (answer.status_code, answer.json["status"]) == (200, "ignored")
    [stored] = events()
    assert (stored.topic, stored.status) == (kind, EventStatus.IGNORED)
    assert queue.job_ids == []


def test_a_test_mode_event_owes_nothing_and_says_why(post_stripe, queue, stripe):
    stripe.add_session(session(livemode=False), LINES)
    post_stripe(event("checkout.session.completed", session(livemode=False), livemode=False))
    drain(queue)

    assert documents() == []
    [stored] = events()
    assert stored.status == EventStatus.PROCESSED
    assert "test mode" in stored.note and "ISSUE_TEST_ORDERS" in stored.note
    assert stripe.calls() == []  # nothing read from Stripe for it


@pytest.mark.parametrize("env_extra", [{"ISSUE_TEST_ORDERS": "true"}])
def test_a_test_mode_payment_is_invoiced_when_test_orders_are(sandbox, post_stripe, queue, stripe):
    stripe.add_session(session(livemode=False), LINES)
    post_stripe(event("checkout.session.completed", session(livemode=False), livemode=False))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert len(sandbox.documents()) == 1


# --- the pipeline: a sale read from Stripe, then issued ----------------------------------------------


def test_a_paid_session_is_one_document_with_its_lines_read_from_stripe_once(sandbox, post_stripe, queue, stripe):
    stripe.add_session(session(), LINES)
    body = stripe_fake.encode(event("checkout.session.completed", session()))
    post_stripe(body)
    drain(queue)
    post_stripe(body)  # a redelivery
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert (document.order_ref, document.currency, document.total) == (INTENT, "EUR", "76.26")
    kept = json.loads(document.snapshot)
    assert [item["description"] for item in kept["line_items"]["data"]] == ["Caneca de cerâmica",
                                                                            "Postal ilustrado"]
    assert any(kind == "snapshot" for kind, _ in timeline(document))
    # Read once: creating, finalizing and e-mailing all used the lines kept on the row.
    assert len(calls_to(stripe, f"checkout/sessions/{SESSION}/line_items")) == 1

    [issued] = sandbox.documents()
    assert issued["status"] == "settled"
    assert items_of(issued) == [("Caneca de cerâmica", Decimal(2), "IVA23"), ("Postal ilustrado", Decimal(1),
                                                                              "IVA23")]
    assert total_of(issued) == Decimal("76.26")  # the session's amount_total, to the cent
    assert issued["document"]["client"]["name"] == "Ana Ferreira"
    assert issued["emails"]
    [stored] = events()
    assert stored.status == EventStatus.PROCESSED


def test_a_stripe_outage_while_reading_the_lines_is_retried_not_failed(sandbox, post_stripe, queue, stripe):
    stripe.add_session(session(), LINES)
    stripe.faults({"path": "line_items", "kind": "503", "times": 1})
    post_stripe(event("checkout.session.completed", session()))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.PENDING
    assert "Stripe" in document.last_error and "retrying" in document.last_error
    assert document.snapshot is None  # nothing half-read is kept
    assert any(kind == "retry" and "503" in message for kind, message in timeline(document))
    assert sandbox.documents() == []

    run_scheduled_now(queue)  # its retry's time comes
    drain(queue)
    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert total_of(sandbox.documents()[0]) == Decimal("76.26")


def test_a_key_stripe_refuses_fails_the_document_with_a_clear_reason(app, sandbox, post_stripe, queue, stripe):
    app.config["STRIPE_API_KEY"] = "rk_live_revoked_key_0123456789"
    stripe.add_session(session(), LINES)
    post_stripe(event("checkout.session.completed", session()))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.FAILED
    assert "stripe refused" in document.last_error.lower() and "401" in document.last_error, document.last_error
    assert "rk_live_revoked_key_0123456789" not in document.last_error
    assert sandbox.documents() == []


def test_a_delayed_payment_is_invoiced_once_when_stripe_confirms_it(sandbox, post_stripe, queue, stripe):
    stripe.add_session(session(), LINES)
    post_stripe(event("checkout.session.completed", session(payment_status="unpaid",
                                                            payment_method_types=["multibanco"])))
    drain(queue)
    assert documents() == []
    assert "delayed" in events()[0].note

    post_stripe(event("checkout.session.async_payment_succeeded", session(payment_method_types=["multibanco"])))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert len(sandbox.documents()) == 1


def test_a_payment_intent_owes_nothing_without_payment_intent_line(post_stripe, queue, stripe):
    stripe.add_payment_intent(payment_intent())
    post_stripe(event("payment_intent.succeeded", payment_intent()))
    drain(queue)

    assert documents() == []
    [stored] = events()
    assert stored.status == EventStatus.PROCESSED
    assert "PAYMENT_INTENT_LINE" in stored.note
    assert stripe.calls() == []


def billed_intent() -> dict:
    return payment_intent(billing_details={"name": "Rui Costa", "email": "rui.costa@example.pt",
                                           "address": {"country": "PT", "city": "Porto", "line1": "Rua Direita 5",
                                                       "line2": None, "postal_code": "4000-001"}})


@pytest.mark.parametrize("env_extra, store_settings, tax_name", [
    ({"PAYMENT_INTENT_LINE": "Serviço de consultoria", "PAYMENT_INTENT_VAT_RATE": "6"}, {}, "IVA6"),
    ({"PAYMENT_INTENT_LINE": "Serviço de consultoria", "DEFAULT_VAT_RATE": "13"}, {}, "IVA13"),
    ({}, {"payment_intent_line": "Serviço de consultoria", "payment_intent_vat_rate": "6"}, "IVA6"),
], ids=["env, its own rate", "env, the default rate", "store setting"])
def test_a_payment_of_no_session_is_one_line_at_its_rate_with_the_billing_name(sandbox, post_stripe, queue, stripe,
                                                                             store_settings, tax_name):
    if store_settings:
        set_store(**store_settings)
    stripe.add_payment_intent(billed_intent())
    post_stripe(event("payment_intent.succeeded", payment_intent()))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    [issued] = sandbox.documents()
    assert items_of(issued) == [("Serviço de consultoria", Decimal(1), tax_name)]
    assert total_of(issued) == Decimal("123.00")
    assert issued["document"]["client"]["name"] == "Rui Costa"


@pytest.mark.parametrize("env_extra", [{"PAYMENT_INTENT_LINE": "Serviço de consultoria"}])
def test_a_payment_of_a_session_is_invoiced_with_the_sessions_lines_once(sandbox, post_stripe, queue, stripe):
    stripe.add_session(session(), LINES)
    post_stripe(event("payment_intent.succeeded", payment_intent(INTENT, 7626)))
    drain(queue)
    post_stripe(event("checkout.session.completed", session()))  # the session's own event, afterwards
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    [issued] = sandbox.documents()
    assert [name for name, _, _ in items_of(issued)] == ["Caneca de cerâmica", "Postal ilustrado"]
    assert total_of(issued) == Decimal("76.26")
    later = events()[1]
    assert later.status == EventStatus.PROCESSED
    assert f"Document {document.id} already covers" in later.note


@pytest.mark.parametrize("env_extra, tax_name", [({}, "IVA23"), ({"DEFAULT_VAT_RATE": "6"}, "IVA6")])
def test_a_session_without_stripe_tax_is_at_the_default_rate_its_prices_including_vat(sandbox, post_stripe, queue,
                                                                                    stripe, tax_name):
    lines = [line_item("Cabaz de Natal", 1, 4990, percentage=None)]
    stripe.add_session(session(lines), lines)
    post_stripe(event("checkout.session.completed", session(lines)))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    [issued] = sandbox.documents()
    assert items_of(issued) == [("Cabaz de Natal", Decimal(1), tax_name)]
    assert total_of(issued) == Decimal("49.90")  # what the buyer paid: VAT inside the price


def yen_session() -> tuple[dict, list[dict]]:
    lines = [{**line_item("Azulejo pintado à mão", 3, 1500, percentage=None), "currency": "jpy"}]
    return session(lines, currency="jpy", payment_intent="pi_3QhW2dAbCdEfGh1Yen0Jp"), lines


def test_a_yen_session_is_invoiced_in_yen_with_the_rate_of_its_settlement(sandbox, post_stripe, queue, stripe):
    obj, lines = yen_session()
    stripe.add_session(obj, lines)
    stripe.set_exchange_rates({"jpy": 0.0062})  # 4500 JPY settle as 27.90 EUR
    post_stripe(event("checkout.session.completed", obj))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.DONE, document.last_error
    assert (document.currency, document.total) == ("JPY", "4500")
    [issued] = sandbox.documents()
    assert issued["document"]["currency"] == "JPY"
    assert total_of(issued) == Decimal(4500)
    # The sandbox keeps no rate: what was sent is the document's plan, made again from the lines kept on it.
    sent = plan_document(document).create_body["invoice"]
    assert (sent["currency_code"], sent["rate"]) == ("JPY", "161.290323")  # 4500 JPY / 27.90 EUR


def test_a_yen_session_whose_payment_has_not_settled_is_held_saying_so(sandbox, post_stripe, queue, stripe):
    obj, lines = yen_session()
    stripe.add_session(obj, lines)
    # The charge is still pending: it has no balance transaction, so no amount in euros yet.
    stripe.add_payment_intent(payment_intent("pi_3QhW2dAbCdEfGh1Yen0Jp", 4500, currency="jpy",
                                             status="processing"))
    post_stripe(event("checkout.session.completed", obj))
    drain(queue)

    [document] = documents()
    assert document.state == DocumentState.HELD
    assert "JPY" in document.last_error and "no rate to euros" in document.last_error, document.last_error
    assert sandbox.documents() == []


# --- refunds ------------------------------------------------------------------------------------------


def issue_the_sale(post_stripe, queue, stripe) -> int:
    """The session's invoice issued; its document's id."""
    stripe.add_session(session(), LINES)
    post_stripe(event("checkout.session.completed", session()))
    drain(queue)
    [sale] = [d for d in documents() if d.doc_type != "credit_notes"]
    assert sale.state == DocumentState.DONE, sale.last_error
    return sale.id


def credit_notes(sandbox) -> list[dict]:
    return [d for d in sandbox.documents() if d["type"] == "CreditNote"]


def test_a_charge_listing_its_refunds_becomes_their_credit_notes(sandbox, post_stripe, queue, stripe):
    sale_id = issue_the_sale(post_stripe, queue, stripe)
    refunds = [refund("re_3QhX1eAbCdEfGh1Refund01", 1845), refund("re_3QhX1eAbCdEfGh1Refund02", 1000,
                                                                  created=1764235300)]
    post_stripe(event("charge.refunded", charge(refunds)))
    drain(queue)

    notes = [d for d in documents() if d.id != sale_id]
    assert [(n.state, n.original_id, n.total) for n in notes] == [(DocumentState.DONE, sale_id, "18.45"),
                                                                  (DocumentState.DONE, sale_id, "10.00")]
    [invoice] = [d for d in sandbox.documents() if d["type"] != "CreditNote"]
    issued = credit_notes(sandbox)
    assert sorted(total_of(c) for c in issued) == [Decimal("10.00"), Decimal("18.45")]
    assert all(c["document"]["owner_invoice_id"] == invoice["id"] for c in issued)


def test_a_charge_not_listing_its_refunds_has_them_read_from_stripe_as_events(sandbox, post_stripe, queue, stripe):
    sale_id = issue_the_sale(post_stripe, queue, stripe)
    stripe.add_refund(refund("re_3QhX1eAbCdEfGh1Refund01", 1845))
    post_stripe(event("charge.refunded", charge(None)))
    drain(queue)

    delivered, polled = events()[1:]
    assert (polled.source, polled.topic, polled.event_key) == ("poll", "refund.created",
                                                               "re_3QhX1eAbCdEfGh1Refund01")
    assert delivered.status == EventStatus.PROCESSED and "re_3QhX1eAbCdEfGh1Refund01" in delivered.note
    [note] = [d for d in documents() if d.id != sale_id]
    assert (note.state, note.original_id, note.total) == (DocumentState.DONE, sale_id, "18.45")
    assert [total_of(c) for c in credit_notes(sandbox)] == [Decimal("18.45")]
    assert len(calls_to(stripe, "refunds")) == 1


def test_a_stripe_outage_reading_a_charges_refunds_keeps_the_event_and_a_later_run_credits_it(
        sandbox, post_stripe, queue, stripe):
    issue_the_sale(post_stripe, queue, stripe)
    stripe.add_refund(refund("re_3QhX1eAbCdEfGh1Refund01", 1845))
    stripe.faults({"path": "^refunds", "kind": "503", "times": 1})
    post_stripe(event("charge.refunded", charge(None)))
    drain(queue)

    delivered = events()[1]
    assert delivered.status == EventStatus.RECEIVED  # to be processed again, not failed
    assert "stripe did not answer properly" in delivered.note.lower() and "tried again" in delivered.note
    assert credit_notes(sandbox) == [] and len(documents()) == 1

    delivered = events()[1]
    delivered.received_at = datetime.now(UTC) - timedelta(hours=1)  # the sweeper's time comes
    db.session.commit()
    assert jobs.sweep()["events"] == 1
    drain(queue)

    assert events()[1].status == EventStatus.PROCESSED
    assert [total_of(c) for c in credit_notes(sandbox)] == [Decimal("18.45")]


def test_refund_created_after_charge_refunded_for_the_same_refund_is_no_second_credit_note(
        sandbox, post_stripe, queue, stripe):
    issue_the_sale(post_stripe, queue, stripe)
    post_stripe(event("charge.refunded", charge([refund()])))
    drain(queue)
    post_stripe(event("refund.created", refund()))
    drain(queue)

    assert len(credit_notes(sandbox)) == 1
    later = events()[-1]
    assert later.status == EventStatus.PROCESSED
    assert "already covers refund re_3QhX1eAbCdEfGh1Refund01" in later.note


def test_a_refund_read_from_stripe_after_its_own_event_is_no_second_credit_note(sandbox, post_stripe, queue,
                                                                              stripe):
    issue_the_sale(post_stripe, queue, stripe)
    post_stripe(event("refund.created", refund()))
    drain(queue)
    stripe.add_refund(refund())
    post_stripe(event("charge.refunded", charge(None)))
    drain(queue)

    assert len(credit_notes(sandbox)) == 1
    assert len([d for d in documents() if d.doc_type == "credit_notes"]) == 1


def test_a_refund_whose_payment_has_no_invoice_yet_waits_for_it(sandbox, post_stripe, queue, stripe):
    post_stripe(event("refund.created", refund()))
    drain(queue)

    [waiting] = documents()
    assert waiting.state == DocumentState.PENDING
    assert waiting.last_error == "Waiting for the order's invoice to be issued."
    assert sandbox.documents() == []
    waiting_id = waiting.id

    sale_id = issue_the_sale(post_stripe, queue, stripe)
    run_scheduled_now(queue)
    drain(queue)
    note = next(d for d in documents() if d.id == waiting_id)
    assert (note.state, note.original_id) == (DocumentState.DONE, sale_id), note.last_error
    assert [total_of(c) for c in credit_notes(sandbox)] == [Decimal("18.45")]

