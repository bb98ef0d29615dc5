"""The IX sandbox behaves like InvoiceXpress as documented, refusals and faults included."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from flask.cli import ScriptInfo

from connector.invoicexpress.totals import document_total
from devtools import invoicexpress_sandbox as sandbox

KEY = "secret-key"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app():
    return sandbox.create_app(KEY)


@pytest.fixture
def client(app):
    return app.test_client()


def _url(path: str, **params: Any) -> str:
    query = "&".join([f"api_key={KEY}", *(f"{k}={v}" for k, v in params.items())])
    return f"{path}?{query}"


def _body(**fields: Any) -> dict[str, Any]:
    """A valid CreateBody for a Portuguese consumer; keyword arguments replace its fields."""
    body = {
        "date": "10/03/2026",
        "due_date": "10/03/2026",
        "reference": "#1001",
        "client": {
            "name": "Ana Silva",
            "code": "shop-1",
            "email": "ana@example.pt",
            "country": "Portugal",
            "postal_code": "1000-100",
        },
        "items": [
            {
                "name": "SKU-1",
                "description": "Caneca",
                "unit_price": "8.1220",
                "quantity": "3",
                "unit": "unit",
                "tax": {"name": "IVA23"},
            }
        ],
    }
    body.update(fields)
    return body


def _item(**fields: Any) -> dict[str, Any]:
    item = {"name": "SKU-1", "description": "Caneca", "unit_price": "10", "quantity": "1"}
    item.update(fields)
    return item


def _create(client, /, doc_type: str = "invoice_receipts", uid: str | None = None, **fields: Any):
    payload: dict[str, Any] = {"invoice": _body(**fields)}
    if uid is not None:
        payload["proprietary_uid"] = uid
    return client.post(_url(f"/{doc_type}.json"), json=payload)


def _new(client, /, doc_type: str = "invoice_receipts", **fields: Any) -> int:
    response = _create(client, doc_type, **fields)
    assert response.status_code == 201, response.json
    return response.json[doc_type[:-1]]["id"]


def _change(client, doc_type: str, doc_id: int, state: str, message: str | None = None):
    invoice = {"state": state} if message is None else {"state": state, "message": message}
    return client.put(_url(f"/{doc_type}/{doc_id}/change-state.json"), json={"invoice": invoice})


def _final(client, /, doc_type: str = "invoice_receipts", **fields: Any) -> int:
    doc_id = _new(client, doc_type, **fields)
    response = _change(client, doc_type, doc_id, "finalized")
    assert response.status_code == 200, response.json
    return doc_id


def _email(client, doc_type: str, doc_id: int, message: dict[str, Any]):
    return client.put(_url(f"/{doc_type}/{doc_id}/email-document.json"), json={"message": message})


def _documents(client) -> list[dict[str, Any]]:
    return client.get("/_sandbox/documents").json


def _error(response) -> str:
    return response.json["errors"]["error"]


def _errors(response) -> list[str]:
    return [e["error"] for e in response.json["errors"]]


# --- happy path -----------------------------------------------------------------------------------


def test_invoice_receipt_is_created_finalized_as_settled_and_emailed(client):
    created = _create(client, uid="shop:1001:FR:v1")
    assert created.status_code == 201
    draft = created.json["invoice_receipt"]
    assert draft["status"] == "draft"
    assert draft["type"] == "InvoiceReceipt"
    assert draft["sequence_number"] == "rascunho"

    finalized = _change(client, "invoice_receipts", draft["id"], "finalized")
    assert finalized.status_code == 200
    doc = finalized.json["invoice_receipt"]
    assert doc["status"] == "settled"
    assert doc["sequence_number"] == "1/SBX"
    assert doc["inverted_sequence_number"] == "SBX/1"
    assert doc["atcud"] == "SBXCODE1-1"
    assert len(doc["saft_hash"]) == 4
    assert doc["permalink"] == f"http://localhost/_sandbox/documents/{doc['id']}"
    page = client.get(f"/_sandbox/documents/{doc['id']}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "SBX/1" in page.text and "Ana Silva" in page.text

    emailed = _email(
        client,
        "invoice_receipts",
        doc["id"],
        {"client": {"email": "ana@example.pt", "save": "0"}, "subject": "A sua fatura-recibo"},
    )
    assert emailed.status_code == 200
    assert emailed.data == b""

    assert client.get(_url(f"/invoice_receipts/{doc['id']}.json")).json["invoice_receipt"] == doc
    [seen] = _documents(client)
    assert seen["status"] == "settled"
    assert seen["proprietary_uid"] == "shop:1001:FR:v1"
    assert seen["reference"] == "#1001"
    assert seen["totals"]["total"] == 29.97
    assert [(e["to"], e["subject"]) for e in seen["emails"]] == [("ana@example.pt", "A sua fatura-recibo")]
    assert [(h["action"], h["from"], h["to"]) for h in seen["history"]] == [
        ("created", None, "draft"),
        ("finalized", "draft", "settled"),
    ]


def test_numbers_are_per_type_and_consecutive(client):
    first = _final(client)
    second = _final(client)
    invoice = _final(client, "invoices")
    assert (
        client.get(_url(f"/invoice_receipts/{first}.json")).json["invoice_receipt"]["sequence_number"]
        == "1/SBX"
    )
    assert (
        client.get(_url(f"/invoice_receipts/{second}.json")).json["invoice_receipt"]["atcud"] == "SBXCODE1-2"
    )
    doc = client.get(_url(f"/invoices/{invoice}.json")).json["invoice"]
    assert (doc["status"], doc["sequence_number"]) == ("final", "1/SBX")
    assert len({first, second, invoice}) == 3
    [sequence] = client.get(_url("/sequences.json")).json["sequences"]
    assert sequence["current_invoice_receipt_number"] == 2
    assert sequence["current_invoice_number"] == 1
    assert sequence["current_credit_note_number"] == 0


# --- auth, content type, routing ------------------------------------------------------------------


def test_missing_or_wrong_api_key_is_refused(client):
    for url in ("/taxes.json", "/taxes.json?api_key=wrong", "/taxes.json?api_key="):
        response = client.get(url)
        assert response.status_code == 401
        assert response.json == {"errors": {"error": "Invalid API key"}}
    assert client.post("/invoice_receipts.json?api_key=nope", json={"invoice": _body()}).status_code == 401
    assert _documents(client) == []
    assert client.get(_url("/taxes.json")).status_code == 200


def test_without_a_configured_key_any_non_empty_key_is_accepted():
    client = sandbox.create_app().test_client()
    assert client.get("/taxes.json?api_key=whatever").status_code == 200
    assert client.get("/taxes.json?api_key=").status_code == 401
    assert client.get("/taxes.json").status_code == 401


def test_post_and_put_need_a_json_content_type(client):
    response = client.post(_url("/invoice_receipts.json"), data='{"invoice": {}}', content_type="text/plain")
    assert response.status_code == 422
    assert _error(response) == "No content type or wrongly specified"
    doc_id = _new(client)
    response = client.put(
        _url(f"/invoice_receipts/{doc_id}/change-state.json"),
        data='{"invoice": {"state": "finalized"}}',
    )
    assert response.status_code == 422
    assert client.get(_url(f"/invoice_receipts/{doc_id}.json")).json["invoice_receipt"]["status"] == "draft"


def test_unknown_document_types_are_404(client):
    assert client.post(_url("/receipts.json"), json={"invoice": _body()}).status_code == 404
    assert client.post(_url("/vat_moss_invoices.json"), json={"invoice": _body()}).status_code == 404
    doc_id = _new(client)
    assert client.get(_url(f"/quotes/{doc_id}.json")).status_code == 404
    assert _documents(client)[0]["id"] == doc_id and len(_documents(client)) == 1


def test_get_unknown_id_or_wrong_type_is_document_not_found(client):
    doc_id = _new(client)
    for url in (f"/invoice_receipts/{doc_id + 100}.json", f"/invoices/{doc_id}.json"):
        response = client.get(_url(url))
        assert response.status_code == 404
        assert response.json == {"errors": {"error": "Document not found"}}


# --- create validation ----------------------------------------------------------------------------


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


_CLIENT = _body()["client"]

REFUSALS = [
    ("no date", lambda b: _without(b, "date"), "Date can't be blank"),
    ("ISO date", lambda b: {**b, "date": "2026-03-10"}, "Date is invalid (dd/mm/yyyy)"),
    ("impossible date", lambda b: {**b, "date": "31/02/2026"}, "Date is invalid (dd/mm/yyyy)"),
    ("no due date", lambda b: _without(b, "due_date"), "Due date can't be blank"),
    ("due before date", lambda b: {**b, "due_date": "09/03/2026"}, "Due date must be later than date"),
    ("no client", lambda b: _without(b, "client"), "Elemento client não fornecido"),
    ("client without code", lambda b: {**b, "client": _without(_CLIENT, "code")}, "Client is invalid"),
    ("client without name", lambda b: {**b, "client": _without(_CLIENT, "name")}, "Client is invalid"),
    ("no items", lambda b: _without(b, "items"), "Items element should be of type array"),
    ("items object", lambda b: {**b, "items": {"0": _item()}}, "Items element should be of type array"),
    ("empty items", lambda b: {**b, "items": []}, "Invoice items is invalid"),
    ("item without name", lambda b: {**b, "items": [_without(_item(), "name")]}, "Invoice items is invalid"),
    (
        "item without description",
        lambda b: {**b, "items": [_without(_item(), "description")]},
        "Invoice items is invalid",
    ),
    ("comma price", lambda b: {**b, "items": [_item(unit_price="8,12")]}, "Unit price must be a number"),
    ("no price", lambda b: {**b, "items": [_without(_item(), "unit_price")]}, "Unit price must be a number"),
    (
        "zero quantity",
        lambda b: {**b, "items": [_item(quantity=0)]},
        "Quantity must be a number greater than 0",
    ),
    (
        "negative quantity",
        lambda b: {**b, "items": [_item(quantity="-1")]},
        "Quantity must be a number greater than 0",
    ),
    (
        "text quantity",
        lambda b: {**b, "items": [_item(quantity="two")]},
        "Quantity must be a number greater than 0",
    ),
    ("text discount", lambda b: {**b, "items": [_item(discount="ten")]}, "Discount is not a number"),
    ("discount over 100", lambda b: {**b, "items": [_item(discount=150)]}, "Discount is not a number"),
    ("negative discount", lambda b: {**b, "items": [_item(discount=-5)]}, "Discount is not a number"),
    (
        "unit kg",
        lambda b: {**b, "items": [_item(unit="kg")]},
        "Unit kg is not included in the list of accepted units",
    ),
    (
        "misspelt country",
        lambda b: {**b, "client": {**_CLIENT, "country": "Germani"}},
        "Country Germani was not found",
    ),
    (
        "ISO country code",
        lambda b: {**b, "client": {**_CLIENT, "country": "PT"}},
        "Country PT was not found",
    ),
    (
        "country not a string",
        lambda b: {**b, "client": {**_CLIENT, "country": ["Portugal"]}},
        "Country ['Portugal'] was not found",
    ),
    (
        "unit not a string",
        lambda b: {**b, "items": [_item(unit=["kg"])]},
        "Unit ['kg'] is not included in the list of accepted units",
    ),
    (
        "bad Portuguese postal code",
        lambda b: {**b, "client": {**_CLIENT, "postal_code": "1000100"}},
        "Postal Code must have the following format DDDD-DDD",
    ),
    (
        "bad client email",
        lambda b: {**b, "client": {**_CLIENT, "email": "ana-at-example.pt"}},
        "Email must be an email address",
    ),
    (
        "proprietary_uid inside invoice",
        lambda b: {**b, "proprietary_uid": "shop:1:FR"},
        "unknown attribute 'proprietary_uid' for Invoice.",
    ),
    ("retention 100", lambda b: {**b, "retention": "100"}, "Retention must be a number between 0 and 99.99"),
    (
        "MB reference",
        lambda b: {**b, "mb_reference": "1"},
        "Option to generate MB reference is set but no payment provider is configurated",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_create_refuses_what_ix_refuses(client, case, change, message):
    response = client.post(_url("/invoice_receipts.json"), json={"invoice": change(_body())})
    assert response.status_code == 422
    assert message in _errors(response)
    assert _documents(client) == []


def test_every_problem_is_reported_at_once(client):
    response = _create(client, date="2026-03-10", items=[_item(unit="kg", quantity=0)])
    assert response.status_code == 422
    assert set(_errors(response)) == {
        "Date is invalid (dd/mm/yyyy)",
        "Unit kg is not included in the list of accepted units",
        "Quantity must be a number greater than 0",
    }


def test_create_without_invoice_root_is_refused(client):
    response = client.post(_url("/invoice_receipts.json"), json={"proprietary_uid": "x"})
    assert response.status_code == 422
    assert _errors(response) == ["Elemento invoice não fornecido"]


def test_create_accepts_what_ix_accepts(client):
    response = _create(
        client,
        client={"name": "Hans", "code": "h1", "country": "Germany", "postal_code": "10115"},
        items=[
            _item(unit_price=12.5, quantity=2, unit="service", discount="10"),
            _item(name="SHIP", unit_price="4.0650", quantity="1.000", unit="other", tax={"name": "IVA23"}),
        ],
        due_date="10/04/2026",
    )
    assert response.status_code == 201, response.json
    doc = response.json["invoice_receipt"]
    assert [i["unit"] for i in doc["items"]] == ["service", "other"]
    assert doc["items"][0]["quantity"] == "2.0"
    assert doc["items"][1]["unit_price"] == "4.0650"
    assert doc["client"]["country"] == "Germany"
    assert "fiscal_id" not in doc["client"]


# --- proprietary_uid ------------------------------------------------------------------------------


def test_same_proprietary_uid_returns_the_existing_document(client):
    first = _create(client, uid="shop:1001:FR:v1")
    again = _create(client, uid="shop:1001:FR:v1", reference="something else")
    other_type = _create(client, "invoices", uid="shop:1001:FR:v1")
    assert first.status_code == again.status_code == other_type.status_code == 201
    doc_id = first.json["invoice_receipt"]["id"]
    assert again.json["invoice_receipt"]["id"] == doc_id
    assert again.json["invoice_receipt"]["reference"] == "#1001"
    assert other_type.json == {"invoice_receipt": first.json["invoice_receipt"]}
    assert _create(client, uid="shop:1002:FR:v1").json["invoice_receipt"]["id"] != doc_id
    assert len(_documents(client)) == 2


def test_a_refused_create_does_not_use_up_its_proprietary_uid(client):
    assert _create(client, uid="shop:1:FR", items=[]).status_code == 422
    response = _create(client, uid="shop:1:FR")
    assert response.status_code == 201
    assert [d["proprietary_uid"] for d in _documents(client)] == ["shop:1:FR"]


def test_concurrent_creates_with_one_uid_make_one_document(app):
    barrier = threading.Barrier(8)
    results: list[tuple[int, Any]] = []

    def post() -> None:
        client = app.test_client()
        barrier.wait()
        response = _create(client, uid="shop:race:FR")
        results.append((response.status_code, response.json))

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 8
    assert {status for status, _ in results} <= {201, 409}
    ids = {body["invoice_receipt"]["id"] for status, body in results if status == 201}
    assert len(ids) == 1
    assert len(_documents(app.test_client())) == 1


def test_a_create_in_flight_answers_409_to_the_same_uid(app, client):
    client.post(
        "/_sandbox/faults",
        json=[{"method": "POST", "path": "/invoice_receipts.json", "kind": "hang", "seconds": 1}],
    )
    first: dict[str, Any] = {}
    slow = threading.Thread(target=lambda: first.update(response=_create(app.test_client(), uid="shop:9:FR")))
    slow.start()
    deadline = time.monotonic() + 5
    while client.get("/_sandbox/calls").json.get("POST /invoice_receipts.json") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    conflict = _create(client, uid="shop:9:FR")
    slow.join()
    assert conflict.status_code == 409
    assert conflict.json == {"reason": "There's an ongoing document creation with the provided UID shop:9:FR"}
    assert first["response"].status_code == 201
    doc_id = first["response"].json["invoice_receipt"]["id"]
    assert _create(client, uid="shop:9:FR").json["invoice_receipt"]["id"] == doc_id
    assert len(_documents(client)) == 1


# --- state changes --------------------------------------------------------------------------------


ILLEGAL = [
    ("invoices", [], "canceled"),
    ("invoices", [], "settled"),
    ("invoices", [], "unsettled"),
    ("invoices", [], "accepted"),
    ("invoices", [], "paid"),
    ("invoices", ["finalized"], "finalized"),
    ("invoices", ["finalized"], "deleted"),
    ("invoices", ["finalized"], "unsettled"),
    ("invoices", ["finalized", "settled"], "canceled"),
    ("invoices", ["deleted"], "finalized"),
    ("invoice_receipts", ["finalized"], "settled"),
    ("invoice_receipts", ["finalized"], "unsettled"),
    ("invoice_receipts", ["finalized"], "deleted"),
    ("invoice_receipts", ["finalized", "canceled"], "finalized"),
]


@pytest.mark.parametrize(("doc_type", "before", "state"), ILLEGAL)
def test_transitions_outside_the_table_are_invalid(client, doc_type, before, state):
    doc_id = _new(client, doc_type)
    for step in before:
        assert _change(client, doc_type, doc_id, step, "reason").status_code == 200
    status = client.get(_url(f"/{doc_type}/{doc_id}.json")).json[doc_type[:-1]]["status"]
    response = _change(client, doc_type, doc_id, state, "reason")
    assert response.status_code == 422
    assert response.json == {"errors": {"error": "Invalid state"}}
    assert client.get(_url(f"/{doc_type}/{doc_id}.json")).json[doc_type[:-1]]["status"] == status


def test_transitions_in_the_table_are_allowed(client):
    invoice = _final(client, "invoices")
    assert _change(client, "invoices", invoice, "settled").json["invoice"]["status"] == "settled"
    draft = _new(client, "invoices")
    assert _change(client, "invoices", draft, "deleted").json["invoice"]["status"] == "deleted"
    receipt = _final(client)
    canceled = _change(client, "invoice_receipts", receipt, "canceled", "Wrong customer")
    assert canceled.json["invoice_receipt"]["status"] == "canceled"
    note = _final(client, "credit_notes", owner_invoice_id=_final(client))
    assert _change(client, "credit_notes", note, "settled").json["credit_note"]["status"] == "settled"
    assert _change(client, "credit_notes", note, "unsettled").json["credit_note"]["status"] == "final"
    history = next(d for d in _documents(client) if d["id"] == receipt)["history"]
    assert history[-1] == {**history[-1], "action": "canceled", "to": "canceled", "message": "Wrong customer"}


def test_change_state_accepts_the_type_specific_root(client):
    doc_id = _new(client)
    response = client.put(
        _url(f"/invoice_receipts/{doc_id}/change-state.json"),
        json={"invoice_receipt": {"state": "finalized"}},
    )
    assert response.json["invoice_receipt"]["status"] == "settled"


def test_cancel_needs_a_message(client):
    doc_id = _final(client, "invoices")
    for message in (None, "  "):
        response = _change(client, "invoices", doc_id, "canceled", message)
        assert response.status_code == 422
        assert _error(response) == "Cancel message can't be blank"
    assert (
        _change(client, "invoices", doc_id, "canceled", "Duplicated").json["invoice"]["status"] == "canceled"
    )


def test_finalizing_before_the_series_last_date_is_refused(client):
    _final(client, date="10/03/2026", due_date="10/03/2026")
    late = _new(client, date="09/03/2026", due_date="09/03/2026")
    response = _change(client, "invoice_receipts", late, "finalized")
    assert response.status_code == 422
    assert _error(response).startswith(
        "Date cannot be earlier than the last invoice-receipt of this sequence"
    )
    doc = client.get(_url(f"/invoice_receipts/{late}.json")).json["invoice_receipt"]
    assert (doc["status"], doc["sequence_number"]) == ("draft", "rascunho")
    # Another type has its own chronology.
    _final(client, "invoices", date="01/03/2026", due_date="01/03/2026")
    # The fix: move the draft's date (resending the whole body), then finalize: no number was used up.
    moved = client.put(_url(f"/invoice_receipts/{late}.json"), json={"invoice": _body(date="10/03/2026")})
    assert moved.status_code == 200
    assert (
        _change(client, "invoice_receipts", late, "finalized").json["invoice_receipt"]["sequence_number"]
        == "2/SBX"
    )


# --- update ---------------------------------------------------------------------------------------


def test_update_replaces_the_whole_draft(client):
    doc_id = _new(client, tax_exemption="M16", items=[_item(tax={"name": "IVA0"})])
    assert (
        client.get(_url(f"/invoice_receipts/{doc_id}.json")).json["invoice_receipt"]["tax_exemption"] == "M16"
    )
    body = _without(_body(items=[_item(unit_price="20", tax={"name": "IVA0"})]), "reference")
    response = client.put(_url(f"/invoice_receipts/{doc_id}.json"), json={"invoice": body})
    assert response.status_code == 200
    doc = response.json["invoice_receipt"]
    # What the PUT did not resend is gone: the reference, and the exemption code (IX stamps M99).
    assert doc["reference"] == ""
    assert doc["tax_exemption"] == "M99"
    assert (doc["total"], doc["items"][0]["unit_price"]) == (20.0, "20")
    assert doc["id"] == doc_id and doc["status"] == "draft"
    assert [h["action"] for h in _documents(client)[0]["history"]] == ["created", "updated"]


def test_update_validates_like_create(client):
    doc_id = _new(client)
    response = client.put(
        _url(f"/invoice_receipts/{doc_id}.json"), json={"invoice": _body(items=[_item(unit="kg")])}
    )
    assert response.status_code == 422
    assert _errors(response) == ["Unit kg is not included in the list of accepted units"]


def test_only_drafts_can_be_updated(client):
    receipt = _final(client)
    response = client.put(_url(f"/invoice_receipts/{receipt}.json"), json={"invoice": _body(reference="x")})
    assert response.status_code == 422
    assert _error(response) == "Invoice has been settled so can't be changed anymore"
    invoice = _final(client, "invoices")
    response = client.put(_url(f"/invoices/{invoice}.json"), json={"invoice": _body(reference="x")})
    assert _error(response) == "Invoice has been finalized so can't be changed anymore"
    assert client.get(_url(f"/invoices/{invoice}.json")).json["invoice"]["reference"] == "#1001"


# --- credit notes, taxes, totals ------------------------------------------------------------------


def test_credit_note_needs_a_finalized_owner(client):
    response = _create(client, "credit_notes")
    assert response.status_code == 422
    assert _errors(response) == ["Owner invoice can't be blank"]
    draft = _new(client)
    assert _errors(_create(client, "credit_notes", owner_invoice_id=draft)) == [
        f"Owner invoice {draft} must be finalized"
    ]
    assert _errors(_create(client, "credit_notes", owner_invoice_id=99999)) == [
        "Owner invoice 99999 was not found"
    ]
    assert _errors(_create(client, "debit_notes", owner_invoice_id="abc")) == [
        "Owner invoice abc was not found"
    ]
    owner = _final(client)
    note = _final(client, "credit_notes", owner_invoice_id=owner)
    assert _errors(_create(client, "credit_notes", owner_invoice_id=note)) == [
        f"Owner invoice {note} was not found"
    ]
    canceled = _final(client, "invoices")
    _change(client, "invoices", canceled, "canceled", "wrong")
    assert _errors(_create(client, "credit_notes", owner_invoice_id=canceled)) == [
        f"Owner invoice {canceled} must be finalized"
    ]
    response = _create(client, "credit_notes", owner_invoice_id=str(owner))
    assert response.status_code == 201
    assert response.json["credit_note"]["owner_invoice_id"] == owner
    assert response.json["credit_note"]["type"] == "CreditNote"


def test_unknown_tax_name_silently_gets_the_default_tax(client):
    response = _create(
        client, items=[_item(unit_price="100", tax={"name": "IVA99"}), _item(unit_price="100")]
    )
    assert response.status_code == 201
    doc = response.json["invoice_receipt"]
    assert [i["tax"]["name"] for i in doc["items"]] == ["IVA23", "IVA23"]
    assert [i["tax"]["value"] for i in doc["items"]] == [23.0, 23.0]
    assert doc["total"] == 246.0
    notes = _documents(client)[0]["notes"]
    assert any("IVA99" in note and "IVA23" in note for note in notes)
    assert any("no tax given" in note for note in notes)
    odd = _create(client, items=[_item(tax={"name": ["IVA6"]})]).json["invoice_receipt"]
    assert odd["items"][0]["tax"]["name"] == "IVA23"


def test_exempt_lines_without_a_reason_get_m99(client):
    zero = [_item(tax={"name": "IVA0"})]
    assert _create(client, items=zero).json["invoice_receipt"]["tax_exemption"] == "M99"
    assert _create(client, items=zero, tax_exemption="M05").json["invoice_receipt"]["tax_exemption"] == "M05"
    assert (
        _create(client, items=zero, tax_exemption_reason="M16").json["invoice_receipt"]["tax_exemption"]
        == "M16"
    )
    assert _create(client).json["invoice_receipt"]["tax_exemption"] == ""


def test_totals_of_a_tax_inclusive_price_converted_to_net(client):
    # 9.99 gross at 23 % is 8.1220 net; three of them must come back as 29.97, not 29.98.
    doc = _create(client).json["invoice_receipt"]
    assert doc["total"] == 29.97
    assert (doc["sum"], doc["discount"], doc["before_taxes"], doc["taxes"]) == (24.37, 0.0, 24.37, 5.6)
    [item] = doc["items"]
    assert (item["subtotal"], item["discount_amount"], item["tax_amount"], item["total"]) == (
        24.37,
        0.0,
        5.6,
        29.97,
    )
    assert Decimal(str(doc["total"])) == document_total(_body()["items"], {"IVA23": Decimal(23)})


def test_totals_with_discounts_and_mixed_rates(client):
    items = [
        _item(unit_price="10", quantity="2", discount="10", tax={"name": "IVA6"}),
        _item(name="B", unit_price="3.3333", quantity="3", tax={"name": "IVA23"}),
        _item(name="C", unit_price="5", quantity="1", tax={"name": "IVA0"}),
    ]
    doc = _create(client, items=items, tax_exemption="M99").json["invoice_receipt"]
    assert doc["sum"] == 35.0
    assert doc["discount"] == 2.0
    assert doc["before_taxes"] == 33.0
    assert doc["taxes"] == 3.38
    rates = {"IVA6": Decimal(6), "IVA23": Decimal(23), "IVA0": Decimal(0)}
    assert Decimal(str(doc["total"])) == document_total(items, rates) == Decimal("36.38")
    assert [i["discount_amount"] for i in doc["items"]] == [2.0, 0.0, 0.0]


# --- reads ----------------------------------------------------------------------------------------


def test_list_filters_by_type_status_and_reference_with_pagination(client):
    receipts = [_final(client, reference=f"#{1000 + n}") for n in range(12)]
    draft = _new(client, reference="#2000")
    invoice = _final(client, "invoices", reference="#1005")
    deleted = _new(client, "invoices", reference="#3000")
    _change(client, "invoices", deleted, "deleted")

    def ids(**params: Any) -> list[int]:
        return [d["id"] for d in client.get(_url("/invoices.json", **params)).json["invoices"]]

    everything = client.get(_url("/invoices.json", per_page=30)).json
    assert everything["pagination"] == {
        "total_entries": 14,
        "per_page": 30,
        "current_page": 1,
        "total_pages": 1,
    }
    assert deleted not in [d["id"] for d in everything["invoices"]]
    assert ids(**{"type[]": "InvoiceReceipt", "per_page": 30}) == sorted([*receipts, draft], reverse=True)
    assert ids(**{"status[]": "sent"}) == [invoice]
    assert ids(**{"status[]": "draft"}) == [draft]
    assert ids(**{"status[]": "deleted"}) == [deleted]
    assert sorted(ids(**{"reference": "%231005"})) == sorted([receipts[5], invoice])
    assert ids(**{"reference": "%231005", "type[]": "InvoiceReceipt", "status[]": "settled"}) == [receipts[5]]

    page = client.get(
        _url(
            "/invoices.json", **{"type[]": "InvoiceReceipt", "status[]": "settled", "per_page": 5, "page": 3}
        )
    )
    assert page.json["pagination"] == {
        "total_entries": 12,
        "per_page": 5,
        "current_page": 3,
        "total_pages": 3,
    }
    assert [d["id"] for d in page.json["invoices"]] == receipts[1::-1]
    default = client.get(_url("/invoices.json")).json
    assert len(default["invoices"]) == 10 and default["pagination"]["per_page"] == 10
    assert client.get(_url("/invoices.json", per_page=100)).json["pagination"]["per_page"] == 30
    assert ids(**{"type[]": "CreditNote"}) == []


def test_taxes_are_the_portuguese_account_taxes(client):
    taxes = {t["name"]: t for t in client.get(_url("/taxes.json")).json["taxes"]}
    assert set(taxes) == {"IVA23", "IVA13", "IVA6", "IVA0", "IVA22", "IVA12", "IVA5", "IVA16", "IVA9", "IVA4"}
    assert taxes["IVA23"] == {
        **taxes["IVA23"],
        "value": "23.0",
        "region": "PT",
        "code": "NOR",
        "default_tax": 1,
    }
    assert [t["name"] for t in taxes.values() if t["default_tax"]] == ["IVA23"]
    assert taxes["IVA0"]["code"] == "ISE"
    assert {taxes[n]["region"] for n in ("IVA22", "IVA12", "IVA5")} == {"PT-MA"}
    assert {taxes[n]["region"] for n in ("IVA16", "IVA9", "IVA4")} == {"PT-AC"}


def test_sequences_and_sequence_ids(client):
    [sequence] = client.get(_url("/sequences.json")).json["sequences"]
    assert (sequence["serie"], sequence["default_sequence"]) == ("SBX", 1)
    assert sequence["current_invoice_receipt_validation_code"] == "SBXCODE1"
    for sequence_id in (sequence["id"], sequence["current_invoice_receipt_sequence_id"]):
        assert _create(client, sequence_id=str(sequence_id)).status_code == 201
    assert _errors(_create(client, sequence_id="123")) == ["Sequence 123 was not found"]


# --- e-mail ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({}, "Email is a required field"),
        ({"client": {"save": "0"}}, "Email is a required field"),
        ({"client": {"email": "not-an-email", "save": "0"}}, "Email: is an invalid email"),
        ({"client": {"email": "a@b.pt", "save": "0"}, "cc": "c@d.pt, nope"}, "Cc: is an invalid email"),
        ({"client": {"email": "a@b.pt", "save": "0"}, "bcc": "nope"}, "Bcc: is an invalid email"),
        ({"client": {"email": "a@b.pt"}}, "Save is a required field"),
    ],
)
def test_email_refusals(client, message, error):
    doc_id = _final(client)
    response = _email(client, "invoice_receipts", doc_id, message)
    assert response.status_code == 422
    assert response.json == {"errors": {"error": error}}
    assert _documents(client)[0]["emails"] == []


def test_drafts_are_not_emailed(client):
    doc_id = _new(client)
    response = _email(client, "invoice_receipts", doc_id, {"client": {"email": "a@b.pt", "save": "0"}})
    assert response.status_code == 422
    assert _documents(client)[0]["emails"] == []


# --- faults ---------------------------------------------------------------------------------------


def _faults(client, *rules: dict[str, Any]) -> None:
    assert client.post("/_sandbox/faults", json=list(rules)).status_code == 201


def test_status_fault_answers_without_acting(client):
    _faults(
        client,
        {"method": "POST", "path": "/invoice_receipts.json", "kind": "status", "status": 503, "times": 2},
    )
    for _ in range(2):
        response = _create(client, uid="shop:1:FR")
        assert response.status_code == 503
        assert response.json == {"errors": {"error": "Service Unavailable"}}
    assert _documents(client) == []
    assert client.get("/_sandbox/faults").json == []
    assert _create(client, uid="shop:1:FR").status_code == 201


def test_429_fault_carries_retry_after(client):
    _faults(client, {"path": "/taxes.json", "kind": "status", "status": 429, "retry_after": 7})
    response = client.get(_url("/taxes.json"))
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert client.get(_url("/taxes.json")).status_code == 200


def test_after_fault_acts_then_reports_failure(client):
    _faults(client, {"method": "POST", "path": "/invoice_receipts.json", "kind": "after"})
    lost = _create(client, uid="shop:7:FR")
    assert lost.status_code == 500
    assert lost.json == {"errors": {"error": "Internal Server Error"}}
    [doc] = _documents(client)
    # The retry with the same UID finds the document the "failed" call made.
    retry = _create(client, uid="shop:7:FR")
    assert retry.status_code == 201 and retry.json["invoice_receipt"]["id"] == doc["id"]

    _faults(
        client,
        {
            "method": "PUT",
            "path": r"/invoice_receipts/\d+/change-state\.json",
            "regex": True,
            "kind": "after",
            "status": 502,
        },
    )
    assert _change(client, "invoice_receipts", doc["id"], "finalized").status_code == 502
    assert (
        client.get(_url(f"/invoice_receipts/{doc['id']}.json")).json["invoice_receipt"]["status"] == "settled"
    )


def test_delay_and_hang_faults_slow_the_answer_but_act(client):
    _faults(
        client,
        {"method": "POST", "path": "/invoice_receipts.json", "kind": "delay", "seconds": 0.3},
        {
            "method": "PUT",
            "path": r"/invoice_receipts/\d+/change-state\.json",
            "regex": True,
            "kind": "hang",
            "seconds": 0.3,
        },
    )
    started = time.monotonic()
    doc_id = _new(client)
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert (
        _change(client, "invoice_receipts", doc_id, "finalized").json["invoice_receipt"]["status"]
        == "settled"
    )
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    _new(client)
    assert time.monotonic() - started < 0.3


def test_fault_rules_match_method_and_path_and_can_be_cleared(client):
    _faults(
        client,
        {"method": "PUT", "path": "/taxes.json", "kind": "status", "status": 500},
        {"method": "GET", "path": "/taxes.json", "kind": "status", "status": 500, "times": 3},
    )
    assert client.get(_url("/sequences.json")).status_code == 200
    assert client.get(_url("/taxes.json")).status_code == 500
    remaining = client.get("/_sandbox/faults").json
    assert [(f["method"], f["times"]) for f in remaining] == [("PUT", 1), ("GET", 2)]
    assert client.delete("/_sandbox/faults").status_code == 204
    assert client.get("/_sandbox/faults").json == []
    assert client.get(_url("/taxes.json")).status_code == 200


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "status"},
        {"path": "/taxes.json", "kind": "explode"},
        {"path": "(", "regex": True, "kind": "status"},
        {"path": "/taxes.json", "kind": "status", "times": 0},
        {"path": "/taxes.json", "kind": "status", "status": 42},
    ],
)
def test_bad_fault_rules_are_refused(client, rule):
    assert client.post("/_sandbox/faults", json=[rule]).status_code == 400
    assert client.get("/_sandbox/faults").json == []


# --- control endpoints and serving ----------------------------------------------------------------


def test_calls_are_counted_per_endpoint(client):
    first = _final(client)
    _final(client)
    client.get(_url(f"/invoice_receipts/{first}.json"))
    client.get("/taxes.json")  # refused for its missing key, but still a call
    assert client.get("/_sandbox/calls").json == {
        "GET /invoice_receipts/{id}.json": 1,
        "GET /taxes.json": 1,
        "POST /invoice_receipts.json": 2,
        "PUT /invoice_receipts/{id}/change-state.json": 2,
    }


def test_reset_forgets_everything(client):
    old = _final(client, uid="shop:1:FR")
    _faults(client, {"path": "/taxes.json", "kind": "status", "status": 500})
    assert client.post("/_sandbox/reset").status_code == 204
    assert _documents(client) == []
    assert client.get("/_sandbox/faults").json == []
    assert client.get("/_sandbox/calls").json == {}
    assert client.get(_url(f"/invoice_receipts/{old}.json")).status_code == 404
    new = _final(client, uid="shop:1:FR")
    assert new != old
    assert (
        client.get(_url(f"/invoice_receipts/{new}.json")).json["invoice_receipt"]["sequence_number"]
        == "1/SBX"
    )


def test_permalink_page_of_unknown_document_is_404(client):
    assert client.get("/_sandbox/documents/12345").status_code == 404


def test_serve_in_thread_speaks_real_http():
    base_url, server = sandbox.serve_in_thread(api_key=KEY)
    try:
        with requests.Session() as http:
            created = http.post(
                f"{base_url}/invoice_receipts.json",
                params={"api_key": KEY},
                json={"invoice": _body()},
                timeout=5,
            )
            assert created.status_code == 201
            doc_id = created.json()["invoice_receipt"]["id"]
            finalized = http.put(
                f"{base_url}/invoice_receipts/{doc_id}/change-state.json",
                params={"api_key": KEY},
                json={"invoice": {"state": "finalized"}},
                timeout=5,
            )
            assert (
                finalized.json()["invoice_receipt"]["permalink"] == f"{base_url}/_sandbox/documents/{doc_id}"
            )
            assert "SBX/1" in http.get(f"{base_url}/_sandbox/documents/{doc_id}", timeout=5).text
            assert http.get(f"{base_url}/taxes.json", timeout=5).status_code == 401
    finally:
        server.shutdown()
        server.server_close()


def test_module_runs_as_a_server():
    command = [sys.executable, "-m", "devtools.invoicexpress_sandbox", "--port", "0", "--api-key", KEY]
    with subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as process:
        try:
            base_url = process.stdout.readline().split()[-1]
            assert base_url.startswith("http://127.0.0.1:")
            assert (
                requests.get(f"{base_url}/taxes.json", params={"api_key": KEY}, timeout=5).status_code == 200
            )
            assert (
                requests.get(f"{base_url}/taxes.json", params={"api_key": "x"}, timeout=5).status_code == 401
            )
        finally:
            process.terminate()


def test_flask_cli_finds_the_app():
    app = ScriptInfo(app_import_path="devtools.invoicexpress_sandbox").load_app()
    assert app.test_client().get("/taxes.json?api_key=any").status_code == 200


def _strikes(client, rule: dict[str, Any], requests_made: int = 200) -> list[int]:
    """The indexes of the GET /taxes.json calls that a fresh `rule` struck with its fault."""
    client.delete("/_sandbox/faults")
    _faults(client, {"path": "/taxes.json", "kind": "status", "status": 503, **rule})
    return [n for n in range(requests_made) if client.get(_url("/taxes.json")).status_code == 503]


def test_probability_faults_strike_at_random_reproducibly_and_times_counts_strikes(client):
    unlimited = {"probability": 0.25, "seed": 7, "times": None}
    struck = _strikes(client, unlimited)
    assert 25 <= len(struck) <= 75  # 50 expected; the seed makes it one fixed draw
    [rule] = client.get("/_sandbox/faults").json
    assert (rule["matched"], rule["triggered"], rule["times"]) == (200, len(struck), None)
    assert (rule["probability"], rule["seed"]) == (0.25, 7)
    # The same seed strikes the same requests, in this app or a fresh one; another seed does not.
    assert _strikes(client, unlimited) == struck
    assert _strikes(sandbox.create_app(KEY).test_client(), unlimited) == struck
    assert _strikes(client, {**unlimited, "seed": "other"}) != struck

    # `times` counts the faults triggered, not the requests matched; the rule goes after the last one.
    limited = _strikes(client, {"probability": 0.25, "seed": 7, "times": 3})
    assert limited == struck[:3]
    assert client.get("/_sandbox/faults").json == []

    # Without a probability every matching request is struck, as before.
    assert _strikes(client, {"times": 2}, requests_made=5) == [0, 1]


def test_a_probability_rule_that_lets_a_request_pass_hands_it_to_the_next_rule(client):
    _faults(
        client,
        {"path": "/taxes.json", "kind": "status", "status": 503, "probability": 0.5, "seed": 1, "times": None},
        {"path": "/taxes.json", "kind": "status", "status": 429, "times": None},
    )
    statuses = Counter(client.get(_url("/taxes.json")).status_code for _ in range(100))
    assert set(statuses) == {503, 429} and sum(statuses.values()) == 100
    first, second = client.get("/_sandbox/faults").json
    assert (first["matched"], first["triggered"]) == (100, statuses[503])
    assert (second["matched"], second["triggered"]) == (statuses[429], statuses[429])


@pytest.mark.parametrize(
    "extra",
    [
        {"probability": 0},
        {"probability": 1.5},
        {"probability": -0.1},
        {"probability": "often"},
        {"probability": None},
        {"seed": [1, 2]},
        {"seed": 1.5},
        {"times": "many"},
    ],
)
def test_bad_probability_seed_or_times_are_refused(client, extra):
    rule = {"path": "/taxes.json", "kind": "status", **extra}
    assert client.post("/_sandbox/faults", json=[rule]).status_code == 400
    assert client.get("/_sandbox/faults").json == []


# --- finalizing without an ATCUD ------------------------------------------------------------------


@pytest.mark.parametrize("atcud", ["N/D", "N/A", ""])
def test_a_no_atcud_rule_finalizes_its_document_without_one_and_then_goes(client, atcud):
    _faults(client, {"path": r"/invoice_receipts/\d+/change-state\.json", "regex": True, "kind": "no_atcud",
                     "atcud": atcud})
    first = _final(client)
    second = _final(client)
    docs = {d["id"]: d["document"] for d in _documents(client)}
    assert (docs[first]["atcud"], docs[first]["sequence_number"]) == (atcud, "1/SBX")
    assert (docs[second]["atcud"], docs[second]["sequence_number"]) == ("SBXCODE1-2", "2/SBX")
    assert client.get("/_sandbox/faults").json == []


def test_a_no_atcud_rule_defaults_to_n_d_and_spares_other_requests(client):
    _faults(client, {"method": "PUT", "path": r"/invoice_receipts/\d+/change-state\.json", "regex": True,
                     "kind": "no_atcud", "times": None})
    draft = _new(client)
    assert client.get(_url(f"/invoice_receipts/{draft}.json")).status_code == 200
    doc = _change(client, "invoice_receipts", draft, "finalized").json["invoice_receipt"]
    assert doc["atcud"] == "N/D"
    [rule] = client.get("/_sandbox/faults").json
    assert (rule["kind"], rule["atcud"], rule["triggered"]) == ("no_atcud", "N/D", 1)


@pytest.mark.parametrize("atcud", ["SBXCODE1-1", None, 7, ["N/D"]])
def test_a_no_atcud_rule_takes_only_what_ix_says_for_no_atcud(client, atcud):
    rule = {"path": "/x", "kind": "no_atcud", "atcud": atcud}
    assert client.post("/_sandbox/faults", json=[rule]).status_code == 400


# --- a state file kept across restarts --------------------------------------------------------------


def _serve(state: Path):
    """The sandbox as `./dev run` starts it, on `state`; returns the process and its base URL."""
    command = [sys.executable, "-m", "devtools.invoicexpress_sandbox", "--port", "0", "--api-key", KEY,
               "--state", str(state)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return process, process.stdout.readline().split()[-1]


def _issue_over_http(base_url: str, uid: str, day: str = "10/03/2026") -> dict[str, Any]:
    params = {"api_key": KEY}
    created = requests.post(f"{base_url}/invoice_receipts.json", params=params, timeout=5,
                            json={"invoice": _body(date=day, due_date=day), "proprietary_uid": uid})
    assert created.status_code == 201, created.text
    doc_id = created.json()["invoice_receipt"]["id"]
    finalized = requests.put(f"{base_url}/invoice_receipts/{doc_id}/change-state.json", params=params,
                             json={"invoice": {"state": "finalized"}}, timeout=5)
    assert finalized.status_code == 200, finalized.text
    return finalized.json()["invoice_receipt"]


def test_a_sandbox_restarted_on_its_state_file_keeps_its_documents_and_numbering(tmp_path):
    state = tmp_path / "instance" / "ix-sandbox.json"
    state.parent.mkdir()
    process, base_url = _serve(state)
    try:
        first = _issue_over_http(base_url, "shop:1001:FR")
        before = requests.get(f"{base_url}/_sandbox/documents", timeout=5).json()
    finally:
        process.terminate()
        process.wait(timeout=10)

    process, base_url = _serve(state)
    try:
        assert requests.get(f"{base_url}/_sandbox/documents", timeout=5).json() == before
        # Numbering and ids go on: no second document numbered 1.
        second = _issue_over_http(base_url, "shop:1002:FR")
        assert (first["sequence_number"], second["sequence_number"]) == ("1/SBX", "2/SBX")
        assert second["id"] > first["id"]
        # The first document's UID still names it.
        again = requests.post(f"{base_url}/invoice_receipts.json", params={"api_key": KEY}, timeout=5,
                              json={"invoice": _body(), "proprietary_uid": "shop:1001:FR"})
        assert again.json()["invoice_receipt"]["id"] == first["id"]
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert [p.name for p in state.parent.iterdir()] == ["ix-sandbox.json"]  # no temporary file left


def test_what_a_restarted_sandbox_remembers_it_enforces(tmp_path):
    state = tmp_path / "ix-sandbox.json"
    old = sandbox.create_app(KEY, state).test_client()
    owner = _final(old, date="12/03/2026", due_date="12/03/2026")
    _email(old, "invoice_receipts", owner, {"client": {"email": "ana@example.pt", "save": "1"}})

    new = sandbox.create_app(KEY, state).test_client()
    [seen] = _documents(new)
    assert seen["emails"][0]["to"] == "ana@example.pt"
    assert [h["action"] for h in seen["history"]] == ["created", "finalized"]
    # The series' last date, the hash chain's place and the owner of a credit note survive the restart.
    earlier = _new(new, date="11/03/2026", due_date="11/03/2026")
    refused = _change(new, "invoice_receipts", earlier, "finalized")
    assert refused.status_code == 422 and "earlier than the last invoice-receipt" in _error(refused)
    note = _create(new, "credit_notes", owner_invoice_id=owner, date="12/03/2026", due_date="12/03/2026")
    assert note.status_code == 201, note.json


def test_a_reset_is_kept_too_and_ids_still_grow(tmp_path):
    state = tmp_path / "ix-sandbox.json"
    old = sandbox.create_app(KEY, state).test_client()
    first = _final(old)
    assert old.post("/_sandbox/reset").status_code == 204

    new = sandbox.create_app(KEY, state).test_client()
    assert _documents(new) == []
    assert _final(new) > first
    assert _documents(new)[0]["sequence_number"] == "1/SBX"


def test_a_state_file_that_cannot_be_read_stops_the_sandbox_saying_so(tmp_path):
    state = tmp_path / "ix-sandbox.json"
    state.write_text("{not json")
    with pytest.raises(SystemExit, match="move it away"):
        sandbox.create_app(KEY, state)
