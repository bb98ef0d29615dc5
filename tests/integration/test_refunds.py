"""Refunds and cancellations on real parts: the RQ worker process, PostgreSQL, Redis and the IX sandbox."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

FIXTURES = Path(__file__).parents[1] / "fixtures" / "shopify"


def body(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_each_refund_becomes_one_credit_note_even_redelivered_or_before_its_invoice(connector):
    refunds = {  # order → (refund, what it gives back)
        "paid_b2c_tax_included.json": ("refund_partial_one_line.json", "9.99"),
        "paid_madeira.json": ("refund_shipping_only.json", "7.90"),
        "paid_mixed_rates.json": ("refund_mixed_rates.json", "24.50"),
        "paid_with_discount_and_nif.json": ("refund_amount_only.json", "10.00"),
        "paid_b2b_nif_in_company.json": ("refund_with_restocking_fee.json", "147.00"),
    }
    # Out of order: this refund arrives before the order's payment does.
    assert connector.post(body("refund_tax_excluded.json"), topic="refunds/create").status_code == 200
    for order, (refund, _) in refunds.items():
        assert connector.post(body(order)).status_code == 200
        assert connector.post(body(refund), topic="refunds/create", event_id=f"r-{refund}").status_code == 200
        # Redelivered, and seen again by a second subscription.
        assert connector.post(body(refund), topic="refunds/create", event_id=f"r-{refund}").status_code == 200
        assert connector.post(body(refund), topic="refunds/create").status_code == 200
    connector.wait_until(lambda: connector.rows("SELECT count(*) FROM documents WHERE state = 'pending' "
                                                "AND last_error LIKE 'Waiting%'") == [(1,)],
                         what="the early refund to wait for its invoice")
    assert connector.post(body("paid_tax_excluded.json")).status_code == 200

    def all_issued():
        documents = connector.ix_documents()
        credits = [d for d in documents if d["type"] == "CreditNote"]
        invoices = [d for d in documents if d["type"] == "InvoiceReceipt"]
        done = len(credits) == 6 and len(invoices) == 6 and all(
            d["status"] in ("final", "settled") and len(d["emails"]) == 1 for d in documents)
        return (invoices, credits) if done else None

    invoices, credits = connector.wait_until(all_issued, timeout=90, what="six invoices and six credit notes")
    by_id = {d["id"]: d for d in invoices}
    totals = sorted(Decimal(str(c["totals"]["total"])) for c in credits)
    expected = sorted([Decimal(amount) for _, amount in refunds.values()] + [Decimal("61.50")])
    assert totals == expected
    for credit in credits:
        owner = by_id[credit["document"]["owner_invoice_id"]]
        assert Decimal(str(credit["totals"]["total"])) <= Decimal(str(owner["totals"]["total"]))
    connector.wait_until(lambda: connector.rows("SELECT DISTINCT state FROM documents") == [("done",)],
                         what="every document done")
    assert connector.rows("SELECT count(*) FROM documents") == [(12,)]


def test_a_cancelled_order_whose_document_is_a_draft_has_the_draft_deleted(connector):
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="status",
                    status=503, times=1)
    connector.post(body("paid_b2c_tax_included.json"))
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("created",)],
                         what="the draft")
    cancelled = body("paid_b2c_tax_included.json").replace(b'"financial_status": "paid"',
                                                          b'"financial_status": "refunded"')
    assert connector.post(cancelled, topic="orders/cancelled").status_code == 200

    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("canceled",)],
                         what="the document cancelled")
    [draft] = connector.wait_until(
        lambda: [d for d in connector.ix_documents() if d["status"] == "deleted"], what="the draft deleted")
    assert draft["emails"] == []


def test_a_cancelled_order_whose_document_failed_has_its_draft_deleted(connector):
    # IX refuses the finalize for good: the document fails and its draft stays at IX.
    connector.fault(method="PUT", path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="status",
                    status=422, times=1)
    connector.post(body("paid_b2c_tax_included.json"))
    connector.wait_until(lambda: connector.rows("SELECT state FROM documents") == [("failed",)],
                         what="the document failed")
    assert [d["status"] for d in connector.ix_documents()] == ["draft"]
    cancelled = body("paid_b2c_tax_included.json").replace(b'"financial_status": "paid"',
                                                          b'"financial_status": "refunded"')
    assert connector.post(cancelled, topic="orders/cancelled").status_code == 200

    connector.wait_until(lambda: connector.rows("SELECT state, last_error FROM documents") == [
        ("canceled", "The order was cancelled before its document was final: the draft was deleted.")],
        what="the document cancelled")
    assert [d["status"] for d in connector.ix_documents()] == ["deleted"]
