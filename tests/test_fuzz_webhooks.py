"""Fuzzing the webhook intake, and the event job behind it: whatever arrives, the answer is one the contract
names (200 accepted/duplicate/ignored · 401 bad or missing signature · 400 unreadable body or headers · 413
too large · 404 unknown platform), nothing unsigned is ever stored, nothing stored is refused by PostgreSQL
(checked on SQLite by column length and NUL), and nothing a sender can send makes a 500 or crashes the job.

Each test builds its app (in-memory SQLite, fakeredis) once and empties its tables between examples.
Examples are bounded (the module stays under ~30 s); locally every run explores new inputs, in CI
(CI=true) they are the same every run and a failure prints how to replay it (tests/conftest.py).

The bugs this fuzzing found are kept at the end as tests with their minimal examples.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import io
import json
import os
import random
import subprocess
import sys
import unicodedata
from contextlib import contextmanager
from urllib.parse import quote

import fakeredis
import pytest
import responses
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import event as hypothesis_event
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from connector import create_app, jobs
from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState, EventStatus, Store, WebhookEvent
from connector.webhooks import MAX_JSON_DEPTH
from tests.conftest import (
    FIXTURES,
    SHOPIFY_SECRET,
    STORE,
    drain,
    fixture_body,
    settings,
    shopify_headers,
    tables_of,
)
from tests.shopify_strategies import ORDER_FIXTURES, ORDERS, json_objects, json_values, mutated_orders

URL = "/webhooks/shopify"
SIGNATURE = "X-Shopify-Hmac-Sha256"
LIMIT = 4096  # MAX_CONTENT_LENGTH in the size tests


def event(text: str) -> None:
    """Count an outcome in hypothesis' statistics (a no-op in the plain tests that share the checks)."""
    try:
        hypothesis_event(text)
    except InvalidArgument:
        pass


def fuzz(examples: int) -> hsettings:
    return hsettings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # the app is built once per test; examples wipe it
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
        ],
    )


# --- the app, built once per test ----------------------------------------------------------------------


@contextmanager
def fresh_app(environ: dict[str, str] | None = None):
    """An app on its own in-memory SQLite and fakeredis, inside its app context (settings(): Shopify's)."""
    app = create_app(overrides={"REDIS_CONNECTION": fakeredis.FakeStrictRedis()}, environ=environ or settings())
    with tables_of(app):
        yield app


@pytest.fixture
def fuzz_app():
    with fresh_app() as app:
        yield app


def wipe(app) -> None:
    """Empty every table and the queue: each example starts from nothing."""
    db.session.rollback()
    for table in reversed(db.metadata.sorted_tables):
        db.session.execute(table.delete())
    db.session.commit()
    db.session.remove()
    app.extensions["queue"].connection.flushall()


def count(model) -> int:
    db.session.remove()  # a fresh look: the request committed in its own session
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def nothing_stored(app) -> bool:
    return count(WebhookEvent) == 0 and count(Store) == 0 and not app.extensions["queue"].job_ids


def sign(body: bytes, secret: str = SHOPIFY_SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post(client, body: bytes, headers, url: str = URL, **kwargs):
    # The raw bytes as the stream: given `data`, the test client would build a form of its own for an
    # empty body with a multipart Content-Type.
    return client.post(url, input_stream=io.BytesIO(body), content_length=len(body), headers=headers, **kwargs)


def check_answer_shape(answer) -> dict:
    """Every answer of the intake is a JSON object with a `status` string (400s also say why)."""
    assert answer.status_code < 500, (answer.status_code, answer.data[:300])
    assert answer.is_json, answer.data[:300]
    payload = answer.get_json()
    assert isinstance(payload, dict) and isinstance(payload.get("status"), str), payload
    if answer.status_code == 400:
        assert payload["status"] in ("unreadable body", "unreadable headers"), payload
        assert isinstance(payload.get("error"), str) and payload["error"].strip(), payload
    return payload


def said(note: str | None) -> bool:
    """Some text."""
    return bool(note and note.strip())


def readable(note: str | None) -> bool:
    """A note a person can read in a list: some text on one line, no control characters (C0 or C1), no
    line or paragraph separators, no lone surrogates."""
    return said(note) and len(note.splitlines()) == 1 and not any(
        unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp") for char in note
    )


def ordinary(value: str, longest: int) -> bool:
    """A header value that can be stored as it is: short enough for its column, and printable."""
    return len(value) <= longest and value.isprintable()


def misfits(row) -> list[str]:
    """String values that PostgreSQL would refuse: longer than their column, or holding a NUL."""
    problems = []
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, str):
            if isinstance(column.type, sa.String) and column.type.length and len(value) > column.type.length:
                problems.append(f"{row.__tablename__}.{column.key}: {len(value)} > {column.type.length} chars")
            if "\x00" in value:
                problems.append(f"{row.__tablename__}.{column.key}: NUL")
    return problems


# --- what a body is, decided independently of the intake ---------------------------------------------


def depth(value) -> int:
    """How many containers nest, the outermost counting 1 (iterative)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, level)
            stack.extend((child, level + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def reading(body: bytes) -> str:
    """'object', 'lenient object' (NaN or Infinity literals), 'long number' (an object with an integer
    longer than Python converts), 'not JSON', 'not an object' or 'too deep'."""
    constants: list[str] = []
    long_numbers: list[str] = []

    def integer(digits: str) -> int:  # not converted: how long an integer is does not make it less JSON
        if len(digits.lstrip("-")) > sys.get_int_max_str_digits():
            long_numbers.append(digits)
        return 0

    try:
        value = json.loads(body, parse_int=integer, parse_constant=constants.append)
    except RecursionError:
        return "too deep"
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        return "not JSON"
    if not isinstance(value, dict):
        return "not an object"
    if depth(value) > MAX_JSON_DEPTH:
        return "too deep"
    if long_numbers:
        return "long number"
    return "lenient object" if constants else "object"


# --- strategies: bodies --------------------------------------------------------------------------------



@st.composite
def encoded(draw, values) -> bytes:
    """A JSON value as bytes, in the ways a sender might write it (some of them not UTF-8 at all)."""
    value = draw(values)
    ascii_only = draw(st.booleans())
    text = json.dumps(value, ensure_ascii=ascii_only, indent=draw(st.sampled_from([None, None, 2])))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


# Number literals, some valid JSON, some only Python's (NaN, Infinity), some neither; integers up to and
# over Python's 4300-digit conversion limit.
NUMBER_LITERALS = st.one_of(
    st.sampled_from([
        "1e999999", "-1e999999", "1E+400", "1e-999999", "-0", "0.0000000000000000000000000001", "1" * 4300,
        "1" * 4301, "-" + "9" * 5000,
        "123456789012345678901234567890.123456789", "NaN", "Infinity", "-Infinity", "01", "+1", ".5", "1.",
        "0x10", "1_000",
    ]),
    st.from_regex(r"-?(0|[1-9][0-9]{0,80})(\.[0-9]{1,40})?([eE][+-]?[0-9]{1,7})?", fullmatch=True),
)
number_objects = st.lists(NUMBER_LITERALS, min_size=1, max_size=3).map(
    lambda literals: ("{" + ", ".join(f'"n{i}": {lit}' for i, lit in enumerate(literals)) + "}").encode()
)


@st.composite
def deep_json(draw) -> bytes:
    """Objects or arrays nested around the intake's limit, or far past what the parser can recurse."""
    levels = draw(st.one_of(st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3), st.integers(1, 3000)))
    shape = draw(st.sampled_from(["objects", "arrays", "alternating", "object of arrays"]))
    kinds = [
        {"objects": True, "arrays": False, "alternating": i % 2 == 0, "object of arrays": i == 0}[shape]
        for i in range(levels)
    ]
    opening = "".join('{"a":' if is_object else "[" for is_object in kinds)
    closing = "".join("}" if is_object else "]" for is_object in reversed(kinds))
    return (opening + "1" + closing).encode()




bodies = st.one_of(
    st.just(b""),
    st.binary(max_size=300),
    st.text(max_size=200).map(str.encode),
    encoded(json_values),
    encoded(json_objects),
    number_objects,
    deep_json(),
    st.sampled_from(ORDER_FIXTURES).map(fixture_body),
    mutated_orders().map(lambda order: json.dumps(order).encode()),
)


# --- strategies: headers -------------------------------------------------------------------------------

# Header values as a WSGI server hands them over: latin-1 text (a server refuses CR and LF outright).
LATIN1 = st.characters(min_codepoint=0, max_codepoint=255, exclude_characters="\r\n")
random_text = st.text(LATIN1, min_size=1, max_size=40)
control_text = st.text(st.characters(max_codepoint=31, exclude_characters="\r\n") | st.just("\x7f"),
                       min_size=1, max_size=8)
very_long = st.builds(lambda char, n, tail: char * n + tail, LATIN1, st.integers(100, 20_000), random_text)


def odd_case(name: str):
    """The header name in any mixture of cases (HTTP names ignore case)."""
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: "".join(c.swapcase() if flip else c for c, flip in zip(name, flips, strict=True))
    )


def header_value(normal):
    """Absent (None), normal, empty, random, control characters, or very long."""
    return st.one_of(st.none(), normal, normal, st.just(""), st.just("  "), random_text, control_text,
                     very_long, st.builds(lambda v, c: v + c, normal, control_text))


@st.composite
def delivery_headers(draw) -> list[tuple[str, str]]:
    """Every header of a delivery but the signature, each one possibly missing, garbled or very long."""
    normals = {
        "X-Shopify-Topic": st.sampled_from(["orders/paid", "orders/create", "refunds/create", "orders/cancelled",
                                            " orders/paid ",
                                            "ORDERS/PAID"]),
        "X-Shopify-Shop-Domain": st.sampled_from([STORE, "Other-Store.MyShopify.com"]),
        "X-Shopify-Event-Id": st.uuids().map(str),
        "X-Shopify-Webhook-Id": st.uuids().map(str),
        "Content-Type": st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                         "multipart/form-data; boundary=x", "application/json; charset=utf-16"]),
    }
    return draw(garbled(normals))


@st.composite
def garbled(draw, normals: dict) -> list[tuple[str, str]]:
    """Each header of `normals` (its name: a strategy of normal values) possibly missing, garbled or very long,
    its name in any case, and up to two headers nobody asked for."""
    headers = []
    for name, normal in normals.items():
        value = draw(header_value(normal))
        if value is not None:
            headers.append((draw(odd_case(name)), value))
    for _ in range(draw(st.integers(0, 2))):
        headers.append(("X-Fuzz-" + draw(st.from_regex(r"[A-Za-z0-9-]{1,12}", fullmatch=True)),
                        draw(st.one_of(random_text, very_long))))
    return headers


def value_of(headers: list[tuple[str, str]], name: str) -> str:
    """What the intake should read from a header: stripped, '' if absent."""
    return next((v for k, v in headers if k.lower() == name.lower()), "").strip()


@st.composite
def bad_signatures(draw, body: bytes) -> list[tuple[str, str]]:
    """The signature header(s) of an unsigned or wrongly signed delivery of `body`."""
    valid = sign(body)
    name = draw(odd_case(SIGNATURE))
    kind = draw(st.sampled_from([
        "missing", "empty", "random base64", "random text", "control characters", "very long",
        "another body", "another secret", "truncated", "unpadded", "one character changed", "hex digest",
        "prefixed", "url-safe base64", "garbage then valid", "valid then garbage", "secret as value",
    ]))
    event(f"signature: {kind}")
    garbage = draw(st.one_of(st.just(""), random_text, st.binary(min_size=32, max_size=32).map(
        lambda raw: base64.b64encode(raw).decode())))
    if kind == "missing":
        return []
    if kind in ("garbage then valid", "valid then garbage"):  # a server joins them: "a, b"
        pair = [(name, garbage), (draw(odd_case(SIGNATURE)), valid)]
        return pair if kind == "garbage then valid" else pair[::-1]
    if kind == "another body":
        value = sign(draw(bodies.filter(lambda other: other != body)))
    elif kind == "another secret":
        value = sign(body, draw(st.text(max_size=20).filter(lambda s: s != SHOPIFY_SECRET)))
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
            "truncated": valid[: draw(st.integers(0, len(valid) - 1))],
            "unpadded": valid.rstrip("="),
            "hex digest": hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).hexdigest(),
            "prefixed": "sha256=" + valid,
            "url-safe base64": valid.replace("+", "-").replace("/", "_") + "~",
            "secret as value": SHOPIFY_SECRET,
        }[kind]
    assert value.strip() != valid
    return [(name, value)]


# --- 1. unsigned or wrongly signed: 401, nothing stored ------------------------------------------------


@fuzz(250)
@given(body=bodies, others=delivery_headers(), data=st.data())
def test_unsigned_or_wrongly_signed_deliveries_get_401_and_store_nothing(fuzz_app, body, others, data):
    wipe(fuzz_app)
    signature = data.draw(bad_signatures(body), label="signature")
    headers = data.draw(st.permutations(others + signature), label="headers")

    answer = post(fuzz_app.test_client(), body, headers)

    assert answer.status_code == 401, (answer.status_code, answer.data[:300])
    assert check_answer_shape(answer) == {"status": "invalid signature"}
    assert nothing_stored(fuzz_app)


# --- 2. validly signed, any body: 200 or a clear 400, never 500 ----------------------------------------


def check_signed_answer(app, body: bytes, headers: list[tuple[str, str]], answer) -> dict:
    """The contract for a validly signed delivery under the size limit; returns the answer's JSON."""
    payload = check_answer_shape(answer)
    kind = reading(body)
    event(f"body: {kind}")
    topic = value_of(headers, "X-Shopify-Topic")
    domain = value_of(headers, "X-Shopify-Shop-Domain").lower()
    odd_headers = not (ordinary(topic, 100) and ordinary(domain, 255))
    assert answer.status_code in (200, 400), (answer.status_code, payload)
    if kind == "object" and not odd_headers:
        assert answer.status_code == 200, payload
    elif kind not in ("object", "lenient object", "long number"):  # Python reads NaN; a stricter intake may not
        assert answer.status_code == 400, payload
    if answer.status_code == 400:
        if payload["status"] == "unreadable headers":
            assert odd_headers, (topic, domain, payload)
            event("400 unreadable headers")
        else:
            assert kind != "object", payload
            assert ("nested" in payload["error"]) == (kind == "too deep"), payload
            if kind == "long number":  # it is JSON: the answer must not say otherwise
                assert "not JSON" not in payload["error"], payload
        assert nothing_stored(app)
        return payload

    paid = topic in ("orders/paid", "refunds/create", "orders/cancelled")  # the topics that create work
    assert payload["status"] == ("accepted" if paid else "ignored"), payload
    [stored] = db.session.scalars(sa.select(WebhookEvent)).all()
    assert payload["event"] == stored.id
    assert (stored.body, stored.topic, stored.platform) == (body, topic, "shopify")
    assert stored.status == (EventStatus.RECEIVED if paid else EventStatus.IGNORED)
    assert stored.store.domain == (domain or "default")
    delivery = value_of(headers, "X-Shopify-Event-Id") or value_of(headers, "X-Shopify-Webhook-Id")
    if delivery and ordinary(delivery, 200):
        assert stored.event_key == delivery
    else:  # no id, or one too long or too odd to store: some stable key of its own
        assert stored.event_key and stored.event_key != delivery
    assert misfits(stored) + misfits(stored.store) == []  # PostgreSQL would take it
    assert count(Store) == 1
    assert app.extensions["queue"].job_ids == ([jobs.event_job_id(stored.id)] if paid else [])
    return payload


@fuzz(250)
@given(body=bodies, others=delivery_headers(), name=odd_case(SIGNATURE),
       padding=st.sampled_from(["", "", " ", "\t"]), again=st.booleans(), data=st.data())
def test_validly_signed_deliveries_of_any_body_get_200_or_a_clear_400(fuzz_app, body, others, name, padding,
                                                                       again, data):
    wipe(fuzz_app)
    client, queue = fuzz_app.test_client(), fuzz_app.extensions["queue"]
    headers = data.draw(st.permutations([*others, (name, padding + sign(body) + padding)]), label="headers")

    answer = post(client, body, headers)

    check_signed_answer(fuzz_app, body, headers, answer)
    if answer.status_code == 200 and again:  # the same delivery once more: a duplicate, nothing new
        jobs_before = list(queue.job_ids)
        repeat = post(client, body, headers)
        assert (repeat.status_code, check_answer_shape(repeat)) == (200, {"status": "duplicate"})
        assert count(WebhookEvent) == 1 and count(Store) == 1
        assert queue.job_ids == jobs_before


# --- 3. signed objects that are not (quite) orders: stored, then planned without a crash ---------------


def no_invoicexpress(store=None):
    raise AssertionError("the event job only plans: it must not make an InvoiceXpress client")


def run_the_job(app, event_id: int) -> None:
    """Process the event as the worker would, with no HTTP possible."""
    app.extensions["invoicexpress"] = no_invoicexpress
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:  # no URL: any call fails
        jobs.process_event(event_id)  # must not raise, whatever the payload
        assert len(http.calls) == 0, [call.request.url for call in http.calls]


def check_event_outcome(app, event_id: int) -> None:
    """The event ends failed with a readable note, or processed: a held or pending document, or a note
    saying why none is owed. Whatever is stored, PostgreSQL would take."""
    db.session.remove()
    stored = db.session.get(WebhookEvent, event_id)
    documents = db.session.scalars(sa.select(Document)).all()
    event(f"event {stored.status}, documents {[d.state for d in documents]}")
    assert stored.status in (EventStatus.PROCESSED, EventStatus.FAILED), stored.status
    assert stored.processed_at is not None
    notes = [stored.note]
    if stored.status == EventStatus.FAILED:
        assert readable(stored.note), stored.note
        assert documents == []
    elif not documents:
        assert said(stored.note), stored.note  # why nothing is owed
    else:
        [document] = documents
        assert document.event_id == event_id
        assert document.state in (DocumentState.HELD, DocumentState.PENDING), document.state
        if document.state == DocumentState.HELD:
            assert said(document.last_error), document.last_error
            notes.append(document.last_error)
        else:
            assert document.job_id in app.extensions["queue"].job_ids
        assert count(DocumentEvent) >= 1
        assert misfits(document) == []
    assert all(readable(note) for note in notes if note is not None), notes
    assert misfits(stored) == []


@fuzz(250)
@given(payload=st.one_of(mutated_orders(), mutated_orders(), mutated_orders(), json_objects,
                         st.sampled_from(ORDER_FIXTURES).map(ORDERS.get)))
def test_signed_objects_that_are_not_quite_orders_are_stored_then_planned_without_a_crash(fuzz_app, payload):
    wipe(fuzz_app)
    body = json.dumps(payload).encode()

    answer = post(fuzz_app.test_client(), body, shopify_headers(body))

    if answer.status_code == 400 and reading(body) == "lenient object":
        return  # a stricter intake may refuse NaN; then there is nothing to process
    assert (answer.status_code, check_answer_shape(answer)["status"]) == (200, "accepted"), answer.data
    run_the_job(fuzz_app, answer.json["event"])
    check_event_outcome(fuzz_app, answer.json["event"])


# --- 4. sizes: over the limit is 413, long headers are no crash ----------------------------------------


def sized_body(size: int, kind: str, seed: int) -> bytes:
    if kind == "random bytes":
        return random.Random(seed).randbytes(size)
    if kind == "object" and size >= 2:
        return b"{}" + b" " * (size - 2)  # JSON allows any amount of whitespace
    if kind == "string field" and size >= 9:
        return b'{"p": "' + b"x" * (size - 9) + b'"}'
    return b"x" * size


@fuzz(120)
@given(
    size=st.one_of(st.integers(LIMIT - 16, LIMIT + 16), st.integers(0, LIMIT), st.integers(LIMIT, 256 * 1024)),
    kind=st.sampled_from(["object", "string field", "random bytes"]),
    seed=st.integers(0, 2**32),
    signed=st.booleans(),
    chunked=st.booleans(),
    others=delivery_headers(),
    signature_length=st.integers(1, 100_000),
)
def test_bodies_over_the_limit_get_413_and_long_headers_no_500(fuzz_app, size, kind, seed, signed, chunked,
                                                              others, signature_length):
    wipe(fuzz_app)
    fuzz_app.config["MAX_CONTENT_LENGTH"] = LIMIT
    body = sized_body(size, kind, seed)
    headers = [*others, (SIGNATURE, sign(body) if signed else "A" * signature_length)]

    if chunked:  # no Content-Length, as gunicorn hands a chunked request over
        answer = fuzz_app.test_client().post(URL, input_stream=io.BytesIO(body),
                                             headers=[*headers, ("Transfer-Encoding", "chunked")],
                                             environ_overrides={"wsgi.input_terminated": True})
    else:
        answer = post(fuzz_app.test_client(), body, headers)

    payload = check_answer_shape(answer)
    event(f"{'over' if size > LIMIT else 'within'} the limit, {'signed' if signed else 'unsigned'}")
    if size > LIMIT:
        assert (answer.status_code, payload) == (413, {"status": "too large", "limit": LIMIT})
        assert nothing_stored(fuzz_app)
    elif not signed:
        assert answer.status_code == 401
        assert nothing_stored(fuzz_app)
    else:
        check_signed_answer(fuzz_app, body, headers, answer)


def post_chunked(client, body: bytes):
    """A signed body sent without Content-Length, as gunicorn hands a chunked request to the app."""
    return client.post(URL, input_stream=io.BytesIO(body),
                       headers={**shopify_headers(body), "Transfer-Encoding": "chunked"},
                       environ_overrides={"wsgi.input_terminated": True})


def test_signed_chunked_bodies_within_the_limit_are_read_whole(fuzz_app):
    fuzz_app.config["MAX_CONTENT_LENGTH"] = LIMIT
    for size in (2, LIMIT - 1, LIMIT):
        wipe(fuzz_app)
        answer = post_chunked(fuzz_app.test_client(), b"{}" + b" " * (size - 2))
        assert (answer.status_code, answer.json["status"]) == (200, "accepted"), size
        assert count(WebhookEvent) == 1


# --- unknown platforms ---------------------------------------------------------------------------------


@fuzz(60)
@given(name=st.text(min_size=1, max_size=30).filter(lambda n: "/" not in n and n not in ("shopify", ".", "..")),
       body=bodies)
def test_any_other_platform_path_is_404_and_stores_nothing(fuzz_app, name, body):
    wipe(fuzz_app)
    answer = post(fuzz_app.test_client(), body, shopify_headers(body), url="/webhooks/" + quote(name, safe=""))
    assert answer.status_code == 404, (name, answer.status_code)
    assert nothing_stored(fuzz_app)


# --- the bugs this fuzzing found, each kept with its minimal example -----------------------------------

def minimal_order(**changes) -> dict:
    line = {"id": 1, "price": "10.00", "quantity": 1, "tax_lines": [{"rate": "0.23", "price": "1.87"}]}
    line.update(changes.pop("line", {}))
    order = {"id": 1, "name": "#1", "currency": "EUR", "total_price": "10.00", "taxes_included": True,
             "financial_status": "paid", "line_items": [line]}
    order.update(changes)
    return order


def deliver_and_process(app, order: dict) -> int:
    body = json.dumps(order).encode()  # ASCII: a lone surrogate travels as the escape \ud800
    answer = post(app.test_client(), body, shopify_headers(body))
    assert (answer.status_code, answer.json["status"]) == (200, "accepted"), answer.json
    run_the_job(app, answer.json["event"])
    return answer.json["event"]


def test_the_minimal_order_is_planned_into_a_pending_document(fuzz_app):
    """The baseline of the examples below: unchanged, it becomes a document to issue."""
    check_event_outcome(fuzz_app, deliver_and_process(fuzz_app, minimal_order()))
    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.state == DocumentState.PENDING


def test_a_json_object_with_a_very_long_integer_is_not_called_not_json(fuzz_app):
    """Python refuses to convert an integer of more than 4300 digits; the intake said 'the body is not
    JSON' of such a valid JSON object."""
    body = b'{"n": ' + b"1" * 4301 + b"}"
    answer = post(fuzz_app.test_client(), body, shopify_headers(body))
    payload = check_answer_shape(answer)
    assert answer.status_code in (200, 400), payload
    if answer.status_code == 400:
        assert "number" in payload["error"] and "not JSON" not in payload["error"], payload
        assert nothing_stored(fuzz_app)


def test_a_signed_chunked_body_over_the_limit_gets_413_not_401(fuzz_app):
    """Without Content-Length (chunked; gunicorn sets wsgi.input_terminated) werkzeug cut the body at
    MAX_CONTENT_LENGTH without a word, so a signed body one byte over got 401 'invalid signature'."""
    fuzz_app.config["MAX_CONTENT_LENGTH"] = LIMIT
    answer = post_chunked(fuzz_app.test_client(), b"{}" + b" " * (LIMIT - 1))  # one byte over
    assert (answer.status_code, answer.json) == (413, {"status": "too large", "limit": LIMIT})
    assert nothing_stored(fuzz_app)


@pytest.mark.parametrize("order", [
    pytest.param(minimal_order(line={"price": "1e999999"}), id="price 1e999999 (was InvalidOperation)"),
    pytest.param(minimal_order(line={"quantity": 10**40}), id="quantity 10**40 (was InvalidOperation)"),
    pytest.param(minimal_order(line={"tax_lines": [{"rate": "1e999999", "price": "1.87"}]}),
                 id="tax rate 1e999999 (was Overflow)"),
    pytest.param(minimal_order(line={"tax_lines": [{"rate": 1e308, "price": "1.87"}]}),
                 id="tax rate 1e308 as a JSON number (was InvalidOperation)"),
    pytest.param(minimal_order(total_price="1" * 40), id="total of 40 digits (did not fit documents.total)"),
])
def test_the_event_job_survives_huge_numbers(fuzz_app, order):
    """A huge amount, quantity or rate raised a decimal error (not a ValueError, so not caught): the job
    crashed and the event stayed 'received' for the sweeper to queue again forever."""
    check_event_outcome(fuzz_app, deliver_and_process(fuzz_app, order))


@pytest.mark.parametrize("order", [
    pytest.param(minimal_order(name="\ud800"), id="lone surrogate in name"),
    pytest.param(minimal_order(currency="\ud800\ud800\ud800"), id="lone surrogates in currency"),
    pytest.param(minimal_order(name="#" + "1" * 300), id="name of 301 characters"),
    pytest.param(minimal_order(name="#1\x00"), id="NUL in name"),
])
def test_order_texts_that_no_database_stores_do_not_crash_the_job(fuzz_app, order):
    """A lone surrogate (valid JSON as an escape) raised UnicodeEncodeError when the document was stored;
    on PostgreSQL an order name over 255 characters or with a NUL raised DataError. Either way the job
    crashed."""
    check_event_outcome(fuzz_app, deliver_and_process(fuzz_app, order))


def test_a_presentment_currency_that_is_no_currency_does_not_crash_the_job(fuzz_app):
    event_id = deliver_and_process(fuzz_app, minimal_order(presentment_currency="EURO"))
    db.session.remove()
    assert [problem for row in db.session.scalars(sa.select(Document)) for problem in misfits(row)] == []
    check_event_outcome(fuzz_app, event_id)


@pytest.mark.parametrize("header, value", [
    ("X-Shopify-Topic", "o" * 101),
    ("X-Shopify-Event-Id", "e" * 256),
    ("X-Shopify-Shop-Domain", "d" * 256),
    ("X-Shopify-Topic", "orders/paid\x00"),
    ("X-Shopify-Shop-Domain", "a\x00b"),
    ("X-Shopify-Event-Id", "a\x00b"),
], ids=["topic 101", "event id 256", "domain 256", "NUL in topic", "NUL in domain", "NUL in event id"])
def test_header_values_that_postgresql_would_refuse_are_not_stored_as_they_are(fuzz_app, header, value):
    """Header values were stored as they came: on PostgreSQL a topic over 100 characters, an event id or
    shop domain over 255, or a NUL raised DataError, answered 503 'database unavailable' (the shop would
    retry, for ever, a delivery that can never be stored)."""
    body = b'{"id": 1}'
    headers = {**shopify_headers(body), header: value}
    answer = post(fuzz_app.test_client(), body, headers)
    check_signed_answer(fuzz_app, body, list(headers.items()), answer)
    assert [problem for row in db.session.scalars(sa.select(WebhookEvent)) for problem in misfits(row)] == []


@pytest.mark.parametrize("order", [
    pytest.param(minimal_order(financial_status="pending\nx"), id="line feed (event note)"),
    pytest.param(minimal_order(financial_status="\x1f"), id="C0 control (event note)"),
    pytest.param(minimal_order(line={"title": "Mug\nx", "tax_lines": [{"rate": "0.07", "price": "0.65"}]}),
                 id="line feed in a line title (hold reason)"),
    pytest.param(minimal_order(financial_status="pending\u2028x"), id="line separator U+2028 (event note)"),
    pytest.param(minimal_order(financial_status="pending\x85x"), id="C1 next line U+0085 (event note)"),
    pytest.param(minimal_order(line={"title": "Mug\u2029x", "tax_lines": [{"rate": "0.07", "price": "0.65"}]}),
                 id="paragraph separator in a line title (hold reason)"),
])
def test_notes_stay_one_readable_line_whatever_the_payload_says(fuzz_app, order):
    """Notes and hold reasons quote payload text: a line break or control character sent in, say, the
    payment status or a line title broke the operator's one-line note."""
    event_id = deliver_and_process(fuzz_app, order)
    db.session.remove()
    notes = [db.session.get(WebhookEvent, event_id).note]
    notes += [document.last_error for document in db.session.scalars(sa.select(Document))]
    notes = [note for note in notes if note is not None]
    assert notes and all(readable(note) for note in notes), notes


# Found by the worker's fuzzing (tests/integration/test_fuzz_worker.py): an order whose e-mail was no
# address went to IX as the client's e-mail, IX refused the document (422) and the order got none.
@pytest.mark.parametrize("email", ["abc", "maria@", "a@b", "two@one.pt, three@two.pt", " "])
def test_an_order_whose_email_is_no_address_is_issued_without_it_and_not_emailed(sandbox, post_order, queue,
                                                                                email):
    order = copy.deepcopy(ORDERS["paid_b2c_tax_included.json"])
    order["email"] = order["contact_email"] = order["customer"]["email"] = email

    post_order(order)
    drain(queue)

    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.state == DocumentState.DONE, document.last_error
    [issued] = sandbox.documents()
    assert issued["status"] == "settled" and issued["emails"] == []
    assert issued["document"]["client"].get("email") in (None, "")
    timeline = " ".join(db.session.scalars(sa.select(DocumentEvent.message).where(
        DocumentEvent.document_id == document.id)))
    assert "not e-mailed" in timeline.lower()
    assert email.strip() == "" or "e-mail is not a valid address" in timeline


# --- how hypothesis runs ------------------------------------------------------------------------------


@pytest.mark.parametrize(("ci", "in_ci"), [("true", True), ("", False)])
def test_ci_replays_the_same_examples_and_a_failure_says_how_to_replay_it(ci, in_ci):
    probe = ("import tests.conftest; from hypothesis import settings; d = settings.default; "
             "print(d.derandomize, d.print_blob, d.deadline)")
    env = {key: value for key, value in os.environ.items() if key not in ("CI", "HYPOTHESIS_PROFILE")}
    ran = subprocess.run([sys.executable, "-c", probe], env={**env, "CI": ci}, cwd=FIXTURES.parents[1],
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == [str(in_ci), str(in_ci), "None"]
