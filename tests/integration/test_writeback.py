"""Write-back end to end (PostgreSQL, Redis, gunicorn, a worker and the fakes in processes): a done invoice's
number and PDF link land exactly once on the WooCommerce order and the Stripe payment intent, though the shop's
API fails with 500s and answers too late on the way."""

from __future__ import annotations

import time

import pytest

from tests.integration.conftest import STRIPE_API_KEY, STRIPE_READ_TIMEOUT
from tests.integration.test_stripe import PAID_INTENT, as_sent, fixture, put_session
from tests.integration.test_woocommerce import recent_order

pytestmark = pytest.mark.timeout(120)

TWO_SWEEPS = 5  # SWEEP_INTERVAL_SECONDS=2: the sweeper comes round twice and finds nothing left to do


def write_back_done(connector):
    rows = connector.rows("SELECT state, last_error FROM write_backs")
    return rows if rows and all(state == "done" for state, _ in rows) else None


def test_woocommerce_gets_one_note_and_its_meta_under_faults(woo_connector):
    connector, woo = woo_connector, woo_connector.woo
    order = recent_order(2001)
    woo.add_order(order)
    # The note lands but its answer comes after the read timeout (3 s); then the meta's first PUT is a 500.
    woo.faults({"method": "POST", "path": r"^orders/2001/notes$", "kind": "timeout", "seconds": 4, "times": 1},
               {"method": "PUT", "path": r"^orders/2001$", "kind": "500", "times": 1})

    assert connector.post_woocommerce(order, "order.updated").status_code == 200
    connector.wait_until(lambda: write_back_done(connector), timeout=60, what="the write-back")
    time.sleep(TWO_SWEEPS)

    [(number, ix_id, state)] = connector.rows("SELECT sequence_number, ix_id, state FROM documents")
    assert state == "done"
    notes = woo.notes(2001)
    assert len(notes) == 1
    assert notes[0]["note"].startswith(f"InvoiceXpress invoice {number}: ")
    assert notes[0]["note"].endswith(f"/_sandbox/documents/{ix_id}.pdf")
    meta = {m["key"]: m["value"] for m in woo.order(2001)["meta_data"]}
    assert meta["invoicexpress_invoice_number"] == number
    # Posted once, its answer lost; the next attempts looked for it and found it instead of posting again.
    assert len([c for c in woo.calls() if c["method"] == "POST" and c["path"].endswith("/notes")]) == 1
    assert len([c for c in woo.calls() if c["method"] == "GET" and c["path"].endswith("/notes")]) >= 2


def test_stripe_gets_its_metadata_once_under_faults(stripe_connector):
    connector, stripe = stripe_connector, stripe_connector.stripe
    stripe.api_key = STRIPE_API_KEY
    event = fixture("checkout_session_completed_paid.json")
    put_session(stripe, event["data"]["object"])
    intent_path = rf"^payment_intents/{PAID_INTENT}$"
    stripe.faults({"method": "POST", "path": intent_path, "kind": "500", "times": 1},
                  {"method": "POST", "path": intent_path, "kind": "timeout", "seconds": STRIPE_READ_TIMEOUT + 2,
                   "times": 1})

    assert connector.post_stripe(as_sent(event)).status_code == 200
    connector.wait_until(lambda: write_back_done(connector), timeout=60, what="the write-back")
    time.sleep(TWO_SWEEPS)

    [(number, state, uid)] = connector.rows("SELECT sequence_number, state, proprietary_uid FROM documents")
    assert state == "done"
    metadata = stripe.payment_intent(PAID_INTENT)["metadata"]
    assert metadata["invoicexpress_number"] == number
    assert metadata["invoicexpress_pdf"].startswith("http")
    # Sent three times or more (a 500, an answer too late, the retry), done once: the Idempotency-Key's work.
    assert len([c for c in stripe.calls() if c["method"] == "POST"]) >= 3
    [write] = stripe.writes()
    assert write["idempotency_key"] == f"invoicexpress-writeback-{uid}"
