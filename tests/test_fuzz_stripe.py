"""Fuzzing POST /webhooks/stripe[/<store>] and the event job behind it: whatever arrives, the answer is one the
contract names (200 accepted/duplicate/ignored · 401 bad, missing or out-of-window signature · 400 unreadable
body · 404 a store name that is none · 413 too large), never a 500, nothing unsigned is stored, and no signed
Stripe-like event, however garbled, crashes the event job: it owes nothing and says why, makes rows, or keeps a
readable note.

Examples are bounded (the module stays well under 30 s); the profile (tests/conftest.py) decides whether a run
replays CI's examples or explores new ones.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import time

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from connector import jobs
from connector.extensions import db
from connector.models import Document, DocumentState, EventStatus, Store, WebhookEvent
from connector.platforms.stripe.orders import event_object
from connector.platforms.stripe.webhook import ACTED_ON
from tests.shopify_strategies import json_objects, mutate
from tests.test_fuzz_webhooks import (
    bodies,
    check_answer_shape,
    count,
    event,
    fresh_app,
    fuzz,
    garbled,
    misfits,
    nothing_stored,
    odd_case,
    post,
    random_text,
    readable,
    reading,
    said,
    very_long,
    wipe,
)
from tests.test_webhooks_stripe import (
    LINES,
    SECRET,
    charge,
    line_item,
    payment_intent,
    refund,
    session,
    signature,
    stripe_settings,
)
from tests.test_webhooks_stripe import event as stripe_event

URL = "/webhooks/stripe"
SIGNATURE = "Stripe-Signature"
STORE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")
TOPICS = sorted(ACTED_ON)


@pytest.fixture
def fuzz_app():
    """An app with Stripe on (its API where nothing listens) and payments outside Checkout invoiced, on its own
    in-memory SQLite and fakeredis, inside its app context."""
    with fresh_app(stripe_settings(PAYMENT_INTENT_LINE="Serviço")) as app:
        yield app


# --- strategies: Stripe events -------------------------------------------------------------------------


def event_variants() -> list[dict]:
    """Real-looking events of every type the connector acts on."""
    whole = session(line_items={"object": "list", "data": LINES, "has_more": False})
    return [
        stripe_event("checkout.session.completed", session()),
        stripe_event("checkout.session.completed", session(payment_status="unpaid")),
        stripe_event("checkout.session.completed", whole),
        stripe_event("checkout.session.async_payment_succeeded", session()),
        stripe_event("checkout.session.async_payment_failed", session(payment_status="unpaid")),
        stripe_event("checkout.session.expired", session(payment_status="unpaid", status="expired")),
        stripe_event("checkout.session.completed", session([line_item("Cabaz", 1, 4990, percentage=None)],
                                                           currency="jpy")),
        stripe_event("charge.refunded", charge([refund(), refund("re_3QhX1eAbCdEfGh1Refund02", 100)])),
        stripe_event("charge.refunded", charge(None)),
        stripe_event("refund.created", refund()),
        stripe_event("refund.created", refund(status="failed")),
        stripe_event("payment_intent.succeeded", payment_intent()),
        stripe_event("checkout.session.completed", session(), livemode=False),
    ]


EVENTS = event_variants()
# Keys the connector reads of an event and its object: most mutations aim at these.
READ_KEYS = frozenset("""
    id object type livemode data payment_status payment_intent currency amount_total amount_subtotal customer
    client_reference_id created automatic_tax enabled customer_details name individual_name business_name email
    address line1 line2 city postal_code country tax_ids value shipping_details collected_information
    shipping_cost shipping_rate total_details amount_discount amount_shipping amount_tax line_items data has_more
    description quantity price product taxes amount rate percentage inclusive refunds status charge
    amount_received latest_charge billing_details receipt_email
""".split())
NUMBER_KEYS = frozenset({"amount", "amount_total", "amount_subtotal", "amount_tax", "amount_discount", "quantity",
                         "percentage", "amount_received", "created", "amount_shipping"})
TEXT_KEYS = frozenset({"id", "type", "payment_status", "payment_intent", "currency", "status", "name", "email",
                       "country", "description", "value", "charge", "client_reference_id", "object"})


@st.composite
def mutated_events(draw) -> dict:
    """A Stripe event with keys deleted, values of the wrong type, amounts out of range, odd texts and list
    items repeated."""
    return mutate(draw, copy.deepcopy(draw(st.sampled_from(EVENTS))),
                  read=lambda path: all(isinstance(k, int) or k in READ_KEYS for k in path),
                  number_keys=NUMBER_KEYS, text_keys=TEXT_KEYS)


@st.composite
def garbled_ids(draw) -> dict:
    """An event whose ids keep their prefix but not Stripe's shape (`ch_a-b`, `pi_ `, `cs_/../x`)."""
    payload = copy.deepcopy(draw(st.sampled_from(EVENTS)))
    obj = event_object(payload)
    key = draw(st.sampled_from(["id", "payment_intent", "charge"]))
    prefix = {"id": str(obj.get("id", "x_"))[:3], "payment_intent": "pi_", "charge": "ch_"}[key]
    obj[key] = prefix + draw(st.sampled_from(["", " ", "a-b", "../x", "a/b", "é", "a" * 300, "%2F", "x?y=1"]))
    return payload


stripe_bodies = st.one_of(
    bodies,
    st.sampled_from(EVENTS).map(lambda e: json.dumps(e).encode()),
    mutated_events().map(lambda e: json.dumps(e).encode()),
)
store_names = st.one_of(
    st.sampled_from(["shop-a", "default", "loja.example.pt", "a", "0", "x" * 100]),
    st.from_regex(STORE_NAME, fullmatch=True),
    st.text(st.characters(codec="ascii", exclude_characters="/?#%"), min_size=1, max_size=30),
    st.sampled_from(["Shop-A", "-a", "_a", ".", "..", "a" * 101, "ação", "a b"]),
)


def url_for(name: str | None) -> str:
    return URL if name is None else f"{URL}/{name}"


def good_store(name: str | None) -> str | None:
    """The store a delivery to the URL goes to, or None when the URL names no store it could be."""
    if name is None:
        return "default"
    return name if STORE_NAME.fullmatch(name) else None


# --- strategies: headers -------------------------------------------------------------------------------


@st.composite
def delivery_headers(draw) -> list[tuple[str, str]]:
    """Every header of a Stripe delivery but the signature, each one possibly missing, garbled or long."""
    return draw(garbled({
        "Content-Type": st.sampled_from(["application/json; charset=utf-8", "application/json", "text/plain"]),
        "User-Agent": st.just("Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
        "Cache-Control": st.just("no-cache"),
    }))


@st.composite
def bad_signatures(draw, body: bytes) -> list[tuple[str, str]]:
    """The Stripe-Signature header(s) of an unsigned, wrongly signed or replayed delivery of `body`."""
    now = int(time.time())
    valid = signature(body, t=now)
    digest = valid.split(",v1=")[1]
    name = draw(odd_case(SIGNATURE))
    kind = draw(st.sampled_from([
        "missing", "empty", "random text", "very long", "another body", "another secret", "stale", "future",
        "no timestamp", "two timestamps", "no v1", "v0 only", "one character changed", "truncated", "digest only",
        "timestamp not a number", "sha1", "empty secret",
    ]))
    event(f"signature: {kind}")
    if kind == "missing":
        return []
    if kind == "another body":
        value = signature(draw(stripe_bodies.filter(lambda other: other != body)), t=now)
    elif kind == "another secret":
        value = signature(body, draw(st.text(max_size=20).filter(lambda s: s != SECRET)), t=now)
    elif kind == "stale":
        value = signature(body, t=now - draw(st.integers(301, 10**9)))
    elif kind == "future":
        value = signature(body, t=now + draw(st.integers(301, 10**9)))
    elif kind == "one character changed":
        i = draw(st.integers(0, len(digest) - 1))
        value = f"t={now},v1=" + digest[:i] + draw(st.sampled_from("0123456789abcdef").filter(
            lambda c: c != digest[i])) + digest[i + 1:]
    elif kind == "truncated":
        value = valid[: draw(st.integers(0, len(valid) - 1))]
    else:
        value = {
            "empty": "",
            "random text": draw(random_text),
            "very long": draw(very_long),
            "no timestamp": f"v1={digest}",
            "two timestamps": f"t={now},t={now},v1={digest}",
            "no v1": f"t={now}",
            "v0 only": f"t={now},v0={digest}",
            "digest only": digest,
            "timestamp not a number": f"t=now,v1={digest}",
            "sha1": f"t={now},v1=" + hmac.new(SECRET.encode(), f"{now}.".encode() + body,
                                              hashlib.sha1).hexdigest(),
            "empty secret": signature(body, "", t=now),
        }[kind]
    return [(name, value)]


# --- 1. unsigned or wrongly signed: 401 (a URL naming no store: 404), nothing stored ------------------


@fuzz(100)
@given(body=stripe_bodies, others=delivery_headers(), name=st.one_of(st.none(), store_names), data=st.data())
def test_unsigned_or_wrongly_signed_deliveries_are_refused_and_store_nothing(fuzz_app, body, others, name, data):
    wipe(fuzz_app)
    headers = data.draw(st.permutations(others + data.draw(bad_signatures(body), label="signature")),
                        label="headers")

    answer = post(fuzz_app.test_client(), body, headers, url=url_for(name))

    if good_store(name) is None:
        assert answer.status_code == 404, (answer.status_code, answer.data[:300])
    else:
        assert answer.status_code == 401, (answer.status_code, answer.data[:300])
        assert check_answer_shape(answer) == {"status": "invalid signature"}
    assert nothing_stored(fuzz_app)


# --- 2. validly signed, any body: 200 or a clear 400, never 500 ----------------------------------------


@fuzz(100)
@given(body=stripe_bodies, others=delivery_headers(), name=st.one_of(st.none(), store_names),
       header=odd_case(SIGNATURE), age=st.integers(-290, 290), again=st.booleans(), data=st.data())
def test_validly_signed_deliveries_of_any_body_get_200_or_a_clear_400(fuzz_app, body, others, name, header, age,
                                                                       again, data):
    wipe(fuzz_app)
    client, queue = fuzz_app.test_client(), fuzz_app.extensions["queue"]
    headers = data.draw(st.permutations([*others, (header, signature(body, t=int(time.time()) - age))]),
                        label="headers")

    answer = post(client, body, headers, url=url_for(name))

    store = good_store(name)
    if store is None:
        assert answer.status_code == 404
        assert nothing_stored(fuzz_app)
        return
    payload = check_answer_shape(answer)
    kind = reading(body)
    event(f"body: {kind}")
    assert answer.status_code in (200, 400), (answer.status_code, payload)
    if kind == "object":
        assert answer.status_code == 200, payload
    elif kind not in ("lenient object", "long number"):
        assert answer.status_code == 400, payload
    if answer.status_code == 400:
        assert nothing_stored(fuzz_app)
        return
    [stored] = db.session.scalars(sa.select(WebhookEvent)).all()
    acted_on = stored.topic in ACTED_ON
    assert payload == {"status": "accepted" if acted_on else "ignored", "event": stored.id}
    assert (stored.body, stored.platform, stored.source) == (body, "stripe", "webhook")
    assert (stored.store.platform, stored.store.domain) == ("stripe", store)
    assert stored.status == (EventStatus.RECEIVED if acted_on else EventStatus.IGNORED)
    assert misfits(stored) + misfits(stored.store) == []  # PostgreSQL would take it
    assert queue.job_ids == ([jobs.event_job_id(stored.id)] if acted_on else [])
    if again:  # the same delivery once more: a duplicate, nothing new
        jobs_before = list(queue.job_ids)
        repeat = post(client, body, headers, url=url_for(name))
        assert (repeat.status_code, check_answer_shape(repeat)) == (200, {"status": "duplicate"})
        assert count(WebhookEvent) == 1 and count(Store) == 1
        assert queue.job_ids == jobs_before


# --- 3. signed Stripe-like events, however odd: the event job never crashes ----------------------------


def deliver(app, payload, topic: str | None = None) -> int | None:
    """Deliver `payload` signed (as `topic`, when given); the stored event's id, None when it was not acted on."""
    if topic is not None and isinstance(payload, dict):
        payload = {**payload, "type": topic}
    body = json.dumps(payload).encode()
    answer = post(app.test_client(), body, [(SIGNATURE, signature(body))], url=URL)
    if answer.status_code == 400 and reading(body) == "lenient object":
        return None  # a stricter intake may refuse NaN; then there is nothing to process
    assert answer.status_code == 200, answer.data[:300]
    return answer.json["event"] if answer.json["status"] == "accepted" else None


def run_the_job(event_id: int) -> None:
    """Process the event as the worker would; nothing may escape it (an exception would leave the event for the
    sweeper to run again for ever)."""
    jobs.process_event(event_id)


def check_event_outcome(app, event_id: int) -> None:
    """Processed (documents pending or held, or a note saying why none is owed), failed with a readable note,
    or left to be tried again with a note saying Stripe did not answer (its API is away here)."""
    db.session.remove()
    stored = db.session.get(WebhookEvent, event_id)
    documents = db.session.scalars(sa.select(Document)).all()
    event(f"event {stored.status}, documents {sorted(d.state for d in documents)}")
    assert readable(stored.note) or stored.note is None, stored.note
    if stored.status == EventStatus.RECEIVED:
        assert "did not answer" in stored.note, stored.note  # the charge's refunds could not be read
        assert documents == []
        return
    assert stored.status in (EventStatus.PROCESSED, EventStatus.FAILED), (stored.status, stored.note)
    assert stored.processed_at is not None
    if stored.status == EventStatus.FAILED or not documents:
        assert said(stored.note), stored.note
    if stored.status == EventStatus.FAILED:
        assert documents == []
    for document in documents:
        assert document.state in (DocumentState.PENDING, DocumentState.HELD), document.state
        if document.state == DocumentState.HELD:
            assert readable(document.last_error), document.last_error
        else:
            assert document.job_id in app.extensions["queue"].job_ids
        assert misfits(document) == []
    assert len({d.source_key for d in documents}) == len(documents)
    assert misfits(stored) == []


@fuzz(150)
@given(payload=st.one_of(mutated_events(), mutated_events(), mutated_events(), garbled_ids(), json_objects,
                         st.sampled_from(EVENTS)),
       topic=st.one_of(st.none(), st.sampled_from(TOPICS)))
def test_signed_events_that_are_not_quite_stripes_never_crash_the_event_job(fuzz_app, payload, topic):
    wipe(fuzz_app)
    event_id = deliver(fuzz_app, payload, topic)
    if event_id is None:
        return
    run_the_job(event_id)
    check_event_outcome(fuzz_app, event_id)


@pytest.mark.parametrize("payload", EVENTS, ids=[f"{e['type']} {i}" for i, e in enumerate(EVENTS)])
def test_each_base_event_has_a_clear_outcome(fuzz_app, payload):
    """The baselines the mutations start from; unmutated, each is stored and processed."""
    event_id = deliver(fuzz_app, payload)
    run_the_job(event_id)
    check_event_outcome(fuzz_app, event_id)


# --- the bugs this fuzzing found, each kept with its minimal example -----------------------------------


@pytest.mark.parametrize("charge_id", ["ch_a-b", "ch_ ", "py_../x"])
def test_a_refunded_charge_whose_id_is_not_stripes_shape_is_no_crash(fuzz_app, charge_id):
    """Its refunds were looked up by an id Stripe's client refuses to put in a path: the ValueError escaped the
    event job, which left the event received, with no note, for every sweep to run again."""
    garbled = charge(None)
    garbled["id"] = charge_id
    event_id = deliver(fuzz_app, stripe_event("charge.refunded", garbled))
    run_the_job(event_id)
    check_event_outcome(fuzz_app, event_id)


@pytest.mark.parametrize("kind, obj", [
    ("checkout.session.completed", session(id="cs_a-b", payment_intent=None)),
    ("checkout.session.completed", session(id="cs_a-b")),
    ("payment_intent.succeeded", payment_intent("pi_a-b")),
], ids=["session id, no payment intent", "session id", "payment intent id"])
def test_a_sale_whose_id_is_not_stripes_shape_is_no_crash_when_issued(fuzz_app, kind, obj):
    """An id of Stripe's prefix but not its shape ('cs_a-b') was given a document, which Stripe's client then
    refused to put in a path: the document stayed pending, "Unexpected ValueError", until it gave up."""
    event_id = deliver(fuzz_app, stripe_event(kind, obj))
    run_the_job(event_id)
    check_event_outcome(fuzz_app, event_id)
    for document_id in db.session.scalars(sa.select(Document.id)).all():
        jobs.issue_document(document_id)  # must not raise: owing nothing or failing says why, once
    db.session.remove()
    for document in db.session.scalars(sa.select(Document)):
        assert document.state in (DocumentState.FAILED, DocumentState.HELD, DocumentState.CANCELED), document.state
        assert readable(document.last_error) and "Unexpected" not in document.last_error, document.last_error
