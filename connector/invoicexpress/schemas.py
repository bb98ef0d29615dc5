"""marshmallow schemas for the request bodies we send to InvoiceXpress, written from IX's API description."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from marshmallow import Schema, fields, validate


@dataclass(frozen=True)
class Client:
    name: str
    code: str
    email: str | None = None
    address: str | None = None
    city: str | None = None
    postal_code: str | None = None
    country: str | None = None
    fiscal_id: str | None = None


@dataclass(frozen=True)
class Item:
    name: str
    description: str
    unit_price: Decimal  # net of VAT: IX always adds the tax on top
    quantity: Decimal
    tax_name: str
    discount: Decimal = Decimal(0)  # percent
    unit: str = "unit"


@dataclass(frozen=True)
class Document:
    date: date
    due_date: date
    reference: str
    client: Client
    items: tuple[Item, ...]
    observations: str | None = None
    tax_exemption: str | None = None
    currency_code: str | None = None
    rate: str | None = None
    owner_invoice_id: int | None = None
    sequence_id: str | None = None


class ClientSchema(Schema):
    name = fields.String(required=True, validate=validate.Length(min=1))
    code = fields.String(required=True, validate=validate.Length(min=1))
    email = fields.String()
    address = fields.String()
    city = fields.String()
    postal_code = fields.String()
    country = fields.String()
    fiscal_id = fields.String()


class TaxSchema(Schema):
    name = fields.String(required=True)


class ItemSchema(Schema):
    name = fields.String(required=True)
    description = fields.String(required=True)
    unit_price = fields.Decimal(required=True, as_string=False)
    quantity = fields.Decimal(required=True, as_string=False)
    unit = fields.String()
    discount = fields.Decimal(as_string=False)
    tax = fields.Method("dump_tax")

    def dump_tax(self, item: Item) -> dict:
        return {"name": item.tax_name}


class DocumentSchema(Schema):
    date = fields.Date(format="%d/%m/%Y", required=True)
    due_date = fields.Date(format="%d/%m/%Y", required=True)
    reference = fields.String()
    observations = fields.String()
    tax_exemption = fields.String()
    # IX's description has both names for the code; integrations in production use each.
    tax_exemption_reason = fields.Function(lambda document: document.tax_exemption)
    sequence_id = fields.String()
    currency_code = fields.String()
    rate = fields.String()
    owner_invoice_id = fields.Integer()
    client = fields.Nested(ClientSchema, required=True)
    items = fields.List(fields.Nested(ItemSchema), required=True)


document_schema = DocumentSchema()


def _without_empty(value):
    """IX reads an empty string as a value ("" is not a country); leave out what we do not know."""
    if isinstance(value, dict):
        return {k: _without_empty(v) for k, v in value.items() if v is not None and v != ""}
    if isinstance(value, list):
        return [_without_empty(v) for v in value]
    return value


def create_request(document: Document, proprietary_uid: str) -> dict:
    """The body of POST /{type}.json: the document, and our idempotency key beside it (not inside)."""
    body = _without_empty(document_schema.dump(document))
    for item in body["items"]:
        if not item.get("discount"):
            item.pop("discount", None)
    return {"invoice": body, "proprietary_uid": proprietary_uid}


def change_state_request(state: str, message: str | None = None) -> dict:
    """The body of PUT /{type}/{id}/change-state.json."""
    invoice = {"state": state}
    if message:
        invoice["message"] = message
    return {"invoice": invoice}


def email_request(email: str, subject: str, body: str) -> dict:
    """The body of PUT /{type}/{id}/email-document.json; save "0" keeps the IX client's own address."""
    return {"message": {"client": {"email": email, "save": "0"}, "subject": subject, "body": body}}
