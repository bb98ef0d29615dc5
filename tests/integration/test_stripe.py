"""Stripe end to end, with real PostgreSQL, Redis, gunicorn and worker processes, the IX sandbox and the Stripe
fake: a paid Checkout Session issued once though delivered three times and its lines hard to read at first, a
Multibanco payment invoiced when it is confirmed, a partial and a full refund credited once each, and a sale in
yen invoiced to the yen."""

from __future__ import annotations

import copy
import json
import time
from decimal import Decimal

import pytest

from tests.integration.conftest import REPO_ROOT, STRIPE_READ_TIMEOUT

# The first test waits out three retries of the issuing backoff (about 2, 4 and 8 s here) and a read timeout.
pytestmark = pytest.mark.timeout(300)

FIXTURES = REPO_ROOT / "tests" / "fixtures" / "stripe"
PAID_INTENT = "pi_3QhT7uAbCdEfGh1J0kLmNoPq"
PAID_CHARGE = "ch_3QhT7uAbCdEfGh1J0kLm"
# Long enough for the sweeper (SWEEP_INTERVAL_SECONDS=2) to have come round twice.
TWO_SWEEPS = 5


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def as_sent(event: dict) -> dict:
    """The event as Stripe sends it: a session's events carry no `line_items` (only a retrieve can expand them)."""
    sent = copy.deepcopy(event)
    sent["data"]["object"].pop("line_items", None)
    return sent


def put_session(stripe, session: dict, lines: list[dict] | None = None) -> dict:
    """Put the session in the fake, its lines served from their own endpoint; gives the session without them."""
    session = copy.deepcopy(session)
    held = session.pop("line_items", None)
    if lines is None:
        lines = held["data"] if held else []
    stripe.add_session(session, lines)
    return session


def session_completed(session: dict, event_id: str) -> dict:
    """A `checkout.session.completed` event of live mode about `session` (as sent: without its lines)."""
    obj = {k: v for k, v in session.items() if k != "line_items"}
    return {"id": event_id, "object": "event", "api_version": "2025-03-31.basil", "created": int(time.time()),
            "data": {"object": obj}, "livemode": True, "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None}, "type": "checkout.session.completed"}


def line_item_reads(stripe, session_id: str) -> list[dict]:
    return [c for c in stripe.calls()
            if c["method"] == "GET" and c["path"] == f"checkout/sessions/{session_id}/line_items"]


def timeline(connector, source_key: str) -> list[tuple[str, str]]:
    """(kind, message) of the document's timeline, oldest first."""
    return [(row.kind, row.message) for row in connector.rows(
        "SELECT e.kind, e.message FROM document_events e JOIN documents d ON d.id = e.document_id "
        f"WHERE d.source_key = '{source_key}' ORDER BY e.id")]


def documents_of(connector, type_name: str) -> list[dict]:
    return [d for d in connector.ix_documents() if d["type"] == type_name]


def total(document: dict) -> Decimal:
    return Decimal(str(document["totals"]["total"]))


def all_issued(connector, count: int):
    """IX's documents once there are `count`, each final or settled and e-mailed, and all done in our records."""
    documents = connector.ix_documents()
    issued = len(documents) == count and all(d["status"] in ("final", "settled") and d["emails"]
                                             for d in documents)
    done = connector.rows("SELECT DISTINCT state FROM documents") == [("done",)]
    return documents if issued and done else None


def issue_paid_session(connector) -> tuple[dict, dict]:
    """The paid EUR session put in the fake and delivered once; gives (event as sent, the settled invoice)."""
    event = fixture("checkout_session_completed_paid.json")
    put_session(connector.stripe, event["data"]["object"])
    assert connector.post_stripe(as_sent(event)).json()["status"] == "accepted"
    [invoice] = connector.wait_until(connector.settled_and_emailed, timeout=30, what="the invoice")
    return as_sent(event), invoice


def test_a_paid_session_delivered_three_times_is_issued_once_though_its_lines_are_hard_to_read(stripe_connector):
    connector, stripe = stripe_connector, stripe_connector.stripe
    event = fixture("checkout_session_completed_paid.json")
    session = put_session(stripe, event["data"]["object"])
    lines_path = rf"^checkout/sessions/{session['id']}/line_items$"
    # Held past the connector's read timeout (STRIPE_READ_TIMEOUT), so it sees a timeout, not an answer.
    stripe.faults({"method": "GET", "path": lines_path, "kind": "500", "times": 1},
                  {"method": "GET", "path": lines_path, "kind": "429", "times": 1},
                  {"method": "GET", "path": lines_path, "kind": "timeout", "seconds": STRIPE_READ_TIMEOUT + 3,
                   "times": 1})

    answers = [connector.post_stripe(as_sent(event)) for _ in range(3)]

    assert [(a.status_code, a.json()["status"]) for a in answers] == [
        (200, "accepted"), (200, "duplicate"), (200, "duplicate")]
    source_key = f"order:{PAID_INTENT}:receipt"
    # The row is there at once, before anything could be read from Stripe.
    [(key, snapshot)] = connector.wait_until(
        lambda: connector.rows("SELECT source_key, snapshot FROM documents"), timeout=10, what="the row")
    assert (key, snapshot) == (source_key, None)

    [issued] = connector.wait_until(connector.settled_and_emailed, timeout=200, what="the invoice")
    time.sleep(TWO_SWEEPS)  # the sweeper comes round meanwhile, and has nothing more to read

    assert [d["id"] for d in connector.ix_documents()] == [issued["id"]]
    assert issued["status"] == "settled"
    assert len(issued["emails"]) == 1
    assert total(issued) == Decimal(session["amount_total"]) / 100 == Decimal("74.78")
    reads = line_item_reads(stripe, session["id"])
    assert len(reads) == 4  # a 500, a 429, a timeout, then the answer, kept on the row
    assert all(r["query"].get("expand[]") == "data.taxes" for r in reads)
    [(stored,)] = connector.rows("SELECT snapshot FROM documents")
    assert [item["id"] for item in json.loads(stored)["line_items"]["data"]] == [
        "li_1QhT7uAbCdEfGhAAA1", "li_1QhT7uAbCdEfGhAAA2"]
    entries = timeline(connector, source_key)
    assert [kind for kind, _ in entries].count("snapshot") == 1
    retries = [message for kind, message in entries if kind == "retry"]
    assert len(retries) == 3
    assert connector.rows("SELECT state, attempts FROM documents") == [("done", 4)]
    print("figures:", f"deliveries={len(answers)} duplicates_answered=2 line_item_reads={len(reads)}",
          "line_item_statuses=500,429,timeout,200", f"ix_documents={len(connector.ix_documents())}",
          f"emails={len(issued['emails'])} retries={len(retries)}")
    for message in retries:
        print("retry:", message)


def test_a_multibanco_checkout_is_invoiced_when_its_payment_is_confirmed(stripe_connector):
    connector, stripe = stripe_connector, stripe_connector.stripe
    unpaid = fixture("checkout_session_completed_unpaid_multibanco.json")
    succeeded = fixture("async_payment_succeeded.json")
    lines = succeeded["data"]["object"]["line_items"]["data"]
    put_session(stripe, unpaid["data"]["object"], lines)

    assert connector.post_stripe(as_sent(unpaid)).json()["status"] == "accepted"
    [(status, note)] = connector.wait_until(
        lambda: connector.rows("SELECT status, note FROM webhook_events WHERE status <> 'received'"),
        timeout=20, what="the unpaid checkout's event")
    time.sleep(TWO_SWEEPS)

    assert status == "processed"
    assert "delayed method" in note and "Multibanco" in note
    assert connector.rows("SELECT id FROM documents") == []
    assert connector.ix_documents() == []

    put_session(stripe, succeeded["data"]["object"])  # Stripe's session is paid now
    assert connector.post_stripe(as_sent(succeeded)).json()["status"] == "accepted"
    [invoice] = connector.wait_until(connector.settled_and_emailed, timeout=30, what="the invoice")

    assert invoice["type"] == "InvoiceReceipt"
    assert invoice["status"] == "settled"
    assert len(invoice["emails"]) == 1
    assert total(invoice) == Decimal("49.90")
    assert connector.rows("SELECT source_key FROM documents") == [("order:pi_3QhU1aAbCdEfGh1Mb0Multi:receipt",)]


def test_a_partial_and_a_full_refund_are_credited_once_each(stripe_connector):
    connector, stripe = stripe_connector, stripe_connector.stripe
    _, invoice = issue_paid_session(connector)

    # The first refund: a charge.refunded whose charge lists no refunds (Stripe's API since 2022-11-15), so the
    # worker reads them from Stripe.
    refunded = fixture("charge_refunded_partial.json")
    first = refunded["data"]["object"].pop("refunds")["data"][0]
    stripe.add_refund(first)
    assert connector.post_stripe(refunded).json()["status"] == "accepted"
    connector.wait_until(lambda: all_issued(connector, 2), timeout=30, what="the first credit note")
    # Stripe's refund.created of the same refund comes too.
    same = fixture("refund_created.json")
    same["id"] = "evt_3QhX1eAbCdEfGh0006"
    same["data"]["object"] = dict(first)
    answers = [connector.post_stripe(same)]
    time.sleep(TWO_SWEEPS)
    assert len(connector.ix_documents()) == 2

    # The second refund, the rest of the payment, delivered twice.
    rest = fixture("refund_created.json")
    stripe.add_refund(rest["data"]["object"])
    answers += [connector.post_stripe(rest) for _ in range(2)]
    issued = connector.wait_until(lambda: all_issued(connector, 3), timeout=30, what="the second credit note")
    time.sleep(TWO_SWEEPS)

    assert [a.json()["status"] for a in answers] == ["accepted", "accepted", "duplicate"]
    assert len(connector.ix_documents()) == 3
    credits = sorted((d for d in issued if d["type"] == "CreditNote"), key=lambda d: d["id"])
    assert [total(c) for c in credits] == [Decimal("18.45"), Decimal("56.33")]
    assert sum(total(c) for c in credits) == total(invoice) == Decimal("74.78")
    for credit in credits:
        assert credit["status"] == "final"
        assert len(credit["emails"]) == 1
        assert credit["document"]["owner_invoice_id"] == invoice["id"]
    # The charge's refunds were read from Stripe once, by the charge the event named.
    assert [c["query"].get("charge") for c in stripe.calls() if c["path"] == "refunds"] == [PAID_CHARGE]
    # The looked-up refund came in as an event of its own, keyed by the refund's id.
    assert connector.rows(
        "SELECT event_key, topic, source FROM webhook_events WHERE source = 'poll'") == [
        (first["id"], "refund.created", "poll")]
    assert sorted(connector.rows("SELECT source_key, state FROM documents WHERE source_key LIKE 'refund:%'")) == [
        (f"refund:{first['id']}:credit_note", "done"),
        (f"refund:{rest['data']['object']['id']}:credit_note", "done")]
    print("figures:", f"refunds=2 deliveries={1 + len(answers)} credit_notes={len(credits)}",
          f"credited={sum(total(c) for c in credits)} invoiced={total(invoice)}")


def test_a_session_in_yen_is_invoiced_in_yen_to_the_yen(stripe_connector):
    connector, stripe = stripe_connector, stripe_connector.stripe
    stripe.set_exchange_rates({"jpy": 0.0062})
    session = put_session(stripe, fixture("session_jpy.json"))

    assert connector.post_stripe(session_completed(session, "evt_1QhW2eAbCdEfGh0007")).json()["status"] == \
        "accepted"
    [invoice] = connector.wait_until(connector.settled_and_emailed, timeout=30, what="the invoice")

    assert invoice["status"] == "settled"
    assert len(invoice["emails"]) == 1
    assert invoice["document"]["currency"] == "JPY"
    assert total(invoice) == Decimal(session["amount_total"]) == Decimal(4500)
    # The payment in euros (4500 × 0.0062 = 27.90 EUR) was read from Stripe and kept with the sale.
    intent_reads = [c for c in stripe.calls() if c["path"] == f"payment_intents/{session['payment_intent']}"]
    assert len(intent_reads) == 1
    assert intent_reads[0]["query"].get("expand[]") == "latest_charge.balance_transaction"
    [(stored,)] = connector.rows("SELECT snapshot FROM documents")
    balance = json.loads(stored)["payment_intent"]["latest_charge"]["balance_transaction"]
    assert (balance["amount"], balance["currency"]) == (2790, "eur")
    print("figures:", f"currency={invoice['document']['currency']} total={total(invoice)}",
          f"settled_eur={Decimal(balance['amount']) / 100}")
