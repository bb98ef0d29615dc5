"""WooCommerce end to end, with real PostgreSQL, Redis, gunicorn and worker processes, the IX sandbox and the
WooCommerce fake: an order issued once though delivered twice, orders whose webhook never came issued through
reconciliation, and a refund credited once with its lines from a REST API that fails at first."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.test_webhooks_woocommerce import woo_order, woo_refund

# The refund test waits out three retries of the issuing backoff (about 2, 4 and 8 s here) and a read timeout.
pytestmark = pytest.mark.timeout(300)

# Long enough for two reconciliation beats (RECONCILE_INTERVAL_SECONDS=2) to have come and gone.
TWO_BEATS = 6


def recent_order(order_id: int) -> dict:
    """A paid order modified a moment ago, so that reconciliation's first pass (a day back) reads it."""
    moment = (datetime.now(UTC) - timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    return woo_order(order_id=order_id, modified=moment, date_created=moment, date_created_gmt=moment,
                     date_paid=moment, date_paid_gmt=moment)


def inbox(connector) -> list[tuple]:
    """(order id, topic, source) of every inbox row, oldest first."""
    return [(row.body_order, row.topic, row.source) for row in connector.rows(
        "SELECT convert_from(body, 'UTF8')::json->>'id' AS body_order, topic, source FROM webhook_events "
        "ORDER BY id")]


def documents_of(connector, type_name: str) -> list[dict]:
    return [d for d in connector.ix_documents() if d["type"] == type_name]


def both_issued(connector) -> bool:
    """The invoice settled and the credit note final, each e-mailed, and both done in our own records."""
    documents = connector.ix_documents()
    issued = len(documents) == 2 and all(d["status"] in ("final", "settled") and d["emails"] for d in documents)
    return issued and connector.rows("SELECT DISTINCT state FROM documents") == [("done",)]


def figures(connector, orders: int, deliveries: int, duplicates_answered: int) -> str:
    """The closing note's figures: orders, deliveries, deliveries dropped, found by reconciliation, duplicates."""
    rows = inbox(connector)
    by_webhook = {order for order, _, source in rows if source == "webhook"}
    by_poll = {order for order, _, source in rows if source == "poll"}
    return (f"orders={orders} deliveries={deliveries} dropped={orders - len(by_webhook)} "
            f"found_by_reconciliation={len(by_poll - by_webhook)} duplicates_answered={duplicates_answered}")


def test_a_signed_order_delivered_twice_is_issued_settled_and_emailed_once(woo_connector):
    order = recent_order(1001)
    answers = [woo_connector.post_woocommerce(order, "order.created") for _ in range(2)]
    woo_connector.woo.add_order(order)  # the shop has it too: reconciliation sees the same state

    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "accepted"), (200, "duplicate")]
    [issued] = woo_connector.wait_until(woo_connector.settled_and_emailed, timeout=30, what="the invoice")
    time.sleep(TWO_BEATS)  # reconciliation polls meanwhile, and finds only what the webhook brought

    assert [d["id"] for d in woo_connector.ix_documents()] == [issued["id"]]
    assert issued["status"] == "settled"
    assert len(issued["emails"]) == 1
    assert Decimal(str(issued["totals"]["total"])) == Decimal("24.60")
    assert inbox(woo_connector) == [("1001", "order.created", "webhook")]
    print("figures:", figures(woo_connector, orders=1, deliveries=2, duplicates_answered=1))


def test_orders_whose_webhooks_never_came_are_issued_through_reconciliation(woo_connector):
    orders = [recent_order(2001 + n) for n in range(5)]
    delivered, dropped = orders[:3], orders[3:]
    answers = [woo_connector.post_woocommerce(order, "order.created") for order in delivered]
    answers.append(woo_connector.post_woocommerce(delivered[0], "order.updated"))  # a redelivery
    for order in orders:
        woo_connector.woo.add_order(order)

    assert [a.json()["status"] for a in answers] == ["accepted"] * 3 + ["duplicate"]
    issued = woo_connector.wait_until(
        lambda: len(woo_connector.ix_documents()) == len(orders) and woo_connector.settled_and_emailed(),
        timeout=35, what="all five invoices")

    assert all(len(document["emails"]) == 1 for document in issued)
    rows = inbox(woo_connector)
    assert sorted(rows) == sorted([(str(o["id"]), "order.created", "webhook") for o in delivered]
                                  + [(str(o["id"]), "order.updated", "poll") for o in dropped])
    print("figures:", figures(woo_connector, orders=len(orders), deliveries=len(answers), duplicates_answered=1))


def test_a_refund_is_credited_once_with_its_lines_from_a_rest_api_that_fails_at_first(woo_connector):
    woo = woo_connector.woo
    woo.add_order(recent_order(3001))
    woo_connector.post_woocommerce(woo.order(3001), "order.created")
    woo_connector.wait_until(woo_connector.settled_and_emailed, timeout=30, what="the invoice")

    refund_path = r"^orders/3001/refunds/800$"
    # Held past the REST client's read timeout (WOOCOMMERCE_READ_TIMEOUT, 3 s here), so the connector sees a
    # timeout; the fake answers its other requests meanwhile.
    woo.faults({"method": "GET", "path": refund_path, "kind": "500", "times": 2},
               {"method": "GET", "path": refund_path, "kind": "timeout", "seconds": 6, "times": 1})
    woo.add_refund(3001, woo_refund(800))
    refunded = woo.order(3001)
    answers = [woo_connector.post_woocommerce(refunded, "order.updated") for _ in range(2)]

    assert [a.json()["status"] for a in answers] == ["accepted", "duplicate"]
    woo_connector.wait_until(lambda: both_issued(woo_connector), timeout=180, what="the credit note")
    time.sleep(TWO_BEATS)

    [invoice] = documents_of(woo_connector, "InvoiceReceipt")
    [credit] = documents_of(woo_connector, "CreditNote")
    assert credit["status"] == "final"
    assert credit["document"]["owner_invoice_id"] == invoice["id"]
    assert Decimal(str(credit["totals"]["total"])) == Decimal("12.30")
    # The refund's own lines, from the REST API: one of the two mugs.
    assert [(int(float(i["quantity"])), i["tax"]["name"]) for i in credit["document"]["items"]] == [(1, "IVA23")]
    assert len(credit["emails"]) == 1
    fetches = [c for c in woo.calls() if c["method"] == "GET" and c["path"] == "orders/3001/refunds/800"]
    assert len(fetches) == 4  # two 500s, one timeout, then the answer, kept with the credit note
    assert woo_connector.rows("SELECT state FROM documents WHERE source_key LIKE 'refund:%'") == [("done",)]
    print("figures:", figures(woo_connector, orders=1, deliveries=3, duplicates_answered=1),
          f"refund_fetches={len(fetches)}")
