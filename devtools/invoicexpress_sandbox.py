"""A local, stateful stand-in for the InvoiceXpress endpoints the connector uses, refusals included."""

# A development tool beside the product, never imported by it: a server, not a client. It follows our
# research notes on the IX API and IX's OpenAPI spec; where IX's behaviour is unknown it takes the
# stricter reading, so that client bugs surface here rather than in production.

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from http import HTTPStatus
from pathlib import Path
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from connector.invoicexpress.client import redact
from connector.invoicexpress.documents import BY_PATH, DocumentType
from devtools import serving

# What a credit or debit note may correct, and in which states (a draft or canceled document
# has nothing left to correct).
_OWNER_TYPES = frozenset(t.path for t in BY_PATH.values() if not t.note)
_OWNER_STATES = frozenset({"final", "settled"})

# The taxes of a Portuguese account as GET /taxes.json returns them (values as strings, as IX does).
TAXES: tuple[dict[str, Any], ...] = (
    {"id": 1, "name": "IVA23", "value": "23.0", "region": "PT", "code": "NOR", "default_tax": 1},
    {"id": 2, "name": "IVA13", "value": "13.0", "region": "PT", "code": "INT", "default_tax": 0},
    {"id": 3, "name": "IVA6", "value": "6.0", "region": "PT", "code": "RED", "default_tax": 0},
    {"id": 4, "name": "IVA0", "value": "0.0", "region": "PT", "code": "ISE", "default_tax": 0},
    {"id": 5, "name": "IVA22", "value": "22.0", "region": "PT-MA", "code": "NOR", "default_tax": 0},
    {"id": 6, "name": "IVA12", "value": "12.0", "region": "PT-MA", "code": "INT", "default_tax": 0},
    {"id": 7, "name": "IVA5", "value": "5.0", "region": "PT-MA", "code": "RED", "default_tax": 0},
    {"id": 8, "name": "IVA16", "value": "16.0", "region": "PT-AC", "code": "NOR", "default_tax": 0},
    {"id": 9, "name": "IVA9", "value": "9.0", "region": "PT-AC", "code": "INT", "default_tax": 0},
    {"id": 10, "name": "IVA4", "value": "4.0", "region": "PT-AC", "code": "RED", "default_tax": 0},
)
_TAX_BY_NAME = {t["name"]: t for t in TAXES}
TAX_RATES = {t["name"]: Decimal(t["value"]) for t in TAXES}
_DEFAULT_TAX = next(t for t in TAXES if t["default_tax"])

SERIES = "SBX"
VALIDATION_CODE = "SBXCODE1"
SEQUENCE_ID = 9000
# Every document type IX lists in a sequence; each gets its own sub-sequence id, as in the spec.
# fmt: off
_SEQUENCE_DOCTYPES = (
    "invoice", "invoice_receipt", "simplified_invoice", "credit_note", "debit_note", "receipt",
    "shipping", "transport", "devolution", "proforma", "quote", "fees_note", "vat_moss_invoice",
    "vat_moss_credit_note", "vat_moss_receipt",
)
# fmt: on
_SUB_SEQUENCE_IDS = {doctype: SEQUENCE_ID + 1 + n for n, doctype in enumerate(_SEQUENCE_DOCTYPES)}

# IX's full list of accepted units is unknown; these are the ones seen in use. Anything else is
# refused, so a connector sending "kg" or "pcs" finds out here rather than in production.
UNITS = frozenset({"unit", "service", "other", "hour", "day", "month"})

# CreateBody's properties in the spec. IX rejects keys it does not know, which is how a
# `proprietary_uid` put inside `invoice` instead of beside it gets caught.
# fmt: off
_BODY_KEYS = frozenset({
    "date", "due_date", "reference", "observations", "retention", "tax_exemption", "sequence_id",
    "manual_sequence_number", "client", "items", "mb_reference", "owner_invoice_id",
    "tax_exemption_reason", "currency_code", "rate", "plugin_id", "global_discount",
})
# fmt: on

# The "Country list" of the spec's info description, verbatim: IX matches names exactly.
# fmt: off
COUNTRIES = frozenset({
    "Portugal", "Ireland", "UK", "Canada", "United States", "Afghanistan", "Albania", "Algeria",
    "American Samoa", "Andorra", "Angola", "Anguilla", "Antigua and Barbuda", "Argentina", "Armenia", "Aruba",
    "Australia", "Austria", "Azerbaijan", "Bahamas", "Bahrain", "Bangladesh", "Barbados", "Belarus",
    "Belgium", "Belize", "Benin", "Bermuda", "Bhutan", "Bolivia", "Bosnia-Herzegovina", "Botswana", "Brazil",
    "British Indian Ocean Territory", "Brunei", "Bulgaria", "Burkina Faso", "Burma", "Burundi", "Cambodia",
    "Cameroon", "Canton and Enderbury Islands", "Cape Verde", "Cayman Islands", "Central African Republic",
    "Chad", "Chile", "China", "Christmas Island", "Cocos (Keeling) Islands", "Colombia", "Comoros", "Congo",
    "Congo, Democratic Republic", "Cook Islands", "Costa Rica", "Côte d’Ivoire", "Croatia", "Cuba", "Curaçao",
    "Cyprus", "Czech Republic", "Denmark", "Djibouti", "Dominica", "Dominican Republic", "Dronning Maud Land",
    "East Timor", "Ecuador", "Egypt", "El Salvador", "Equatorial Guinea", "Eritrea", "Estonia", "Ethiopia",
    "Faeroe Islands (Føroyar)", "Falkland Islands", "Fiji", "Finland", "France", "French Guiana",
    "French Polynesia", "Gabon", "Gambia", "Georgia", "Germany", "Ghana", "Gibraltar", "Great Britain",
    "Greece", "Greenland", "Grenada", "Guadeloupe", "Guam", "Guatemala", "Guernsey", "Guinea-Bissau",
    "Guinea", "Guyana", "Haiti", "Heard and McDonald Islands", "Honduras", "Hong Kong", "Hungary", "Iceland",
    "India", "Indonesia", "International Monetary Fund", "Iran", "Iraq", "Isle of Man", "Israel", "Italy",
    "Ivory Coast", "Jamaica", "Japan", "Jersey", "Johnston Island", "Jordan", "Kampuchea", "Kazakhstan",
    "Kenya", "Kiribati", "Korea, North", "Korea, South", "Kuwait", "Kyrgyzstan", "Laos", "Latvia", "Lebanon",
    "Lesotho", "Liberia", "Libya", "Liechtenstein", "Lithuania", "Luxembourg", "Macau",
    "Macedonia (Former Yug. Rep.)", "Madagascar", "Malawi", "Malaysia", "Maldives", "Mali", "Malta",
    "Marshall Islands", "Martinique", "Mauritania", "Mauritius", "Mayotte", "Micronesia", "Midway Islands",
    "Mexico", "Moldova", "Monaco", "Mongolia", "Montenegro", "Montserrat", "Morocco", "Mozambique", "Myanmar",
    "Nauru", "Namibia", "Nepal", "Netherlands Antilles", "Netherlands", "New Caledonia", "New Zealand",
    "Nicaragua", "Niger", "Nigeria", "Niue", "Norfolk Island", "Northern Mariana Islands", "Norway", "Oman",
    "Pakistan", "Palau", "Palestine", "Panama", "Papua New Guinea", "Paraguay", "Peru", "Philippines",
    "Pitcairn Island", "Poland", "Puerto Rico", "Qatar", "Reunion", "Romania", "Russia", "Rwanda",
    "Samoa (Western)", "Samoa (America)", "San Marino", "São Tomé and Príncipe", "Saudi Arabia", "Sénégal",
    "Serbia", "Seychelles", "Sierra Leone", "Singapore", "Slovakia", "Slovenia", "Solomon Islands", "Somalia",
    "South Africa", "Spain", "Sri Lanka", "St. Helena", "St. Kitts and Nevis", "St. Lucia",
    "St. Vincent and the Grenadines", "Sudan", "Suriname", "Svalbard and Jan Mayen Islands", "Swaziland",
    "Sweden", "Switzerland", "Syria", "Tahiti", "Taiwan", "Tajikistan", "Tanzania", "Thailand", "Timor-Leste",
    "Togo", "Trinidad and Tobago", "Tunisia", "Turkey", "Turkmenistan", "Turks and Caicos Islands", "Tuvalu",
    "Uganda", "Ukraine", "United Arab Emirates", "Upper Volta", "Uruguay", "Uzbekistan", "Vanuatu", "Vatican",
    "Venezuela", "Vietnam", "Virgin Islands", "Wake Island", "Wallis and Futuna Islands", "Western Sahara",
    "Western Samoa", "Yemen", "Zaïre", "Zambia", "Zimbabwe",
})
# fmt: on

_POSTAL_CODE_PT = re.compile(r"\d{4}-\d{3}")
_EMAIL = re.compile(r"[^@\s,;]+@[^@\s,;]+\.[^@\s,;]+")
_DATE = re.compile(r"\d{2}/\d{2}/\d{4}")
_DECIMAL = re.compile(r"[-+]?\d+(\.\d+)?")
# A document id in a path, so that calls can be counted per endpoint rather than per document.
_ID_SEGMENT = re.compile(r"/\d+(?=/|\.json$)")

# "no_atcud": a finalize it strikes numbers the document without an ATCUD, as IX does for a series not
# registered with the tax authority (SPEC: atcud "N/D"; the rule's `atcud` may say "N/A" or "").
FAULT_KINDS = frozenset({"status", "after", "delay", "hang", "no_atcud"})
_NO_ATCUD_VALUES = frozenset({"N/D", "N/A", ""})
_FAULT_DEFAULT_SECONDS = {"delay": 1.0, "hang": 10.0}


# --- IX's arithmetic -----------------------------------------------------------------------------
# The sandbox's own account of how IX turns request items into a document's amounts, kept apart from
# the connector's (connector/invoicexpress/totals.py) so that each can check the other. Exact
# fractions throughout, one rounding per figure shown. Each step names the rule it follows:
#   1. subtotal = unit_price × quantity. SPEC item fields `subtotal` (24.3902 × 1.0 → 24.39).
#   2. line discount = subtotal × discount / 100. `discount` is a percentage (SPEC InvoiceItemRequest;
#      "Discount is not a number" is refused, as are values outside 0..100).
#   3. No tax-inclusive conversion: IX takes `unit_price` as net of VAT and adds the tax (SPEC example
#      unit_price "24.3902", IVA23, total 30; integrators' notes agree). Converting a shop's gross
#      price is the caller's job.
#   4. global_discount (SPEC GlobalDiscountRequest {value_type percentage|absolute, value}) applies
#      to every line, shipping included (integrators' notes). The docs say no more; assumed: a
#      percentage comes off each line's net after its own discount; an absolute amount is net of VAT
#      and is shared over the lines in proportion to their nets (so each rate's base shrinks alike).
#   5. Tax per rate: the nets of one rate are added up and the rate applied to that base (the per-rate
#      summary a Portuguese invoice carries). Exactly equal to taxing each line, as nothing is rounded.
#   6. Rounding: the docs are silent (our notes, unknown 5); the SPEC examples fit any reading.
#      Assumed: nothing is rounded until a figure is shown; each shown figure (sum, discount,
#      before_taxes, taxes, each line's amounts) is rounded half up to the cent on its own, and the
#      total is the exact net plus exact tax rounded once — so it need not equal before_taxes + taxes.


@dataclass(frozen=True)
class IxItem:
    """One request item as IX reads it: net unit price, quantity, discount %, VAT %."""

    unit_price: Decimal
    quantity: Decimal
    discount: Decimal
    rate: Decimal


@dataclass(frozen=True)
class IxLine:
    """One line's amounts, exact."""

    subtotal: Fraction
    discount: Fraction  # its own discount and its share of the global one
    net: Fraction
    tax: Fraction


@dataclass(frozen=True)
class IxAmounts:
    """A document's amounts, exact; `shown` rounds them as IX prints them."""

    lines: tuple[IxLine, ...]
    bases: dict[Decimal, Fraction]  # VAT % -> taxable base
    taxes_by_rate: dict[Decimal, Fraction]

    @property
    def sum(self) -> Fraction:
        return sum((line.subtotal for line in self.lines), Fraction(0))

    @property
    def discount(self) -> Fraction:
        return sum((line.discount for line in self.lines), Fraction(0))

    @property
    def before_taxes(self) -> Fraction:
        return sum(self.bases.values(), Fraction(0))

    @property
    def taxes(self) -> Fraction:
        return sum(self.taxes_by_rate.values(), Fraction(0))

    @property
    def total(self) -> Decimal:
        """The document total, rounded once (rule 6)."""
        return to_cents(self.before_taxes + self.taxes)

    def shown(self) -> dict[str, Decimal]:
        return {
            "sum": to_cents(self.sum),
            "discount": to_cents(self.discount),
            "before_taxes": to_cents(self.before_taxes),
            "taxes": to_cents(self.taxes),
            "total": self.total,
        }


def to_cents(amount: Fraction) -> Decimal:
    """Half a cent and more away from zero, as money is rounded (rule 6)."""
    hundredths = abs(amount) * 100
    cents = hundredths.numerator * 2 + hundredths.denominator  # floor(h + 1/2) = (2n + d) // 2d
    whole = cents // (2 * hundredths.denominator)
    return (Decimal(whole if amount >= 0 else -whole) / 100).quantize(Decimal("0.01"))


def ix_amounts(items: Iterable[IxItem], global_discount: dict[str, Any] | None = None) -> IxAmounts:
    """The amounts IX derives from `items` and an optional `global_discount` (rules 1-6 above)."""
    items = list(items)
    subtotals = [Fraction(i.unit_price) * Fraction(i.quantity) for i in items]  # rule 1
    nets = [s - s * Fraction(i.discount) / 100 for s, i in zip(subtotals, items, strict=True)]  # rule 2
    if global_discount:  # rule 4
        value = Fraction(Decimal(str(global_discount["value"])))
        if global_discount["value_type"] == "percentage":
            keep = 1 - value / 100
        else:
            whole = sum(nets, Fraction(0))
            keep = 1 - value / whole if whole else Fraction(1)
        nets = [net * keep for net in nets]
    bases: dict[Decimal, Fraction] = {}
    for net, item in zip(nets, items, strict=True):  # rule 5
        bases[item.rate] = bases.get(item.rate, Fraction(0)) + net
    taxes = {rate: base * Fraction(rate) / 100 for rate, base in bases.items()}
    lines = tuple(
        IxLine(subtotal=s, discount=s - net, net=net, tax=net * Fraction(i.rate) / 100)
        for s, net, i in zip(subtotals, nets, items, strict=True)
    )
    return IxAmounts(lines=lines, bases=bases, taxes_by_rate=taxes)


def ix_request_amounts(
    items: Iterable[dict[str, Any]], tax_rates: dict[str, Decimal], global_discount: dict[str, Any] | None = None
) -> IxAmounts:
    """`ix_amounts` of IX request items (`unit_price`, `quantity`, optional `discount`, `tax.name`)."""
    return ix_amounts(
        (
            IxItem(
                unit_price=Decimal(str(i["unit_price"])),
                quantity=Decimal(str(i["quantity"])),
                discount=Decimal(str(i.get("discount") or 0)),
                rate=tax_rates[i["tax"]["name"]] if i.get("tax") else Decimal(0),
            )
            for i in items
        ),
        global_discount,
    )


class _Refusal(Exception):
    """An answer IX gives instead of doing what was asked."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


def _error(message: str, status: int = 422) -> _Refusal:
    """IX's single-error shape, used for auth, lookups, state changes and e-mail."""
    return _Refusal(status, {"errors": {"error": message}})


def _errors(messages: list[str]) -> _Refusal:
    """IX's list shape, used for create and update validation; duplicates are said once."""
    return _Refusal(422, {"errors": [{"error": m} for m in dict.fromkeys(messages)]})


@dataclass
class _Record:
    """One document: what the API returns (`doc`) plus what only the control endpoints show."""

    doc: dict[str, Any]
    doc_type: DocumentType
    day: date
    proprietary_uid: str | None
    emails: list[dict[str, Any]] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _Fault:
    """A fault-injection rule: strikes a matching request (method and path) with `probability`, and
    stays for `times` strikes (None: for good). `matched` and `triggered` count what it saw and did."""

    path: str
    kind: str
    times: int | None
    method: str | None
    regex: bool
    status: int
    seconds: float
    retry_after: float | None
    atcud: str = "N/D"  # what a no_atcud rule puts in the document's atcud
    probability: float = 1.0
    seed: int | str | None = None
    matched: int = 0
    triggered: int = 0
    # Of an "after" rule's strikes, those where IX had done the work it then said had failed.
    landed: int = 0
    # Seeded from `seed`, so that a run with the same requests in the same order strikes the same ones.
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def matches(self, method: str, path: str) -> bool:
        if self.method and self.method.upper() != method:
            return False
        return bool(re.fullmatch(self.path, path)) if self.regex else self.path == path

    def strikes(self) -> bool:
        """Whether this matching request gets the fault (call with the state's lock held)."""
        self.matched += 1
        # Drawn only when the rule is probabilistic, so a certain rule leaves the generator untouched.
        if self.probability < 1 and self.rng.random() >= self.probability:
            return False
        self.triggered += 1
        if self.times is not None:
            self.times -= 1
        return True

    @property
    def spent(self) -> bool:
        return self.times is not None and self.times <= 0

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "regex": self.regex,
            "kind": self.kind,
            "times": self.times,
            "status": self.status,
            "seconds": self.seconds,
            "retry_after": self.retry_after,
            "atcud": self.atcud,
            "probability": self.probability,
            "seed": self.seed,
            "matched": self.matched,
            "triggered": self.triggered,
            "landed": self.landed,
        }


class _State:
    """Everything the sandbox remembers. Requests come from several workers at once: hold `lock`.

    With a `path`, the documents, clients, numbering and UIDs are kept in that JSON file (read at
    start, replaced whole after each change), so a restarted sandbox goes on where it stopped, as
    IX would; fault rules and call counts belong to one run and are not kept."""

    def __init__(self, api_key: str | None, path: Path | None = None) -> None:
        self.api_key = api_key
        self.path = path
        self.lock = threading.Lock()
        # Ids keep growing across resets, so an id remembered from before a reset answers 404
        # instead of silently naming a different document.
        self.next_id = 1
        self.next_client_id = 1
        self.clear()
        if path is not None and path.exists():
            self._load(path)

    def clear(self) -> None:
        self.records: dict[int, _Record] = {}
        self.uids: dict[str, int] = {}
        self.creating: set[str] = set()
        self.clients: dict[str, dict[str, Any]] = {}
        self.numbers: Counter[str] = Counter()
        self.last_dates: dict[str, date] = {}
        self.last_hashes: dict[str, str] = {}
        self.faults: list[_Fault] = []
        self.calls: Counter[str] = Counter()

    def save(self) -> None:
        """Replace the state file with what is remembered now (call with the lock held)."""
        if self.path is None:
            return
        kept = {
            "version": 1,
            "next_id": self.next_id,
            "next_client_id": self.next_client_id,
            "records": [
                {
                    "doc": r.doc,
                    "doc_type": r.doc_type.path,
                    "day": r.day.isoformat(),
                    "proprietary_uid": r.proprietary_uid,
                    "emails": r.emails,
                    "history": r.history,
                    "notes": r.notes,
                }
                for _, r in sorted(self.records.items())
            ],
            "clients": self.clients,
            "numbers": dict(self.numbers),
            "last_dates": {k: v.isoformat() for k, v in self.last_dates.items()},
            "last_hashes": self.last_hashes,
        }
        serving.write_json_atomically(self.path, kept)

    def _load(self, path: Path) -> None:
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            records = {
                r["doc"]["id"]: _Record(
                    doc=r["doc"],
                    doc_type=BY_PATH[r["doc_type"]],
                    day=date.fromisoformat(r["day"]),
                    proprietary_uid=r["proprietary_uid"],
                    emails=r["emails"],
                    history=r["history"],
                    notes=r["notes"],
                )
                for r in kept["records"]
            }
            self.next_id = int(kept["next_id"])
            self.next_client_id = int(kept["next_client_id"])
            self.clients = dict(kept["clients"])
            self.numbers = Counter({k: int(v) for k, v in kept["numbers"].items()})
            self.last_dates = {k: date.fromisoformat(v) for k, v in kept["last_dates"].items()}
            self.last_hashes = dict(kept["last_hashes"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"the sandbox state file {path} cannot be read ({exc!r}); move it away to start empty"
            ) from exc
        self.records = records
        self.uids = {r.proprietary_uid: doc_id for doc_id, r in records.items() if r.proprietary_uid is not None}

    def take_fault(self, method: str, path: str) -> _Fault | None:
        """The first matching rule that strikes this request; a rule that lets it pass (its
        probability) hands it on to the next matching rule."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path) and fault.strikes():
                    if fault.spent:
                        self.faults.remove(fault)
                    return fault
        return None


def _state() -> _State:
    state: _State = current_app.extensions["ix_sandbox"]
    return state


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _money(value: Fraction) -> float:
    return float(to_cents(value))


def _doc_type(path: str) -> DocumentType:
    try:
        return BY_PATH[path]
    except KeyError:
        raise _error("Not found", 404) from None


def _record(state: _State, doc_type: DocumentType, doc_id: int) -> _Record:
    record = state.records.get(doc_id)
    # Ids are unique across types, but IX still answers 404 when the type in the path is wrong.
    if record is None or record.doc_type is not doc_type:
        raise _error("Document not found", 404)
    return record


def _json_object() -> dict[str, Any]:
    payload = request.get_json(silent=True)
    if payload is None:
        raise _error("Bad request", 400)
    if not isinstance(payload, dict):
        raise _error("Elemento invoice não fornecido")
    return payload


def _number(value: Any) -> Decimal | None:
    """A JSON number or a numeric string as a Decimal; None for anything else (IX takes both)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = Decimal(str(value))
        return number if number.is_finite() else None
    if isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            return None
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _parse_date(value: Any, label: str, problems: list[str]) -> date | None:
    if _blank(value):
        problems.append(f"{label} can't be blank")
        return None
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return datetime.strptime(value, "%d/%m/%Y").date()
        except ValueError:
            pass
    problems.append(f"{label} is invalid (dd/mm/yyyy)")
    return None


def _parse_client(value: Any, problems: list[str]) -> dict[str, Any] | None:
    if value is None:
        problems.append("Elemento client não fornecido")
        return None
    if not isinstance(value, dict) or _blank(value.get("name")) or _blank(value.get("code")):
        problems.append("Client is invalid")
        return None
    country = value.get("country")
    if not _blank(country) and (not isinstance(country, str) or country not in COUNTRIES):
        problems.append(f"Country {country} was not found")
    postal_code = value.get("postal_code")
    if country == "Portugal" and not _blank(postal_code):
        if not isinstance(postal_code, str) or not _POSTAL_CODE_PT.fullmatch(postal_code):
            problems.append("Postal Code must have the following format DDDD-DDD")
    email = value.get("email")
    if not _blank(email) and not (isinstance(email, str) and _EMAIL.fullmatch(email.strip())):
        problems.append("Email must be an email address")
    return dict(value)


def _parse_items(value: Any, problems: list[str], notes: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.append("Items element should be of type array")
        return []
    if not value:
        problems.append("Invoice items is invalid")
    items = []
    for n, item in enumerate(value, start=1):
        if not isinstance(item, dict) or _blank(item.get("name")) or _blank(item.get("description")):
            problems.append("Invoice items is invalid")
            continue
        unit_price = _number(item.get("unit_price"))
        if unit_price is None:
            problems.append("Unit price must be a number")
        quantity = _number(item.get("quantity"))
        if quantity is None or quantity <= 0:
            problems.append("Quantity must be a number greater than 0")
        raw_discount = item.get("discount")
        discount = Decimal(0) if _blank(raw_discount) else _number(raw_discount)
        if discount is None or not 0 <= discount <= 100:
            problems.append("Discount is not a number")
        unit = item.get("unit")
        if not _blank(unit) and (not isinstance(unit, str) or unit not in UNITS):
            problems.append(f"Unit {unit} is not included in the list of accepted units")
        tax = item.get("tax")
        asked = tax.get("name") if isinstance(tax, dict) else None
        # IX does not refuse an unknown tax name: it quietly applies the default tax. Keep a
        # note so a test can see the substitution the real API would hide.
        if isinstance(asked, str) and asked in _TAX_BY_NAME:
            tax_name = asked
        else:
            tax_name = _DEFAULT_TAX["name"]
            told = "no tax given" if asked is None else f"tax {asked!r} not found"
            notes.append(f"item {n}: {told}, default tax {tax_name} applied")
        if unit_price is None or quantity is None or discount is None:
            continue
        items.append(
            {
                "name": item["name"],
                "description": item["description"],
                "unit_price": unit_price,
                "quantity": quantity,
                "discount": discount,
                "unit": unit if not _blank(unit) else None,
                "tax": _TAX_BY_NAME[tax_name],
            }
        )
    return items


def _parse_owner(state: _State, value: Any, problems: list[str]) -> int | None:
    if _blank(value):
        problems.append("Owner invoice can't be blank")
        return None
    owner_id = int(value) if isinstance(value, int | str) and str(value).strip().isdigit() else None
    owner = state.records.get(owner_id) if owner_id is not None else None
    if owner is None or owner.doc_type.path not in _OWNER_TYPES:
        problems.append(f"Owner invoice {value} was not found")
        return None
    if owner.doc["status"] not in _OWNER_STATES:
        problems.append(f"Owner invoice {value} must be finalized")
        return None
    return owner_id


def _parse_body(state: _State, doc_type: DocumentType, body: Any) -> tuple[dict[str, Any], list[str]]:
    """Check a CreateBody as IX does; return its parsed fields and notes, or raise a 422 listing
    every problem found."""
    if not isinstance(body, dict):
        raise _errors(["Elemento invoice não fornecido"])
    problems: list[str] = []
    notes: list[str] = []
    problems += [f"unknown attribute '{key}' for Invoice." for key in sorted(set(body) - _BODY_KEYS)]
    day = _parse_date(body.get("date"), "Date", problems)
    due = _parse_date(body.get("due_date"), "Due date", problems)
    if day and due and due < day:
        problems.append("Due date must be later than date")
    client = _parse_client(body.get("client"), problems)
    items = _parse_items(body.get("items"), problems, notes)
    retention = body.get("retention")
    if not _blank(retention):
        number = _number(retention)
        if number is None or not 0 <= number <= Decimal("99.99"):
            problems.append("Retention must be a number between 0 and 99.99")
    if str(body.get("mb_reference", "0")) == "1":
        problems.append("Option to generate MB reference is set but no payment provider is configurated")
    global_discount = _parse_global_discount(body.get("global_discount"), problems)
    sequence_id = body.get("sequence_id")
    known_sequences = {SEQUENCE_ID, *_SUB_SEQUENCE_IDS.values()}
    if not _blank(sequence_id) and str(sequence_id).strip() not in {str(i) for i in known_sequences}:
        problems.append(f"Sequence {sequence_id} was not found")
    owner_id = (
        _parse_owner(state, body.get("owner_invoice_id"), problems) if doc_type.note else None
    )
    if problems:
        raise _errors(problems)
    assert day is not None and due is not None and client is not None
    return {
        "date": day,
        "due_date": due,
        "client": client,
        "items": items,
        "reference": body.get("reference") or "",
        "observations": body.get("observations") or "",
        "retention": str(body.get("retention") or "0"),
        "tax_exemption": body.get("tax_exemption") or body.get("tax_exemption_reason") or "",
        "currency_code": body.get("currency_code") or "EUR",
        "owner_invoice_id": owner_id,
        "global_discount": global_discount,
    }, notes


def _parse_global_discount(value: Any, problems: list[str]) -> dict[str, Any] | None:
    """SPEC GlobalDiscountRequest; IX's refusal texts for it are unknown, so these are ours."""
    if value is None or value == {}:
        return None
    kind = value.get("value_type") if isinstance(value, dict) else None
    amount = _number(value.get("value")) if isinstance(value, dict) else None
    if kind not in ("percentage", "absolute") or amount is None or amount < 0 or (
        kind == "percentage" and amount > 100
    ):
        problems.append("Global discount is invalid")
        return None
    return {"value_type": kind, "value": amount}


def _client(state: _State, fields: dict[str, Any]) -> dict[str, Any]:
    """The document's client summary; inline clients are created or updated by code."""
    stored = state.clients.get(fields["code"])
    if stored is None:
        stored = {"id": state.next_client_id}
        state.next_client_id += 1
        state.clients[fields["code"]] = stored
    # Our id stays: a client `id` in the request does not renumber the stored client.
    stored.update({key: value for key, value in fields.items() if key != "id"})
    return {key: stored.get(key) for key in ("id", "name", "code", "country", "email")}


def _render(state: _State, parsed: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The document fields IX derives from a request body: items, amounts and exemption."""
    amounts = ix_amounts(
        (
            IxItem(i["unit_price"], i["quantity"], i["discount"], Decimal(i["tax"]["value"]))
            for i in parsed["items"]
        ),
        parsed["global_discount"],
    )
    items = []
    for item, line in zip(parsed["items"], amounts.lines, strict=True):
        quantity = format(item["quantity"], "f")
        items.append(
            {
                "name": item["name"],
                "description": item["description"],
                # IX returns these two as strings ("24.3902", "1.0").
                "unit_price": format(item["unit_price"], "f"),
                "unit": item["unit"],
                "quantity": quantity if "." in quantity else quantity + ".0",
                "discount": float(item["discount"]),
                "subtotal": _money(line.subtotal),
                "tax_amount": _money(line.tax),
                "discount_amount": _money(line.discount),
                "total": _money(line.net + line.tax),
                "tax": {
                    "id": item["tax"]["id"],
                    "name": item["tax"]["name"],
                    "value": float(Decimal(item["tax"]["value"])),
                },
            }
        )
    exemption = parsed["tax_exemption"]
    if not exemption and any(Decimal(i["tax"]["value"]) == 0 for i in parsed["items"]):
        # IX does not refuse an exempt line without a reason: it stamps its catch-all M99.
        exemption = "M99"
        notes.append("exempt item without tax_exemption: M99 stamped")
    fields = {
        "sequence_id": str(SEQUENCE_ID),
        "tax_exemption": exemption,
        "date": parsed["date"].strftime("%d/%m/%Y"),
        "due_date": parsed["due_date"].strftime("%d/%m/%Y"),
        "reference": parsed["reference"],
        "observations": parsed["observations"],
        "retention": parsed["retention"],
        **{key: float(value) for key, value in amounts.shown().items()},
        "currency": "Euro" if parsed["currency_code"] == "EUR" else parsed["currency_code"],
        "client": _client(state, parsed["client"]),
        "items": items,
    }
    if parsed["owner_invoice_id"] is not None:
        fields["owner_invoice_id"] = parsed["owner_invoice_id"]
    if parsed["global_discount"] is not None:
        gd = parsed["global_discount"]
        fields["global_discount"] = {"value_type": gd["value_type"], "value": float(gd["value"])}
    return fields


def _saft_hash(previous: str, doc: dict[str, Any]) -> str:
    """Four characters of a chained signature, picked the way the SAF-T print rule picks them."""
    signed = f"{doc['date']};{doc['id']};{doc['inverted_sequence_number']};{doc['total']:.2f};{previous}"
    signature = base64.b64encode(hashlib.sha256(signed.encode()).digest()).decode()
    return signature[0] + signature[10] + signature[20] + signature[30]


def _transition(doc_type: DocumentType, current: str, verb: Any) -> str | None:
    """The status a change-state verb leads to from `current`, or None when IX refuses it."""
    table = {
        ("finalized", "draft"): "settled" if doc_type.path == "invoice_receipts" else "final",
        ("deleted", "draft"): "deleted",
        ("canceled", "final"): "canceled",
        ("settled", "final"): "settled",
    }
    if doc_type.path == "invoice_receipts":
        table["canceled", "settled"] = "canceled"
    if doc_type.note:
        table["unsettled", "settled"] = "final"
    return table.get((verb, current)) if isinstance(verb, str) else None


def _finalize(state: _State, record: _Record) -> None:
    """Number the document in the series, refusing dates earlier than the series' last one."""
    path = record.doc_type.path
    last = state.last_dates.get(path)
    if last is not None and record.day < last:
        raise _error(
            f"Date cannot be earlier than the last {record.doc_type.label} of this sequence[{last:%d %b %y}]"
        )
    number = state.numbers[path] + 1
    state.numbers[path] = number
    state.last_dates[path] = record.day
    doc = record.doc
    doc["sequence_number"] = f"{number}/{SERIES}"
    doc["inverted_sequence_number"] = f"{SERIES}/{number}"
    no_atcud: _Fault | None = g.pop("no_atcud", None)
    doc["atcud"] = no_atcud.atcud if no_atcud is not None else f"{VALIDATION_CODE}-{number}"
    doc["saft_hash"] = _saft_hash(state.last_hashes.get(path, ""), doc)
    state.last_hashes[path] = doc["saft_hash"]
    doc["permalink"] = f"{request.host_url}_sandbox/documents/{doc['id']}"


# --- IX endpoints -------------------------------------------------------------------------------


def create_document(doc_type: str) -> ResponseReturnValue:
    """POST /{type}.json: a draft, or the document already made with this proprietary_uid."""
    kind = _doc_type(doc_type)
    payload = _json_object()
    uid = payload.get("proprietary_uid")
    uid = None if _blank(uid) else str(uid)
    state = _state()
    existing: _Record | None = None
    if uid is not None:
        with state.lock:
            if uid in state.uids:
                # A retry after a lost answer gets the document it already made (IX's own test of
                # this key expects the same id back), whatever its type.
                existing = state.records[state.uids[uid]]
            elif uid in state.creating:
                return {"reason": f"There's an ongoing document creation with the provided UID {uid}"}, 409
            else:
                state.creating.add(uid)
    # A "hang" fault holds the request after IX has taken it, so its UID is in flight meanwhile.
    time.sleep(g.get("hang", 0))
    if existing is not None:
        return {existing.doc_type.key: existing.doc}, 201
    try:
        with state.lock:
            parsed, notes = _parse_body(state, kind, payload.get("invoice", payload.get(kind.key)))
            doc_id = state.next_id
            state.next_id += 1
            doc = {
                "id": doc_id,
                "status": "draft",
                "archived": False,
                "type": kind.ix_type,
                "sequence_number": "rascunho",
                "inverted_sequence_number": "rascunho",
                "atcud": "",
                "permalink": "",
                "saft_hash": "",
            }
            doc.update(_render(state, parsed, notes))
            record = _Record(doc=doc, doc_type=kind, day=parsed["date"], proprietary_uid=uid, notes=notes)
            record.history.append({"at": _now(), "action": "created", "from": None, "to": "draft"})
            state.records[doc_id] = record
            if uid is not None:
                state.uids[uid] = doc_id
            return {kind.key: doc}, 201
    finally:
        if uid is not None:
            with state.lock:
                state.creating.discard(uid)


def get_document(doc_type: str, doc_id: int) -> ResponseReturnValue:
    """GET /{type}/{id}.json."""
    kind = _doc_type(doc_type)
    state = _state()
    with state.lock:
        return {kind.key: _record(state, kind, doc_id).doc}


def update_document(doc_type: str, doc_id: int) -> ResponseReturnValue:
    """PUT /{type}/{id}.json: replaces a draft's fields with the body; what is not sent is lost."""
    kind = _doc_type(doc_type)
    payload = _json_object()
    state = _state()
    with state.lock:
        record = _record(state, kind, doc_id)
        status = record.doc["status"]
        if status != "draft":
            verb = "finalized" if status == "final" else status
            raise _error(f"Invoice has been {verb} so can't be changed anymore")
        parsed, notes = _parse_body(state, kind, payload.get("invoice", payload.get(kind.key)))
        record.doc.update(_render(state, parsed, notes))
        for key in ("owner_invoice_id", "global_discount"):
            if parsed[key] is None:
                record.doc.pop(key, None)
        record.day = parsed["date"]
        record.notes += notes
        record.history.append({"at": _now(), "action": "updated", "from": "draft", "to": "draft"})
        return {kind.key: record.doc}


def change_state(doc_type: str, doc_id: int) -> ResponseReturnValue:
    """PUT /{type}/{id}/change-state.json: the transitions of IX's table, and no others."""
    kind = _doc_type(doc_type)
    payload = _json_object()
    # The official root is "invoice" for every type; some integrations send the type's own key.
    body = payload.get("invoice", payload.get(kind.key))
    verb = body.get("state") if isinstance(body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    state = _state()
    with state.lock:
        record = _record(state, kind, doc_id)
        current = record.doc["status"]
        target = _transition(kind, current, verb)
        if target is None:
            raise _error("Invalid state")
        if verb == "canceled" and _blank(message):
            raise _error("Cancel message can't be blank")
        if verb == "finalized":
            _finalize(state, record)
        record.doc["status"] = target
        entry = {"at": _now(), "action": verb, "from": current, "to": target}
        if not _blank(message):
            entry["message"] = message
        record.history.append(entry)
        return {kind.key: record.doc}


def _check_addresses(value: Any, label: str) -> None:
    if _blank(value):
        return
    addresses = [a.strip() for a in str(value).split(",")]
    if not all(_EMAIL.fullmatch(a) for a in addresses):
        raise _error(f"{label}: is an invalid email")


def email_document(doc_type: str, doc_id: int) -> ResponseReturnValue:
    """PUT /{type}/{id}/email-document.json: records the e-mail; 200 with an empty body."""
    kind = _doc_type(doc_type)
    payload = _json_object()
    message = payload.get("message") if isinstance(payload.get("message"), dict) else {}
    client = message.get("client") if isinstance(message.get("client"), dict) else {}
    state = _state()
    with state.lock:
        record = _record(state, kind, doc_id)
        email = client.get("email")
        if _blank(email):
            raise _error("Email is a required field")
        _check_addresses(email, "Email")
        _check_addresses(message.get("cc"), "Cc")
        _check_addresses(message.get("bcc"), "Bcc")
        save = client.get("save")
        if _blank(save):
            raise _error("Save is a required field")
        if str(save) not in ("0", "1"):
            raise _error("Save must be 0 or 1")
        # Whether IX e-mails drafts is unknown; a draft has no fiscal value, so the sandbox refuses.
        if record.doc["status"] in ("draft", "deleted"):
            raise _error(f"A {record.doc['status']} document can't be sent by email")
        record.emails.append(
            {
                "to": str(email).strip(),
                "cc": message.get("cc"),
                "bcc": message.get("bcc"),
                "subject": message.get("subject"),
                "body": message.get("body"),
                "save": str(save),
                "at": _now(),
            }
        )
        if str(save) == "1":
            stored = state.clients.get(record.doc["client"]["code"])
            if stored is not None:
                stored["email"] = str(email).strip()
    # IX answers 200 with nothing in it; a client that insists on parsing JSON finds out here.
    return Response("", status=200, mimetype="application/json")


def _positive_int(value: str | None, default: int) -> int:
    return int(value) if value is not None and value.isdigit() and int(value) > 0 else default


def _list_status(status: str) -> str:
    # The list filter calls "final" documents "sent".
    return "sent" if status == "final" else status


def list_documents() -> ResponseReturnValue:
    """GET /invoices.json: every invoice-family document, filtered and paginated like IX."""
    args = request.args
    types = set(args.getlist("type[]"))
    # "final" is not in the spec's enum, but integrations send it; take it as "sent".
    statuses = {_list_status(s) for s in args.getlist("status[]")}
    reference = args.get("reference", "").strip().lower()
    text = args.get("text", "").strip().lower()
    bounds = []
    for key in ("date[from]", "date[to]"):
        try:
            bounds.append(datetime.strptime(args[key], "%d/%m/%Y").date() if key in args else None)
        except ValueError:
            bounds.append(None)
    per_page = min(_positive_int(args.get("per_page"), 10), 30)
    page = _positive_int(args.get("page"), 1)
    state = _state()
    with state.lock:
        found = []
        for record in sorted(state.records.values(), key=lambda r: r.doc["id"], reverse=True):
            doc = record.doc
            status = _list_status(doc["status"])
            if types and doc["type"] not in types:
                continue
            if (statuses and status not in statuses) or (not statuses and status == "deleted"):
                continue
            # Assumed to be a "contains" match, as text filters usually are: a caller looking up
            # one order's document must still compare the reference itself.
            if reference and reference not in doc["reference"].lower():
                continue
            if text and text not in f"{doc['reference']} {doc['client']['name']}".lower():
                continue
            if (bounds[0] and record.day < bounds[0]) or (bounds[1] and record.day > bounds[1]):
                continue
            found.append(doc)
        start = (page - 1) * per_page
        return {
            "invoices": found[start : start + per_page],
            "pagination": {
                "total_entries": len(found),
                "per_page": per_page,
                "current_page": page,
                "total_pages": -(-len(found) // per_page),
            },
        }


def list_taxes() -> ResponseReturnValue:
    """GET /taxes.json."""
    return {"taxes": [dict(t) for t in TAXES]}


def list_sequences() -> ResponseReturnValue:
    """GET /sequences.json: the one default series, with per-type numbers and ids."""
    state = _state()
    sequence: dict[str, Any] = {"id": SEQUENCE_ID, "serie": SERIES, "default_sequence": 1}
    with state.lock:
        for doctype in _SEQUENCE_DOCTYPES:
            sequence[f"current_{doctype}_number"] = state.numbers.get(doctype + "s", 0)
            sequence[f"current_{doctype}_sequence_id"] = _SUB_SEQUENCE_IDS[doctype]
            sequence[f"current_{doctype}_validation_code"] = VALIDATION_CODE
    return {"sequences": [sequence]}


# --- control endpoints (no api_key) ---------------------------------------------------------------


def _describe(record: _Record) -> dict[str, Any]:
    doc = record.doc
    return {
        "id": doc["id"],
        "doc_type": record.doc_type.path,
        "type": doc["type"],
        "status": doc["status"],
        "proprietary_uid": record.proprietary_uid,
        "reference": doc["reference"],
        "sequence_number": doc["sequence_number"],
        "totals": {key: doc[key] for key in ("sum", "discount", "before_taxes", "taxes", "total")},
        "emails": list(record.emails),
        "history": list(record.history),
        "notes": list(record.notes),
        "document": doc,
    }


def sandbox_documents() -> ResponseReturnValue:
    """GET /_sandbox/documents: every document with what the API does not show."""
    state = _state()
    with state.lock:
        return jsonify([_describe(r) for _, r in sorted(state.records.items())])


def sandbox_document_page(doc_id: int) -> ResponseReturnValue:
    """GET /_sandbox/documents/<id>: the "permalink", a plain page showing the document."""
    state = _state()
    with state.lock:
        record = state.records.get(doc_id)
        if record is None:
            return Response("Document not found", status=404, mimetype="text/plain")
        doc = dict(record.doc)
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(str(i['name']))}</td><td>{e(str(i['description']))}</td><td>{e(i['quantity'])}</td>"
        f"<td>{e(i['unit_price'])}</td><td>{i['discount']}%</td><td>{e(str(i['tax']['name']))}</td>"
        f"<td>{i['total']:.2f}</td></tr>"
        for i in doc["items"]
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{e(doc['type'])} {e(doc['inverted_sequence_number'])}</title></head><body>"
        f"<h1>{e(doc['type'])} {e(doc['inverted_sequence_number'])}</h1>"
        "<p>InvoiceXpress sandbox document: no fiscal value.</p>"
        f"<p>Status: {e(doc['status'])}. Date: {e(doc['date'])}. ATCUD: {e(doc['atcud'])}. "
        f"Reference: {e(str(doc['reference']))}.</p>"
        f"<p>Client: {e(str(doc['client']['name']))} ({e(str(doc['client']['code']))})</p>"
        "<table border='1'><tr><th>Item</th><th>Description</th><th>Qty</th><th>Unit price</th>"
        f"<th>Discount</th><th>Tax</th><th>Total</th></tr>{rows}</table>"
        f"<p>Before taxes: {doc['before_taxes']:.2f}. Taxes: {doc['taxes']:.2f}. "
        f"Total: {doc['total']:.2f} {e(doc['currency'])}</p>"
        f"<p>Exemption: {e(str(doc['tax_exemption']))}. Hash: {e(doc['saft_hash'])}</p></body></html>"
    )
    return Response(page, mimetype="text/html")


def sandbox_reset() -> ResponseReturnValue:
    """POST /_sandbox/reset: forget every document, client, number, fault and call count."""
    state = _state()
    with state.lock:
        state.clear()
    return Response(status=204)


def _fault_from(rule: Any) -> _Fault:
    if not isinstance(rule, dict) or not isinstance(rule.get("path"), str):
        raise _Refusal(400, {"error": "each fault needs a string 'path'"})
    kind = rule.get("kind")
    if kind not in FAULT_KINDS:
        raise _Refusal(400, {"error": f"fault kind must be one of {sorted(FAULT_KINDS)}"})
    regex = bool(rule.get("regex", False))
    if regex:
        try:
            re.compile(rule["path"])
        except re.error as exc:
            raise _Refusal(400, {"error": f"bad regex: {exc}"}) from None
    try:
        # "times": null keeps the rule for good (with a probability, a fault at random for the whole run).
        times = None if "times" in rule and rule["times"] is None else int(rule.get("times", 1))
        status = int(rule.get("status", 500))
        seconds = float(rule.get("seconds", _FAULT_DEFAULT_SECONDS.get(kind, 0.0)))
        retry_after = None if rule.get("retry_after") is None else float(rule["retry_after"])
        probability = float(rule.get("probability", 1))
    except (TypeError, ValueError):
        raise _Refusal(
            400, {"error": "times, status, seconds, retry_after and probability must be numbers"}
        ) from None
    if (times is not None and times < 1) or not 100 <= status <= 599 or seconds < 0:
        raise _Refusal(400, {"error": "times must be >= 1 or null, status an HTTP status, seconds >= 0"})
    if not 0 < probability <= 1:  # also NaN
        raise _Refusal(400, {"error": "probability must be > 0 and <= 1"})
    seed = rule.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | str)):
        raise _Refusal(400, {"error": "seed must be an integer or a string"})
    atcud = rule.get("atcud", "N/D")
    if not isinstance(atcud, str) or atcud not in _NO_ATCUD_VALUES:
        raise _Refusal(400, {"error": f"atcud must be one of {sorted(_NO_ATCUD_VALUES)}"})
    method = rule.get("method")
    return _Fault(
        path=rule["path"],
        kind=kind,
        times=times,
        method=str(method).upper() if method else None,
        regex=regex,
        status=status,
        seconds=seconds,
        retry_after=retry_after,
        probability=probability,
        seed=seed,
        atcud=atcud,
        rng=random.Random(seed),
    )


def sandbox_faults() -> ResponseReturnValue:
    """GET/POST/DELETE /_sandbox/faults: show, add to, or clear the fault-injection rules.

    A rule: `path` (`regex` true to match it as one), optional `method`, `kind` (status, after, delay,
    hang, no_atcud: aimed at change-state, a finalize it strikes leaves `atcud` as the rule's "N/D", "N/A"
    or ""), `status`, `retry_after` (429), `seconds`, `times` (strikes before the rule goes; null: never),
    `probability` (0 < p <= 1, default 1: each matching request is struck with it) and `seed` (for
    reproducible strikes). GET shows each rule still in force with the requests it `matched` and the
    faults it `triggered` (and, of an "after" rule's, those that `landed`: IX had done the work)."""
    state = _state()
    if request.method == "POST":
        rules = request.get_json(force=True, silent=True)
        if isinstance(rules, dict):
            rules = [rules]
        if not isinstance(rules, list):
            raise _Refusal(400, {"error": "send a JSON list of fault rules"})
        faults = [_fault_from(rule) for rule in rules]
        with state.lock:
            state.faults += faults
            return jsonify([f.describe() for f in state.faults]), 201
    with state.lock:
        if request.method == "DELETE":
            state.faults.clear()
            return Response(status=204)
        return jsonify([f.describe() for f in state.faults])


def sandbox_clients() -> ResponseReturnValue:
    """GET /_sandbox/clients: every client IX keeps, with the fiscal_id that documents do not show."""
    state = _state()
    with state.lock:
        return jsonify([{"code": code, **client} for code, client in sorted(state.clients.items())])


def sandbox_calls() -> ResponseReturnValue:
    """GET /_sandbox/calls: how many requests each "METHOD path-template" received."""
    state = _state()
    with state.lock:
        return dict(sorted(state.calls.items()))


# --- request hooks ------------------------------------------------------------------------------


def _fault_response(fault: _Fault) -> Response:
    response = jsonify({"errors": {"error": HTTPStatus(fault.status).phrase}})
    response.status_code = fault.status
    if fault.status == 429 and fault.retry_after is not None:
        response.headers["Retry-After"] = f"{fault.retry_after:g}"
    return response


def _before_request() -> ResponseReturnValue | None:
    """Count the call, apply any fault, then check the key and content type as IX does."""
    if request.path.startswith("/_sandbox"):
        return None
    state = _state()
    with state.lock:
        state.calls[f"{request.method} {_ID_SEGMENT.sub('/{id}', request.path)}"] += 1
    fault = state.take_fault(request.method, request.path)
    if fault is not None:
        if fault.kind == "status":
            return _fault_response(fault)
        if fault.kind == "after":
            g.after_fault = fault
        elif fault.kind == "no_atcud":
            g.no_atcud = fault
        elif fault.kind == "hang" and request.endpoint == "create_document" and request.method == "POST":
            g.hang = fault.seconds
        else:
            time.sleep(fault.seconds)
    key = request.args.get("api_key", "")
    if not key or (state.api_key is not None and not hmac.compare_digest(key, state.api_key)):
        raise _error("Invalid API key", 401)
    if request.method in ("POST", "PUT") and request.mimetype != "application/json":
        raise _error("No content type or wrongly specified")
    return None


def _after_request(response: Response) -> Response:
    # Every request that may change what is remembered is kept before it is answered (the
    # "after" fault too: the work is done). Fault rules are not kept.
    if request.method != "GET" and request.path != "/_sandbox/faults":
        state = _state()
        with state.lock:
            state.save()
    # The nastiest IX fault: the work is done, but the caller is told it failed.
    fault: _Fault | None = g.pop("after_fault", None)
    if fault is not None and response.status_code < 400:
        with _state().lock:
            fault.landed += 1
    return _fault_response(fault) if fault is not None else response


def _refusal_response(refusal: _Refusal) -> ResponseReturnValue:
    response = jsonify(refusal.body)
    response.status_code = refusal.status
    response.headers.update(refusal.headers)
    return response


def _http_error_response(exc: HTTPException) -> ResponseReturnValue:
    response = jsonify({"errors": {"error": exc.name}})
    response.status_code = exc.code or 500
    return response


def create_app(api_key: str | None = None, state_path: str | Path | None = None) -> Flask:
    """The sandbox app; with `api_key` None any non-empty `api_key` query parameter is accepted; with
    `state_path` what it remembers is kept in that file (otherwise in memory only)."""
    app = Flask(__name__)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["ix_sandbox"] = _State(api_key, Path(state_path) if state_path is not None else None)
    app.before_request(_before_request)
    app.after_request(_after_request)
    app.register_error_handler(_Refusal, _refusal_response)
    app.register_error_handler(HTTPException, _http_error_response)
    # Static paths are listed before the <doc_type> ones so that they win.
    app.add_url_rule("/invoices.json", view_func=list_documents, methods=["GET"])
    app.add_url_rule("/taxes.json", view_func=list_taxes, methods=["GET"])
    app.add_url_rule("/sequences.json", view_func=list_sequences, methods=["GET"])
    app.add_url_rule("/<doc_type>.json", view_func=create_document, methods=["POST"])
    app.add_url_rule("/<doc_type>/<int:doc_id>.json", view_func=get_document, methods=["GET"])
    app.add_url_rule("/<doc_type>/<int:doc_id>.json", view_func=update_document, methods=["PUT"])
    app.add_url_rule("/<doc_type>/<int:doc_id>/change-state.json", view_func=change_state, methods=["PUT"])
    app.add_url_rule(
        "/<doc_type>/<int:doc_id>/email-document.json", view_func=email_document, methods=["PUT"]
    )
    app.add_url_rule("/_sandbox/documents", view_func=sandbox_documents, methods=["GET"])
    app.add_url_rule("/_sandbox/documents/<int:doc_id>", view_func=sandbox_document_page, methods=["GET"])
    app.add_url_rule("/_sandbox/reset", view_func=sandbox_reset, methods=["POST"])
    app.add_url_rule("/_sandbox/faults", view_func=sandbox_faults, methods=["GET", "POST", "DELETE"])
    app.add_url_rule("/_sandbox/clients", view_func=sandbox_clients, methods=["GET"])
    app.add_url_rule("/_sandbox/calls", view_func=sandbox_calls, methods=["GET"])
    return app


class _RequestLog(WSGIRequestHandler):
    """Werkzeug's access log, without the API key the request line carries in its query string."""

    def log(self, type: str, message: str, *args) -> None:
        super().log(type, message, *(redact(str(a), ()) for a in args))


def _server(host: str, port: int, api_key: str | None, state_path: str | Path | None = None) -> BaseWSGIServer:
    return make_server(host, port, create_app(api_key, state_path), threaded=True, request_handler=_RequestLog)


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, api_key: str | None = None, state_path: str | Path | None = None
) -> tuple[str, BaseWSGIServer]:
    """Serve a fresh sandbox from a daemon thread; returns (base_url, server); server.shutdown() stops it."""
    server = _server(host, port, api_key, state_path)
    serving.serve_in_thread(server, "ix-sandbox")
    return f"http://{host}:{server.server_port}", server


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.invoicexpress_sandbox`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools.invoicexpress_sandbox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--api-key", default=None, help="the only key accepted (default: any non-empty key)")
    parser.add_argument(
        "--state", default=None, metavar="PATH", help="keep documents and numbering in this JSON file across runs"
    )
    args = parser.parse_args(argv)
    server = _server(args.host, args.port, args.api_key, args.state)
    serving.serve_until_interrupted(server, f"InvoiceXpress sandbox listening on http://{args.host}:{server.server_port}")


if __name__ == "__main__":
    main()
