"""Fuzzing POST /webhooks/woocommerce and the event job behind it, as tests/test_fuzz_webhooks.py does Shopify's:
whatever arrives, the answer is one the contract names (200 accepted/duplicate/ignored/ping · 401 bad or missing
signature · 400 unreadable body or headers · 413 too large), nothing unsigned but the creation ping is ever
answered 200 and nothing unsigned is stored, what is stored PostgreSQL would take, and no signed order payload,
however odd, crashes the event job or leaves it for the sweeper to retry for ever.

Examples are bounded (the module stays under ~30 s); the profile (tests/conftest.py) decides whether a run
replays CI's examples or explores new ones.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re

import pytest
import sqlalchemy as sa
from hypothesis import assume, given
from hypothesis import strategies as st

from connector import jobs
from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, Store, WebhookEvent
from tests.shopify_strategies import json_objects, mutate
from tests.test_fuzz_webhooks import (
    bodies,
    check_answer_shape,
    control_text,
    count,
    event,
    fresh_app,
    fuzz,
    garbled,
    misfits,
    nothing_stored,
    odd_case,
    ordinary,
    post,
    random_text,
    readable,
    reading,
    run_the_job,
    said,
    value_of,
    very_long,
    wipe,
)
from tests.test_webhooks_woocommerce import (
    WOO_SECRET,
    WOO_SOURCE,
    WOO_STORE,
    woo_headers,
    woo_order,
    woo_settings,
)

URL = "/webhooks/woocommerce"
SIGNATURE = "X-WC-Webhook-Signature"
ORDER_TOPICS = ("order.created", "order.updated", "order.deleted", "order.restored")
PING = re.compile(rb"webhook_id=\d+")
# Sources and the store each names; any other source is only checked to be storable.
SOURCES = {WOO_SOURCE: WOO_STORE, "https://Loja.Example.PT": WOO_STORE,
           "http://shop.example.com/": "shop.example.com",
           "https://shop.example.com:8443/": "shop.example.com:8443"}


def sign(body: bytes, secret: str = WOO_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


@pytest.fixture
def fuzz_app():
    """An app with WooCommerce on, on its own in-memory SQLite and fakeredis, inside its app context."""
    with fresh_app(woo_settings()) as app:
        yield app


# --- strategies: WooCommerce orders --------------------------------------------------------------------

# Keys the order (and refund) loading reads: most mutations aim at these.
ORDER_KEYS = frozenset("""
    id number status currency prices_include_tax date_paid date_paid_gmt date_modified_gmt date_created_gmt
    date_completed_gmt discount_total discount_tax shipping_total shipping_tax cart_tax total total_tax billing
    shipping first_name last_name company address_1 address_2 city postcode country email meta_data key value
    line_items name product_id variation_id quantity tax_class subtotal subtotal_tax taxes tax_lines rate_id
    rate_percent tax_total shipping_tax_total compound shipping_lines method_title fee_lines coupon_lines
    discount code refunds reason sku price
""".split())
NUMBER_KEYS = frozenset({"total", "subtotal", "total_tax", "subtotal_tax", "quantity", "rate_percent", "tax_total",
                         "discount_total", "shipping_total", "cart_tax", "price", "discount"})
TEXT_KEYS = frozenset({"name", "status", "currency", "email", "company", "country", "first_name", "last_name",
                       "value", "sku", "method_title", "number", "reason"})


def order_variants() -> list[dict]:
    """Real-looking orders: paid, on hold, with a refund, with shipping, a fee, a coupon and a NIF."""
    with_extras = woo_order(
        total="38.13", total_tax="7.13", shipping_total="5.00", shipping_tax="1.15", cart_tax="5.98",
        discount_total="2.00", discount_tax="0.46",
        line_items=[{**woo_order()["line_items"][0], "subtotal": "20.00", "subtotal_tax": "4.60", "total": "18.00",
                     "total_tax": "4.14", "taxes": [{"id": 1, "total": "4.14", "subtotal": "4.6"}]}],
        shipping_lines=[{"id": 3, "method_title": "CTT", "method_id": "flat_rate", "total": "5.00",
                         "total_tax": "1.15", "taxes": [{"id": 1, "total": "1.15", "subtotal": ""}]}],
        fee_lines=[{"id": 4, "name": "Embrulho", "tax_class": "", "tax_status": "taxable", "total": "8.00",
                    "total_tax": "1.84", "taxes": [{"id": 1, "total": "1.84", "subtotal": ""}]}],
        coupon_lines=[{"id": 5, "code": "natal", "discount": "2.00", "discount_tax": "0.46"}],
        meta_data=[{"id": 6, "key": "_billing_nif", "value": "PT 501 964 843"}],
        tax_lines=[{"id": 90, "rate_code": "PT-IVA-1", "rate_id": 1, "label": "IVA", "compound": False,
                    "tax_total": "5.98", "shipping_tax_total": "1.15", "rate_percent": 23, "meta_data": []}],
    )
    return [
        woo_order(),
        woo_order(status="on-hold", paid=False),
        woo_order(status="completed", paid=False),
        woo_order(prices_include_tax=True),
        woo_order(modified="2026-12-01T09:00:00", refunds=[{"id": 800, "reason": "", "total": "-12.30"}]),
        woo_order(status="refunded", modified="2026-12-01T09:00:00",
                  refunds=[{"id": 801, "reason": "", "total": "-24.60"}]),
        woo_order(status="cancelled", paid=False),
        with_extras,
    ]


ORDERS = order_variants()


@st.composite
def mutated_orders(draw) -> dict:
    """A WooCommerce order with keys deleted, values of the wrong type, amounts out of range, odd texts and
    list items repeated."""
    return mutate(draw, copy.deepcopy(draw(st.sampled_from(ORDERS))),
                  read=lambda path: all(isinstance(k, int) or k in ORDER_KEYS for k in path),
                  number_keys=NUMBER_KEYS, text_keys=TEXT_KEYS)


woo_bodies = st.one_of(
    bodies,
    st.sampled_from(ORDERS).map(lambda order: json.dumps(order).encode()),
    mutated_orders().map(lambda order: json.dumps(order).encode()),
)


# --- strategies: headers -------------------------------------------------------------------------------


@st.composite
def delivery_headers(draw) -> list[tuple[str, str]]:
    """Every header of a WooCommerce delivery but the signature, each one possibly missing, garbled or long."""
    normals = {
        "X-WC-Webhook-Topic": st.sampled_from([*ORDER_TOPICS, "product.updated", "coupon.created",
                                               "action.woocommerce_payment_complete", " order.updated ",
                                               "ORDER.UPDATED"]),
        "X-WC-Webhook-Source": st.sampled_from(sorted(SOURCES)),
        "X-WC-Webhook-Resource": st.sampled_from(["order", "product"]),
        "X-WC-Webhook-Event": st.sampled_from(["created", "updated"]),
        "X-WC-Webhook-ID": st.integers(1, 10**6).map(str),
        "X-WC-Webhook-Delivery-ID": st.binary(min_size=16, max_size=16).map(bytes.hex),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                         "application/json; charset=utf-8"]),
    }
    return draw(garbled(normals))


@st.composite
def bad_signatures(draw, body: bytes) -> list[tuple[str, str]]:
    """The signature header(s) of an unsigned or wrongly signed delivery of `body`."""
    valid = sign(body)
    name = draw(odd_case(SIGNATURE))
    kind = draw(st.sampled_from([
        "missing", "empty", "random base64", "random text", "control characters", "very long", "another body",
        "another secret", "entity-encoded secret", "truncated", "unpadded", "one character changed", "hex digest",
        "prefixed", "secret as value", "sha1",
    ]))
    event(f"signature: {kind}")
    if kind == "missing":
        return []
    if kind == "another body":
        value = sign(draw(woo_bodies.filter(lambda other: other != body)))
    elif kind == "another secret":
        value = sign(body, draw(st.text(max_size=20).filter(lambda s: s != WOO_SECRET)))
    elif kind == "one character changed":
        i = draw(st.integers(0, len(valid) - 2))  # the last one is padding
        value = valid[:i] + draw(st.sampled_from("AQgw+/").filter(lambda c: c != valid[i])) + valid[i + 1:]
    else:
        value = {
            "empty": "",
            "random base64": base64.b64encode(draw(st.binary(max_size=64))).decode(),
            "random text": draw(random_text),
            "control characters": draw(control_text),
            "very long": draw(very_long),
            # The secret as WordPress would store it escaped: WooCommerce decodes it before signing,
            # so signing with the escaped text itself is wrong.
            "entity-encoded secret": sign(body, WOO_SECRET.replace("-", "&amp;")),
            "truncated": valid[: draw(st.integers(0, len(valid) - 1))],
            "unpadded": valid.rstrip("="),
            "hex digest": hmac.new(WOO_SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "prefixed": "sha256=" + valid,
            "secret as value": WOO_SECRET,
            "sha1": base64.b64encode(hmac.new(WOO_SECRET.encode(), body, hashlib.sha1).digest()).decode(),
        }[kind]
    assert value.strip() != valid
    return [(name, value)]


# --- 1. unsigned or wrongly signed: 401, nothing stored (the creation ping aside) ---------------------


@fuzz(200)
@given(body=woo_bodies, others=delivery_headers(), data=st.data())
def test_unsigned_or_wrongly_signed_deliveries_get_401_and_store_nothing(fuzz_app, body, others, data):
    assume(not PING.fullmatch(body))  # the creation ping has a test of its own below
    wipe(fuzz_app)
    signature = data.draw(bad_signatures(body), label="signature")
    headers = data.draw(st.permutations(others + signature), label="headers")

    answer = post(fuzz_app.test_client(), body, headers, url=URL)

    assert answer.status_code == 401, (answer.status_code, answer.data[:300])
    assert check_answer_shape(answer) == {"status": "invalid signature"}
    assert nothing_stored(fuzz_app)


@fuzz(60)
@given(webhook_id=st.integers(0, 10**12), others=delivery_headers())
def test_the_creation_ping_is_200_whatever_its_other_headers_and_stores_nothing(fuzz_app, webhook_id, others):
    wipe(fuzz_app)
    body = f"webhook_id={webhook_id}".encode()

    answer = post(fuzz_app.test_client(), body, others, url=URL)

    assert (answer.status_code, check_answer_shape(answer)) == (200, {"status": "ping"})
    assert nothing_stored(fuzz_app)


@fuzz(60)
@given(body=st.one_of(st.from_regex(rb"webhook_id=\d+.+", fullmatch=True), st.just(b"webhook_id="),
                      st.just(b"webhook_id=5&x=1"), st.just(b" webhook_id=5"), st.just(b"webhook_id=-5"),
                      st.just(b'{"webhook_id": 5}')),
       others=delivery_headers())
def test_what_only_looks_like_the_ping_is_refused_unsigned(fuzz_app, body, others):
    assume(not PING.fullmatch(body))
    wipe(fuzz_app)
    answer = post(fuzz_app.test_client(), body, others, url=URL)
    assert (answer.status_code, check_answer_shape(answer)) == (401, {"status": "invalid signature"})
    assert nothing_stored(fuzz_app)


# --- 2. validly signed, any body: 200 or a clear 400, never 500 ----------------------------------------


def check_signed_answer(app, body: bytes, headers: list[tuple[str, str]], answer) -> dict:
    """The contract for a validly signed WooCommerce delivery under the size limit; returns the answer's JSON."""
    payload = check_answer_shape(answer)
    kind = reading(body)
    event(f"body: {kind}")
    topic = value_of(headers, "X-WC-Webhook-Topic")
    source = value_of(headers, "X-WC-Webhook-Source")
    odd_headers = not (ordinary(topic, 100) and ordinary(source, 255))
    assert answer.status_code in (200, 400), (answer.status_code, payload)
    if kind == "object" and not odd_headers:
        assert answer.status_code == 200, payload
    elif kind not in ("object", "lenient object", "long number"):
        assert answer.status_code == 400, payload
    if answer.status_code == 400:
        if payload["status"] == "unreadable headers":
            assert odd_headers, (topic, source, payload)
        else:
            assert kind != "object", payload
            assert ("nested" in payload["error"]) == (kind == "too deep"), payload
            if kind == "long number":
                assert "not JSON" not in payload["error"], payload
        assert nothing_stored(app)
        return payload

    acted_on = topic in ORDER_TOPICS
    assert payload["status"] == ("accepted" if acted_on else "ignored"), payload
    [stored] = db.session.scalars(sa.select(WebhookEvent)).all()
    assert payload["event"] == stored.id
    assert (stored.body, stored.topic, stored.platform) == (body, topic, "woocommerce")
    assert stored.status == (EventStatus.RECEIVED if acted_on else EventStatus.IGNORED)
    assert stored.source == "webhook"
    if source in SOURCES:
        assert stored.store.domain == SOURCES[source]
    assert stored.event_key
    assert misfits(stored) + misfits(stored.store) == []  # PostgreSQL would take it
    assert count(Store) == 1
    assert app.extensions["queue"].job_ids == ([jobs.event_job_id(stored.id)] if acted_on else [])
    return payload


@fuzz(200)
@given(body=woo_bodies, others=delivery_headers(), name=odd_case(SIGNATURE),
       padding=st.sampled_from(["", "", " ", "\t"]), again=st.booleans(), data=st.data())
def test_validly_signed_deliveries_of_any_body_get_200_or_a_clear_400(fuzz_app, body, others, name, padding,
                                                                       again, data):
    wipe(fuzz_app)
    client, queue = fuzz_app.test_client(), fuzz_app.extensions["queue"]
    headers = data.draw(st.permutations([*others, (name, padding + sign(body) + padding)]), label="headers")

    answer = post(client, body, headers, url=URL)

    check_signed_answer(fuzz_app, body, headers, answer)
    if answer.status_code == 200 and again:  # the same delivery once more: a duplicate, nothing new
        jobs_before = list(queue.job_ids)
        repeat = post(client, body, headers, url=URL)
        assert (repeat.status_code, check_answer_shape(repeat)) == (200, {"status": "duplicate"})
        assert count(WebhookEvent) == 1 and count(Store) == 1
        assert queue.job_ids == jobs_before


@fuzz(40)
@given(order=st.sampled_from(ORDERS), first=st.sampled_from(ORDER_TOPICS[:2]),
       second=st.sampled_from(ORDER_TOPICS[:2]))
def test_one_order_state_is_one_event_whichever_topic_brings_it(fuzz_app, order, first, second):
    wipe(fuzz_app)
    body = json.dumps(order).encode()
    answers = [post(fuzz_app.test_client(), body, woo_headers(body, topic), url=URL) for topic in (first, second)]
    assert [a.json["status"] for a in answers] == ["accepted", "duplicate"]
    assert count(WebhookEvent) == 1


# --- 3. signed order payloads, however odd: stored, then planned without a crash ---------------------


def check_event_outcome(app, event_id: int) -> None:
    """The event ends failed with a readable note, or processed: held or pending documents, or a note saying
    why none is owed. Never left `received` (the sweeper would run it again for ever)."""
    db.session.remove()
    stored = db.session.get(WebhookEvent, event_id)
    documents = db.session.scalars(sa.select(Document)).all()
    event(f"event {stored.status}, documents {sorted(d.state for d in documents)}")
    assert stored.status in (EventStatus.PROCESSED, EventStatus.FAILED), (stored.status, stored.note)
    assert stored.processed_at is not None
    notes = [stored.note]
    if stored.status == EventStatus.FAILED:
        assert readable(stored.note), stored.note
        assert documents == []
    elif not documents:
        assert said(stored.note), stored.note  # why nothing is owed
    for document in documents:
        assert document.event_id == event_id
        # A cancelled order's placeholder is cancelled from the start; everything else waits or is held.
        waiting_or_held = (DocumentState.HELD, DocumentState.PENDING, DocumentState.CANCELED)
        assert document.state in waiting_or_held, document.state
        if document.state == DocumentState.HELD:
            assert said(document.last_error), document.last_error
            notes.append(document.last_error)
        elif document.state == DocumentState.PENDING:
            assert document.job_id in app.extensions["queue"].job_ids
        assert misfits(document) == []
    assert len({d.source_key for d in documents}) == len(documents)
    if documents:
        assert count(DocumentEvent) >= 1
    assert all(readable(note) for note in notes if note is not None), notes
    assert misfits(stored) == []


@fuzz(200)
@given(payload=st.one_of(mutated_orders(), mutated_orders(), mutated_orders(), json_objects,
                         st.sampled_from(ORDERS)),
       topic=st.sampled_from(ORDER_TOPICS))
def test_signed_objects_that_are_not_quite_orders_are_stored_then_planned_without_a_crash(fuzz_app, payload,
                                                                                        topic):
    wipe(fuzz_app)
    body = json.dumps(payload).encode()

    answer = post(fuzz_app.test_client(), body, woo_headers(body, topic), url=URL)

    if answer.status_code == 400 and reading(body) == "lenient object":
        return  # a stricter intake may refuse NaN; then there is nothing to process
    assert (answer.status_code, check_answer_shape(answer)["status"]) == (200, "accepted"), answer.data
    run_the_job(fuzz_app, answer.json["event"])
    check_event_outcome(fuzz_app, answer.json["event"])


@pytest.mark.parametrize("order", ORDERS, ids=[f"{o['status']}, {len(o['refunds'])} refunds" for o in ORDERS])
def test_each_base_order_is_planned_without_a_crash(fuzz_app, order):
    """The baselines the mutations start from; unmutated, each has a clear outcome."""
    body = json.dumps(order).encode()
    answer = post(fuzz_app.test_client(), body, woo_headers(body, "order.updated"), url=URL)
    run_the_job(fuzz_app, answer.json["event"])
    check_event_outcome(fuzz_app, answer.json["event"])



# --- the bugs this fuzzing found, each kept with its minimal example -----------------------------------


def deliver_and_process(app, order: dict, topic: str = "order.updated") -> int:
    body = json.dumps(order).encode()  # ASCII: a lone surrogate travels as the escape \ud800
    answer = post(app.test_client(), body, woo_headers(body, topic), url=URL)
    assert (answer.status_code, answer.json["status"]) == (200, "accepted"), answer.json
    run_the_job(app, answer.json["event"])
    return answer.json["event"]


@pytest.mark.parametrize("changes", [
    pytest.param({"status": "\ud800"}, id="lone surrogate in the status (UnicodeEncodeError storing the note)"),
    pytest.param({"status": "\x1f"}, id="C0 control in the status"),
    pytest.param({"status": "on-hold\nx"}, id="line feed in the status"),
    pytest.param({"status": "pending\u2028x"}, id="line separator U+2028 in the status"),
    pytest.param({"status": "on-hold", "date_paid": None, "date_paid_gmt": None, "number": "7\ud8002"},
                 id="lone surrogate in the number"),
    pytest.param({"status": "on-hold", "date_paid": None, "date_paid_gmt": None, "number": "7\r\n2"},
                 id="line break in the number"),
])
def test_a_note_quoting_the_order_is_one_readable_line_and_no_crash(fuzz_app, changes):
    """The notes of an order that owes nothing quoted its status and number as they came: a lone surrogate
    made the job crash when the note was stored (the event left for the sweeper for ever), a control
    character or line break broke the operator's one-line note."""
    event_id = deliver_and_process(fuzz_app, woo_order(**changes))
    check_event_outcome(fuzz_app, event_id)
