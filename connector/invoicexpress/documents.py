"""InvoiceXpress's document types, named once: URL segment, body key, `type` value, and how IX calls them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DocumentType:
    path: str  # URL segment and our `documents.doc_type`, e.g. "invoice_receipts"
    key: str  # the body's and the answer's root key, e.g. "invoice_receipt"
    ix_type: str  # the document's `type` in IX's answers and list filters, e.g. "InvoiceReceipt"
    label: str  # how IX names it in its messages, e.g. "invoice-receipt"
    note: bool = False  # a credit or debit note: it corrects an invoice (`owner_invoice_id`)


INVOICE = DocumentType("invoices", "invoice", "Invoice", "invoice")
INVOICE_RECEIPT = DocumentType("invoice_receipts", "invoice_receipt", "InvoiceReceipt", "invoice-receipt")
SIMPLIFIED_INVOICE = DocumentType("simplified_invoices", "simplified_invoice", "SimplifiedInvoice",
                                  "simplified-invoice")
CREDIT_NOTE = DocumentType("credit_notes", "credit_note", "CreditNote", "credit-note", note=True)
DEBIT_NOTE = DocumentType("debit_notes", "debit_note", "DebitNote", "debit-note", note=True)

BY_PATH: dict[str, DocumentType] = {
    t.path: t for t in (INVOICE, INVOICE_RECEIPT, SIMPLIFIED_INVOICE, CREDIT_NOTE, DEBIT_NOTE)
}
BY_IX_TYPE: dict[str, DocumentType] = {t.ix_type: t for t in BY_PATH.values()}
# What a sale is invoiced as, by the DOCUMENT_TYPE setting's values.
FOR_SALES: dict[str, DocumentType] = {"invoice_receipt": INVOICE_RECEIPT, "invoice": INVOICE}
