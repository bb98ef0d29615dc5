"""A document InvoiceXpress finalizes without an ATCUD is still issued, and says so where the operator looks."""

from __future__ import annotations

import base64

import pytest
import sqlalchemy as sa

from connector.extensions import db
from connector.models import Document, DocumentEvent, DocumentState
from tests.conftest import drain, fixture_body

PASSWORD = "correct horse battery staple"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode()}
WARNING = "InvoiceXpress gave no ATCUD: register the series with the tax authority."


def events(document: Document) -> list[tuple[str, str]]:
    return [(e.kind, e.message) for e in db.session.scalars(
        sa.select(DocumentEvent).where(DocumentEvent.document_id == document.id).order_by(DocumentEvent.id))]


@pytest.mark.parametrize("atcud", ["N/D", ""])
def test_a_document_finalized_without_an_atcud_is_done_with_a_warning_on_its_timeline(
        app, client, sandbox, post_order, queue, atcud):
    app.config["ADMIN_PASSWORD"] = PASSWORD
    sandbox.fault(path=r"/invoice_receipts/\d+/change-state\.json", regex=True, kind="no_atcud", atcud=atcud)
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    [document] = db.session.scalars(sa.select(Document)).all()
    [ix] = sandbox.documents()
    assert ix["document"]["atcud"] == atcud and ix["status"] == "settled"
    # Issued and e-mailed all the same: the invoice is valid, the series needs registering.
    assert document.state == DocumentState.DONE
    assert ix["emails"]
    assert document.atcud in ("N/D", "", None)
    timeline = events(document)
    assert ("warning", WARNING) in timeline
    # Right after the step that finalized it, where the operator reads the document's story.
    [finalized] = [n for n, (_, message) in enumerate(timeline) if message.startswith("finalized: Finalized")]
    assert timeline[finalized + 1] == ("warning", WARNING)

    page = client.get(f"/admin/documents/{document.id}", headers=AUTH).get_data(as_text=True)
    assert WARNING in page
    assert f"<dt>ATCUD</dt><dd>{atcud or '—'}</dd>" in page


def test_a_document_with_an_atcud_has_no_such_warning(sandbox, post_order, queue):
    post_order(fixture_body("paid_b2c_tax_included.json"))
    drain(queue)

    [document] = db.session.scalars(sa.select(Document)).all()
    assert document.atcud == sandbox.documents()[0]["document"]["atcud"] != ""
    assert all(kind != "warning" for kind, _ in events(document))
