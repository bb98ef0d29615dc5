"""The platform-neutral order: what every shop payload is loaded into before invoicing. No I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class Address:
    """A postal address as the buyer typed it; `country_code` is ISO 3166-1 alpha-2."""

    line1: str = ""
    line2: str = ""
    city: str = ""
    postal_code: str = ""
    country_code: str = ""


@dataclass(frozen=True)
class Customer:
    """The buyer. `key` is stable across orders of the same buyer (the IX client code)."""

    key: str
    name: str
    email: str | None = None
    company: str | None = None
    address: Address = field(default_factory=Address)
    # The tax number the buyer gave: the valid one found in what they typed, else what they typed
    # (validated later against their country, never logged).
    tax_id: str | None = None


@dataclass(frozen=True)
class Line:
    """One invoiced line: a product, shipping, a fee or a tip.

    `unit_price` is what the shop shows per unit: gross (tax included) when the order's
    `taxes_included` is true, net otherwise. `discount` is the total discount allocated to the
    whole line, in the same basis as `unit_price`. `tax_rate` is a percentage (23 for 23 %).
    """

    key: str
    description: str
    unit_price: Decimal
    quantity: Decimal
    tax_rate: Decimal
    discount: Decimal = Decimal("0")
    kind: str = "product"  # product | shipping | fee | tip | gift_card
    # Set when the shop sent something we cannot map to one VAT rate (e.g. several tax lines).
    tax_problem: str | None = None


@dataclass(frozen=True)
class Order:
    """A paid (or not) order, in the shop's presentment currency, money as Decimal."""

    platform: str
    store: str
    order_id: str
    name: str  # what the shop owner and the customer call it, e.g. "#1001"
    currency: str
    taxes_included: bool
    total: Decimal  # what the customer paid
    financial_status: str
    customer: Customer
    lines: tuple[Line, ...]
    test: bool = False
    created_at: str | None = None  # ISO 8601 as sent by the shop
    # The same order in the shop's own currency, when the platform sends both (for the exchange rate).
    shop_currency: str | None = None
    shop_total: Decimal | None = None
    # Where the goods go (ISO 3166-1 alpha-2): decides exports and intra-EU supplies.
    ship_to_country: str | None = None


# C0 and C1 control characters and Unicode's line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def printable(value):
    """`value` (a parsed JSON payload) with every string made safe to store and show on one line.

    JSON may carry lone surrogates (which no database stores), NULs (which PostgreSQL refuses) and line
    breaks or other control characters (which would break the one-line notes and reasons people read).
    """
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8") if _has_surrogate(value) else value
        return _CONTROL.sub(" ", text) if _CONTROL.search(text) else text
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item) for item in value]
    return value


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass(frozen=True)
class RefundLine:
    """What one refund gives back on one invoiced line, in the same money as the order's lines."""

    # The same key the order's Line had (sku / shopify-variant-… / "shipping"), to match the invoice item.
    key: str
    description: str
    quantity: Decimal   # units given back (1 for shipping and amount-only parts)
    amount: Decimal     # money given back for this line, tax INCLUDED, never negative
    tax_rate: Decimal   # percent, as on the order line
    kind: str = "product"  # product | shipping | adjustment


@dataclass(frozen=True)
class Refund:
    """A refund of (part of) a paid order, as money actually given back to the customer."""

    platform: str
    store: str
    refund_id: str
    order_id: str
    order_name: str | None   # "#1001" when the payload says (refunds/create may not)
    currency: str | None
    lines: tuple[RefundLine, ...]  # what the refund says was given back, per line; may be empty (amount-only)
    amount: Decimal          # total money refunded (successful refund transactions), tax included
    restocking_fee: Decimal = Decimal(0)  # kept by the shop: amount < Σ lines
    created_at: str | None = None
