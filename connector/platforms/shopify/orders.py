"""Shopify: webhook signature and headers, the `orders/paid` payload loaded into an `Order`, and the
`refunds/create` payload (or an entry of an order's `refunds[]`) loaded into a `Refund`.

Money: every Shopify amount `x` comes with `x_set`, the same figure in two currencies.
`to_order(money="presentment")` (the default) takes `presentment_money`, what the customer saw and
paid, in the currency they paid in: an invoice-receipt states what the customer was charged.
`money="shop"` takes `shop_money`, the store's own accounting currency (the order's `currency`), for
a store that invoices in its own currency whatever the buyer paid in. Either way the order also
carries its total in the shop currency (`Order.shop_total`), from which the exchange rate follows.
`to_refund` takes the same `money` choice, so a refund's lines are in the same money as its order's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate

from connector import fiscal
from connector.orders import Address, Customer, Line, Order, Refund, RefundLine, printable

PAID_TOPIC = "orders/paid"
REFUND_TOPIC = "refunds/create"
CANCEL_TOPIC = "orders/cancelled"
# The keys the REST API wraps the one object it returns in (`{"order": {…}}`), which a person may paste.
API_ENVELOPES = ("order", "refund")

# Shopify has no standard field for a tax number: Portuguese stores collect it as a cart attribute,
# which arrives in `note_attributes`. Which names a shop uses is configurable; these are the usual ones.
DEFAULT_TAX_ID_KEYS = (
    "nif",
    "nipc",
    "contribuinte",
    "vat",
    "vat_number",
    "vat number",
    "tax_id",
    "numero de contribuinte",
)

_ZERO = Decimal(0)

# Which side of Shopify's money sets an order is loaded from (see the module docstring).
MONEY_SIDES = {"presentment": "presentment_money", "shop": "shop_money"}
MAX_AMOUNT = Decimal("1e11")  # far above any order; the database keeps totals as text of 32 characters
MAX_QUANTITY = 10_000_000


# --- headers and signature ---------------------------------------------------------------------------


def _header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, stripped, '' when absent; found whatever the case of the name."""
    # werkzeug's Headers.get ignores case already; a plain dict (tests, replays) does not.
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return (value or "").strip()


def verify(body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool:
    """Whether `X-Shopify-Hmac-Sha256` is the base64 HMAC-SHA256 of the raw body under any of `secrets`.

    Several secrets because Shopify keeps signing with the old one for up to an hour after a rotation.
    Fails closed: no header, or no usable secret, is never a valid signature.
    """
    received = _header(headers, "X-Shopify-Hmac-Sha256").encode()
    if not received:
        return False
    valid = False
    for secret in secrets:
        # An empty key is public knowledge: anyone could sign with it.
        if not secret:
            continue
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        # Bytes, not str: compare_digest refuses non-ASCII str, and the header is attacker-controlled.
        valid |= hmac.compare_digest(expected, received)
    return valid


def event_key(headers: Mapping[str, str]) -> str | None:
    """The delivery's idempotency key: the event id (same across subscriptions), else the webhook id."""
    return _header(headers, "X-Shopify-Event-Id") or _header(headers, "X-Shopify-Webhook-Id") or None


def topic(headers: Mapping[str, str]) -> str:
    """The webhook topic, e.g. 'orders/paid' ('' if absent)."""
    return _header(headers, "X-Shopify-Topic")


def store(headers: Mapping[str, str]) -> str:
    """The shop's myshopify.com domain, lower-cased ('' if absent)."""
    return _header(headers, "X-Shopify-Shop-Domain").lower()


# --- payload schemas ---------------------------------------------------------------------------------
#
# Every amount `x` has a sibling `x_set` whose `presentment_money.amount` and `shop_money.amount` are
# the figure in the buyer's and in the shop's currency. Before loading, each `x` is replaced by the
# side asked for; the plain field (shop currency in Shopify) stays only where a payload lacks the
# `_set` (older or hand-made payloads). On a single-currency store both sides are the same.


def _with_amounts(node: Any, side: str) -> Any:
    """A copy of `node` where every amount `x` holds `x_set[side].amount`, wherever the payload has one."""
    if isinstance(node, list):
        return [_with_amounts(item, side) for item in node]
    if not isinstance(node, Mapping):
        return node  # a scalar, or a wrong type the schema reports
    copied = {key: _with_amounts(value, side) for key, value in node.items()}
    for key, value in node.items():
        if isinstance(key, str) and key.endswith("_set") and isinstance(value, Mapping):
            money = value.get(side)
            if isinstance(money, Mapping) and money.get("amount") is not None:
                copied[key.removesuffix("_set")] = money["amount"]
    return copied


def _shop_amount(data: Mapping, name: str) -> Any:
    """`name` in the shop currency: its `_set`'s shop money, else the plain field (None if neither)."""
    money_set = data.get(f"{name}_set")
    shop = money_set.get("shop_money") if isinstance(money_set, Mapping) else None
    if isinstance(shop, Mapping) and shop.get("amount") is not None:
        return shop["amount"]
    return data.get(name)


def _money(**kwargs: Any) -> fields.Decimal:
    # Decimal from the JSON string; never a float. Shopify amounts are never negative.
    # Bounded, so that a garbled amount is a load error rather than an overflow deep in the arithmetic.
    return fields.Decimal(validate=validate.Range(min=0, max=MAX_AMOUNT), allow_nan=False, **kwargs)


def _id(**kwargs: Any) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(min=1), **kwargs)


def _text() -> fields.String:
    """An optional string: Shopify sends null and '' interchangeably, both become ''."""
    return fields.String(allow_none=True, load_default="")


class _Schema(Schema):
    class Meta:
        unknown = EXCLUDE  # Shopify payloads are large and grow with each API version


class _TaxLineSchema(_Schema):
    title = _text()
    rate = fields.Decimal(required=True, validate=validate.Range(min=0, max=1))  # a fraction: 0.23 for 23 %
    price = _money(required=True)


class _DiscountAllocationSchema(_Schema):
    amount = _money(required=True)


def _percent(rate: Decimal) -> Decimal:
    """0.23 → 23, 0.135 → 13.5."""
    percent = rate * 100
    return percent.quantize(Decimal(1)) if percent == percent.to_integral_value() else percent.normalize()


def _tax(tax_lines: Sequence[Mapping[str, Any]], taxable: bool = True) -> tuple[Decimal, str | None]:
    """The VAT percentage of one line and, if it cannot be one Portuguese rate, why not."""
    # A 0 % tax line with 0.00 tax is Shopify saying "no tax here" (common on free shipping).
    taxes = [t for t in tax_lines if t["rate"] or t["price"]]
    if not taxable:
        if any(t["price"] for t in taxes):
            return _ZERO, "this line is marked not taxable but Shopify charged tax on it"
        return _ZERO, None
    if not taxes:
        return _ZERO, None
    rate = _percent(sum((t["rate"] for t in taxes), _ZERO))
    if len(taxes) > 1:
        # Even two lines of the same rate are two taxes (e.g. a national and a regional one): the sum
        # is what was charged, but an invoice-receipt shows one VAT rate per line.
        listed = ", ".join(f"{t['title'] or 'tax'} {_percent(t['rate'])} %" for t in taxes)
        return rate, f"this line carries several taxes ({listed}), which a Portuguese invoice cannot show"
    if not taxes[0]["rate"]:
        return rate, "this line carries a tax amount without a rate"
    return rate, None


# Not a Shopify key: the line's 1-based place in its order's `line_items`, which `to_order` adds, for the
# key of a line that has no id, SKU, variant or product (some exports and older payloads).
POSITION = "_position"


class _LineItemSchema(_Schema):
    id = _id(allow_none=True, load_default=None)
    position = fields.Integer(data_key=POSITION, allow_none=True, load_default=None)
    product_id = _id(allow_none=True, load_default=None)
    variant_id = _id(allow_none=True, load_default=None)
    sku = _text()
    title = _text()
    name = _text()
    variant_title = _text()
    price = _money(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=MAX_QUANTITY))
    taxable = fields.Boolean(load_default=True)
    gift_card = fields.Boolean(load_default=False)
    tip = fields.Raw(allow_none=True, load_default=None)
    # Only tip lines have this key (its value may be null), so its presence is what counts.
    tip_payment_gateway = fields.Raw(allow_none=True)
    tax_lines = fields.List(fields.Nested(_TaxLineSchema), load_default=list)
    discount_allocations = fields.List(fields.Nested(_DiscountAllocationSchema), load_default=list)

    @post_load
    def _to_line(self, data: dict[str, Any], **kwargs: Any) -> Line:
        return _item_line(data)


def _item_line(data: Mapping[str, Any]) -> Line:
    """The `Line` of one loaded line item; its key and description are what a refund of it matches on."""
    sku = (data["sku"] or "").strip()
    if sku:
        key = sku
    elif data["variant_id"]:
        key = f"shopify-variant-{data['variant_id']}"
    elif data["product_id"]:
        key = f"shopify-product-{data['product_id']}"
    elif data["id"]:
        key = f"shopify-line-{data['id']}"
    elif data["position"]:
        key = f"shopify-line-position-{data['position']}"
    else:
        # A refund's copy of a line that says nothing about which line it is: matched by nothing.
        raise ValidationError("the line has no id, SKU, variant, product or place in its order to be known by",
                              "id")
    title = (data["title"] or data["name"] or "").strip()
    variant = (data["variant_title"] or "").strip()
    tip = (
        data["tip"] is not None
        or "tip_payment_gateway" in data
        or ((data["name"] or title).lower() == "tip" and not data["product_id"])
    )
    if data["gift_card"]:
        # Shopify gift cards are multi-purpose vouchers: their sale is outside VAT (the VAT is
        # charged when the card is spent), so Shopify sells them untaxed. How such a line is
        # invoiced (exemption reason, or not at all) is the invoicing layer's decision.
        kind = "gift_card"
        tax_rate, tax_problem = _ZERO, None
        if any(t["price"] for t in data["tax_lines"]):
            tax_problem = "this gift card sale carries tax, but gift cards are sold outside VAT"
    else:
        kind = "tip" if tip else "product"
        tax_rate, tax_problem = _tax(data["tax_lines"], data["taxable"])
    return Line(
        key=key,
        description=f"{title} — {variant}" if variant else title,
        unit_price=data["price"],
        quantity=Decimal(data["quantity"]),
        tax_rate=tax_rate,
        discount=sum((a["amount"] for a in data["discount_allocations"]), _ZERO),
        kind=kind,
        tax_problem=tax_problem,
    )


class _ShippingLineSchema(_Schema):
    title = _text()
    price = _money(required=True)
    discounted_price = _money(allow_none=True, load_default=None)
    tax_lines = fields.List(fields.Nested(_TaxLineSchema), load_default=list)
    discount_allocations = fields.List(fields.Nested(_DiscountAllocationSchema), load_default=list)

    @post_load
    def _to_line(self, data: dict[str, Any], **kwargs: Any) -> Line | None:
        if not data["price"]:
            return None  # free shipping is not an invoice line
        discount = sum((a["amount"] for a in data["discount_allocations"]), _ZERO)
        if not data["discount_allocations"] and data["discounted_price"] is not None:
            # Older payloads show a shipping discount only as a lower discounted_price.
            discount = max(data["price"] - data["discounted_price"], _ZERO)
        tax_rate, tax_problem = _tax(data["tax_lines"])
        return Line(
            key="shipping",
            description=(data["title"] or "").strip() or "Shipping",
            unit_price=data["price"],
            quantity=Decimal(1),
            tax_rate=tax_rate,
            discount=discount,
            kind="shipping",
            tax_problem=tax_problem,
        )


def _full_name(first: str | None, last: str | None) -> str:
    return " ".join(part.strip() for part in (first, last) if part and part.strip())


class _AddressSchema(_Schema):
    name = _text()
    first_name = _text()
    last_name = _text()
    company = _text()
    address1 = _text()
    address2 = _text()
    city = _text()
    zip = _text()
    country_code = _text()

    @post_load
    def _clean(self, data: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        data = {k: (v or "").strip() for k, v in data.items()}
        data["name"] = data["name"] or _full_name(data["first_name"], data["last_name"])
        return data


class _CustomerSchema(_Schema):
    id = _id(allow_none=True, load_default=None)
    email = _text()
    first_name = _text()
    last_name = _text()

    @post_load
    def _clean(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["email"] = (data["email"] or "").strip()
        data["name"] = _full_name(data["first_name"], data["last_name"])
        return data


class _NoteAttributeSchema(_Schema):
    name = _text()
    value = fields.Raw(allow_none=True, load_default=None)


class _OrderSchema(_Schema):
    id = _id(required=True)
    name = _text()
    # ISO 4217 codes: IX takes them as `currency_code`, and the database keeps three letters.
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    presentment_currency = fields.String(allow_none=True, load_default=None,
                                         validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    total_price = _money(required=True)
    financial_status = _text()
    test = fields.Boolean(load_default=False)
    # Required: it decides whether every price is gross or net, so guessing would be wrong by the VAT.
    taxes_included = fields.Boolean(required=True)
    # Not a Shopify key: to_order puts the shop-currency total here, whichever side is loaded.
    shop_total_price = _money(data_key="total_price_set.shop_money", allow_none=True, load_default=None)
    processed_at = fields.String(allow_none=True, load_default=None)
    created_at = fields.String(allow_none=True, load_default=None)
    email = _text()
    contact_email = _text()
    customer = fields.Nested(_CustomerSchema, allow_none=True, load_default=None)
    billing_address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    shipping_address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    note_attributes = fields.List(fields.Nested(_NoteAttributeSchema), allow_none=True, load_default=list)
    line_items = fields.List(fields.Nested(_LineItemSchema), required=True, validate=validate.Length(min=1))
    shipping_lines = fields.List(fields.Nested(_ShippingLineSchema), allow_none=True, load_default=list)


_ORDER_SCHEMA = _OrderSchema()


# --- loading -----------------------------------------------------------------------------------------


class OrderLoadError(ValueError):
    """The payload is not an order we can invoice from; `messages` are marshmallow's, by field path.

    `to_refund` raises it too, with `what="refund"`: the payload is not a refund we can credit from.
    """

    def __init__(self, messages: dict, what: str = "order") -> None:
        self.messages = messages
        self.what = what
        super().__init__(messages)

    def __str__(self) -> str:
        # Messages name fields, never their values, so this line is safe to log.
        problems = "; ".join(f"{path}: {text}" for path, text in _flatten(self.messages, root=self.what))
        return f"Shopify {self.what} not loaded: {problems}"


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _flatten(messages: Any, path: str = "", root: str = "order") -> list[tuple[str, str]]:
    if isinstance(messages, Mapping):
        return [item for key, sub in messages.items() for item in _flatten(sub, _join(path, key), root)]
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path or root, " ".join(messages))]
    if isinstance(messages, list):
        return [item for m in messages for item in _flatten(m, path, root)]
    return [(path or root, str(messages))]


def _fold(text: str) -> str:
    """Lower-case, accents and outer spaces removed: 'Número de Contribuinte ' → 'numero de contribuinte'."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _tax_id_attribute(note_attributes: Sequence[Mapping[str, Any]], keys: Sequence[str],
                      country: str) -> str | None:
    """The tax number in the shop's tax-number attribute: the valid number written in it ("NIF: 501 964
    843"), else the value as typed, so that an invalid number is reported as such rather than lost."""
    wanted = {_fold(k) for k in keys}
    for attribute in note_attributes:
        value = attribute["value"]
        if _fold(attribute["name"] or "") in wanted and value is not None and str(value).strip():
            return fiscal.find_tax_id(str(value), country) or str(value).strip()
    return None


def _customer(data: Mapping[str, Any], order_id: int, tax_id_keys: Sequence[str]) -> Customer:
    # Personal data: never log anything built here.
    buyer = data["customer"] or {}
    billing = data["billing_address"]
    address = billing or data["shipping_address"] or {}
    email = ((data["email"] or data["contact_email"] or buyer.get("email") or "").strip()) or None
    if buyer.get("id"):
        key = f"shopify-customer-{buyer['id']}"
    elif email:
        key = f"shopify-email-{hashlib.sha256(email.lower().encode()).hexdigest()[:16]}"
    else:
        key = f"shopify-order-{order_id}"
    # The country the number is checked against, as the invoice plan will check it.
    country = address.get("country_code", "").upper() or _ship_to_country(data) or "PT"
    return Customer(
        key=key,
        # '' lets the invoicing layer decide on "Consumidor final".
        name=(billing or {}).get("name") or buyer.get("name", ""),
        email=email,
        company=(billing or {}).get("company") or None,
        address=Address(
            line1=address.get("address1", ""),
            line2=address.get("address2", ""),
            city=address.get("city", ""),
            postal_code=address.get("zip", ""),
            country_code=address.get("country_code", "").upper(),
        ),
        # The cart attribute the shop collects it in, else a number the buyer wrote in a company field.
        tax_id=_tax_id_attribute(data["note_attributes"] or [], tax_id_keys, country)
        or fiscal.find_tax_id((billing or {}).get("company", ""), country)
        or fiscal.find_tax_id((data["shipping_address"] or {}).get("company", ""), country),
    )


def _ship_to_country(data: Mapping[str, Any]) -> str | None:
    """Where the goods go: the shipping address's country, else the billing address's."""
    for address in (data["shipping_address"], data["billing_address"]):
        if address and address["country_code"]:
            return address["country_code"].upper()
    return None


def _with_positions(items: Any) -> Any:
    """`items` (an order's `line_items`) with each line's place in the list, as `POSITION`."""
    if not isinstance(items, list):
        return items  # the schema reports it
    return [{**item, POSITION: place} if isinstance(item, Mapping) else item
            for place, item in enumerate(items, start=1)]


def to_order(
    payload: Mapping,
    *,
    store: str,
    tax_id_keys: Sequence[str] = DEFAULT_TAX_ID_KEYS,
    money: Literal["presentment", "shop"] = "presentment",
) -> Order:
    """Load an order webhook body (orders/paid, orders/create…) into an `Order`.

    `money` picks the currency every amount is loaded in: "presentment" (default), what the customer
    paid in; "shop", the store's accounting currency (see the module docstring).

    Raises:
        OrderLoadError: the payload is not a well-formed Shopify order.
        ValueError: `money` is neither "presentment" nor "shop".
    """
    if money not in MONEY_SIDES:
        raise ValueError(f"money must be one of {', '.join(MONEY_SIDES)}, not {money!r}")
    payload = printable(payload)
    prepared = _with_amounts(payload, MONEY_SIDES[money])
    if isinstance(payload, Mapping) and isinstance(prepared, dict):
        prepared["total_price_set.shop_money"] = _shop_amount(payload, "total_price")
        prepared["line_items"] = _with_positions(prepared.get("line_items"))
    try:
        data = _ORDER_SCHEMA.load(prepared)
    except ValidationError as error:
        raise OrderLoadError(error.normalized_messages()) from None
    shipping = [line for line in data["shipping_lines"] or [] if line is not None]
    shop_currency = data["currency"].upper()
    currency = shop_currency if money == "shop" else (data["presentment_currency"] or shop_currency).upper()
    return Order(
        platform="shopify",
        store=store,
        order_id=str(data["id"]),
        name=data["name"] or "",
        currency=currency,
        taxes_included=data["taxes_included"],
        total=data["total_price"],
        financial_status=data["financial_status"] or "",
        customer=_customer(data, data["id"], tax_id_keys),
        lines=(*data["line_items"], *shipping),
        test=data["test"],
        created_at=data["processed_at"] or data["created_at"],
        shop_currency=shop_currency,
        shop_total=data["shop_total_price"],
        ship_to_country=_ship_to_country(data),
    )


# --- refunds -----------------------------------------------------------------------------------------
#
# A `refunds/create` body is the refund object itself; an order's `refunds[]` holds the same objects.
# What was given back per line: `refund_line_items[{quantity, subtotal, total_tax, line_item{…}}]`,
# whose `subtotal` is in the order's price basis (tax included when the order's `taxes_included` is
# true, net otherwise; see `to_refund`). Shipping: `refund_shipping_lines[{subtotal_amount, tax_amount,
# shipping_line{…}}]` since API 2024-10; before that an `order_adjustments` entry of kind
# "shipping_refund" with negative `amount` and `tax_amount`, the tax documented as added to the amount
# but inside it in some payloads (see `_shipping_readings`); payloads of the newer versions may carry
# both for the same shipping: the adjustment is then only read for the tax. The money that actually
# went back: the `transactions` of kind "refund" and status "success".

_CENT = Decimal("0.01")
# How far a tax may be from rate × amount and still be read as that rate: Shopify rounds each line's
# tax to the cent and splits a line's tax between its units, so a refunded part can be off by a cent.
_TAX_SLACK = Decimal("0.02")


def _signed_money(**kwargs: Any) -> fields.Decimal:
    # Order adjustments are negative when money goes back; bounded like every other amount.
    return fields.Decimal(validate=validate.Range(min=-MAX_AMOUNT, max=MAX_AMOUNT), allow_nan=False, **kwargs)


class _RefundedItemSchema(_LineItemSchema):
    """The order line a refund line points at, loaded exactly as `to_order` loads it."""

    @post_load
    def _to_line(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        taxes = [t for t in data["tax_lines"] if t["rate"] or t["price"]]
        discount = sum((a["amount"] for a in data["discount_allocations"]), _ZERO)
        return {
            "id": data["id"],
            "line": _item_line(data),
            # What telling a gross price from a net one needs: the whole line, its tax and its rate.
            "base": data["price"] * data["quantity"] - discount,
            "tax": sum((t["price"] for t in taxes), _ZERO),
            "rate": sum((t["rate"] for t in taxes), _ZERO),
            "quantity": data["quantity"],
        }


class _RefundLineItemSchema(_Schema):
    line_item_id = _id(allow_none=True, load_default=None)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=MAX_QUANTITY))
    subtotal = _money(required=True)
    total_tax = _money(required=True)
    # Required: the key and the VAT rate come from it, and without them the credit matches nothing.
    line_item = fields.Nested(_RefundedItemSchema, required=True)

    @post_load
    def _same_line(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        carried = data["line_item"]["id"]
        if data["line_item_id"] is not None and carried is not None and data["line_item_id"] != carried:
            raise ValidationError("line_item_id is not the id of the line_item it carries", "line_item_id")
        return data


class _RefundedShippingSchema(_Schema):
    title = _text()
    price = _money(allow_none=True, load_default=None)
    tax_lines = fields.List(fields.Nested(_TaxLineSchema), load_default=list)


class _RefundShippingLineSchema(_Schema):
    subtotal_amount = _money(required=True)
    tax_amount = _money(allow_none=True, load_default=None)  # not every API version sends it
    shipping_line = fields.Nested(_RefundedShippingSchema, allow_none=True, load_default=None)


class _OrderAdjustmentSchema(_Schema):
    kind = _text()
    amount = _signed_money(required=True)
    tax_amount = _signed_money(allow_none=True, load_default=None)


class _TransactionSchema(_Schema):
    kind = _text()
    status = _text()
    amount = _money(required=True)
    currency = fields.String(allow_none=True, load_default=None, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    # Present when Shopify sends the amount in both currencies; then `amount` is already the side asked for.
    amount_set = fields.Raw(allow_none=True, load_default=None)


class _RefundSchema(_Schema):
    id = _id(required=True)
    order_id = _id(required=True)
    order_name = _text()
    name = _text()
    processed_at = fields.String(allow_none=True, load_default=None)
    created_at = fields.String(allow_none=True, load_default=None)
    refund_line_items = fields.List(fields.Nested(_RefundLineItemSchema), allow_none=True, load_default=list)
    refund_shipping_lines = fields.List(fields.Nested(_RefundShippingLineSchema), allow_none=True,
                                        load_default=list)
    order_adjustments = fields.List(fields.Nested(_OrderAdjustmentSchema), allow_none=True, load_default=list)
    # None when the payload has no `transactions` at all, [] when it says no money moved.
    transactions = fields.List(fields.Nested(_TransactionSchema), allow_none=True, load_default=None)


_REFUND_SCHEMA = _RefundSchema()


def _refund_error(message: str, path: str = "refund") -> OrderLoadError:
    return OrderLoadError({path: [message]}, what="refund")


def _load_refund(payload: Any, side: str) -> dict[str, Any]:
    try:
        return _REFUND_SCHEMA.load(_with_amounts(payload, side))
    except ValidationError as error:
        raise OrderLoadError(error.normalized_messages(), what="refund") from None


def _set_currency(node: Any, side: str) -> str | None:
    """The currency code of `side` in the first money set of `node` that names one."""
    if isinstance(node, list):
        return next((code for item in node if (code := _set_currency(item, side))), None)
    if not isinstance(node, Mapping):
        return None
    for key, value in node.items():
        if isinstance(key, str) and key.endswith("_set") and isinstance(value, Mapping):
            money = value.get(side)
            code = money.get("currency_code") if isinstance(money, Mapping) else None
            if isinstance(code, str) and re.fullmatch(r"[A-Za-z]{3}", code):
                return code.upper()
    return next((code for value in node.values() if (code := _set_currency(value, side))), None)


def _shipping_parts(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each shipping refund as {amount, tax, taxes (the shipping line's tax lines, or None), title, source}.

    `source` is "line" (a refund shipping line, whose amount is in the order's price basis) or
    "adjustment" (a shipping_refund order adjustment, whose tax Shopify documents as added to its amount).
    """
    adjustments = [a for a in data["order_adjustments"] or [] if a["kind"] == "shipping_refund"]
    adjusted_tax = sum((abs(a["tax_amount"] or _ZERO) for a in adjustments), _ZERO)
    parts = []
    refunded = data["refund_shipping_lines"] or []
    for entry in refunded:
        shipping = entry["shipping_line"] or {}
        tax = entry["tax_amount"]
        if tax is None and len(refunded) == 1 and adjustments:
            tax = adjusted_tax  # the same shipping, as the pre-2024-10 adjustment also tells it
        if tax is None and shipping.get("price"):
            # Its share of the shipping line's tax, as Shopify splits a line's tax.
            whole = sum((t["price"] for t in shipping["tax_lines"]), _ZERO)
            tax = (whole * entry["subtotal_amount"] / shipping["price"]).quantize(_CENT)
        parts.append({
            "amount": entry["subtotal_amount"],
            "tax": tax or _ZERO,
            "taxes": shipping.get("tax_lines") or None,
            "title": (shipping.get("title") or "").strip() or "Shipping",
            "source": "line",
        })
    if not refunded:
        for adjustment in adjustments:
            parts.append({
                "amount": abs(adjustment["amount"]),
                "tax": abs(adjustment["tax_amount"] or _ZERO),
                "taxes": None,
                "title": "Shipping",
                "source": "adjustment",
            })
    if any(part["tax"] and part["tax"] >= part["amount"] for part in parts):
        # Not even a tax added to its amount would be as large as the amount: no reading makes sense.
        raise _refund_error("a shipping refund's tax is not less than the shipping refunded", "shipping")
    return parts


def _shipping_readings(part: Mapping[str, Any], included: bool, basis_only: bool = False) -> tuple[Decimal, ...]:
    """The two ways a shipping refund can be read, as its gross (tax included): the documented one first.

    A refund shipping line is in the order's price basis; an adjustment's tax is added to its amount
    (Shopify's Refund docs: "the taxes that are added to amount"), yet some payloads carry an amount
    that already holds its tax. Which one a refund uses is what makes it add up to its transactions.
    `basis_only`: a shipping line read in the order's basis alone (for telling that basis from the money).
    """
    inside, added = part["amount"], part["amount"] + part["tax"]
    if part["source"] == "adjustment":
        return added, inside
    readings = (inside, added) if included else (added, inside)
    return readings[:1] if basis_only else readings


def _discrepancy(data: Mapping[str, Any]) -> Decimal:
    """Σ refund_discrepancy adjustments: what Shopify says the refund paid back less than its lines."""
    return sum((a["amount"] for a in data["order_adjustments"] or [] if a["kind"] == "refund_discrepancy"),
               _ZERO)


def _items_total(data: Mapping[str, Any], included: bool) -> Decimal:
    items = data["refund_line_items"] or []
    return sum((i["subtotal"] if included else i["subtotal"] + i["total_tax"] for i in items), _ZERO)


def _reading_that_adds_up(data: Mapping[str, Any], parts: Sequence[Mapping[str, Any]], included: bool,
                          refunded: Decimal, basis_only: bool = False) -> tuple[int, ...] | None:
    """Which reading of each shipping part makes the refund's lines add up to `refunded`; None if none does.

    Lines add up when their sum is the money refunded, or that money plus the refund's own discrepancy
    adjustments (a refund that kept some money back says so in one).
    """
    base = _items_total(data, included)
    targets = (refunded, refunded + _discrepancy(data))
    readings = [_shipping_readings(part, included, basis_only) for part in parts]
    for choice in itertools.product(*(range(len(r)) for r in readings)):
        total = base + sum((reading[pick] for reading, pick in zip(readings, choice, strict=True)), _ZERO)
        if any(abs(total - target) <= _CENT for target in targets):
            return choice
    return None


def _shipping_choice(data: Mapping[str, Any], included: bool, refunded: Decimal | None) -> tuple[int, ...]:
    """The reading of each shipping part (see `_shipping_readings`) the refund's lines are built with.

    The one that adds up to the money refunded; else the one whose tax is a Portuguese VAT rate (or a
    rate of the refund's own lines) of its amount; else the documented one, whose odd rate then holds
    the credit note for a person to look at.
    """
    parts = _shipping_parts(data)
    if refunded is not None and (choice := _reading_that_adds_up(data, parts, included, refunded)) is not None:
        return choice
    known = {item["line_item"]["line"].tax_rate for item in data["refund_line_items"] or []}
    choice = []
    for part in parts:
        readings = _shipping_readings(part, included)
        plausible = [pick for pick, gross in enumerate(readings) if _fits_a_rate(part, gross, known)]
        choice.append(plausible[0] if plausible else 0)
    return tuple(choice)


def _fits_a_rate(part: Mapping[str, Any], gross: Decimal, known: set[Decimal]) -> bool:
    """Whether the shipping part's tax is, to the cent, some VAT rate of `gross` we expect to see."""
    taxes = [t for t in part["taxes"] or [] if t["rate"] or t["price"]]
    rates = {_percent(t["rate"]) for t in taxes} if taxes else known | fiscal.VAT_RATES
    if not part["tax"]:
        return True
    return any(abs(gross * rate / (100 + rate) - part["tax"]) <= _CENT for rate in rates if rate)


def _reads_as(amount: Decimal, tax: Decimal, rate: Decimal) -> bool | None:
    """Whether `tax` at the fraction `rate` says `amount` includes it (True) or not (False); None: can't tell."""
    if amount <= 0 or tax <= 0 or rate <= 0:
        return None
    included = abs(tax - amount * rate / (1 + rate)) <= _TAX_SLACK
    excluded = abs(tax - amount * rate) <= _TAX_SLACK
    return included if included != excluded else None


def _taxes_included(data: Mapping[str, Any], shipping: list[dict[str, Any]], refunded: Decimal | None) -> bool:
    """Whether the refund's subtotals include their tax, read from the refund itself.

    The refund object does not carry its order's `taxes_included`; its amounts do: a line's tax is
    either rate/(1 + rate) of a gross amount or rate × a net one, and the money refunded is either
    Σ subtotals or Σ subtotals + Σ taxes. Any line that tells, or the transactions, decide; when
    nothing tells, or the evidence disagrees, the caller must say (`taxes_included=`).
    """
    items = data["refund_line_items"] or []
    votes = set()
    for item in items:
        line = item["line_item"]
        for amount, tax in ((line["base"], line["tax"]), (item["subtotal"], item["total_tax"])):
            votes.add(_reads_as(amount, tax, line["rate"]))
    for part in shipping:
        taxes = [t for t in part["taxes"] or [] if t["rate"] or t["price"]]
        if len(taxes) == 1:
            votes.add(_reads_as(part["amount"], part["tax"], taxes[0]["rate"]))
    tax = sum((i["total_tax"] for i in items), _ZERO) + sum((p["tax"] for p in shipping), _ZERO)
    if refunded is not None and tax > _CENT:
        adds_up = {flag for flag in (True, False)
                   if _reading_that_adds_up(data, shipping, flag, refunded, basis_only=True) is not None}
        if len(adds_up) == 1:
            votes.add(adds_up.pop())
    votes.discard(None)
    if len(votes) == 1:
        return votes.pop()
    if not tax or not any(i["total_tax"] for i in items) and all(
            p["source"] == "adjustment" or not p["tax"] for p in shipping):
        return False  # nothing taxed is in the order's basis: both readings give the same amounts
    if votes:
        raise _refund_error("its amounts read partly as tax-included and partly as tax-excluded; "
                            "load it with taxes_included from its order", "taxes_included")
    raise _refund_error("cannot tell whether its amounts include tax; load it with taxes_included "
                        "from its order", "taxes_included")


def _shipping_rate(part: Mapping[str, Any], gross: Decimal, known: Sequence[Decimal]) -> Decimal:
    """The VAT percentage of a refunded shipping amount (`gross`, tax included)."""
    if part["taxes"] is not None:
        return _tax(part["taxes"])[0]
    tax = part["tax"]
    if not tax:
        return _ZERO
    net = gross - tax
    if net <= 0:
        raise _refund_error("a shipping refund's tax is not less than the shipping refunded", "shipping")
    implied = tax / net * 100

    def fits(percent: Decimal) -> bool:
        return abs(gross * percent / (100 + percent) - tax) <= _CENT

    # A rate of the refund's own lines first (shipping follows the goods' rate), then whole and tenth percents.
    for percent in known:
        if percent and fits(percent):
            return percent
    for step in (Decimal(1), Decimal("0.1")):
        candidates = [c for c in ((implied / step).to_integral_value() * step + k * step for k in (-1, 0, 1))
                      if c > 0 and fits(c)]
        if candidates:
            return _percent(min(candidates, key=lambda c: abs(c - implied)) / 100)
    return _percent((implied / 100).quantize(Decimal("0.0001")))


def _refunded_money(data: Mapping[str, Any], side: str, shop: str | None, buyer: str | None,
                    lines_here: Decimal, lines_there: Any) -> tuple[Decimal | None, str | None]:
    """Σ successful refund transactions in the money of `side`, and their currency (None: no transactions).

    A transaction without an `amount_set` is in its own `currency`: when that is the other side's,
    it is converted at the refund's own rate (Σ lines on this side / Σ lines on the other).
    """
    transactions = data["transactions"]
    if transactions is None:
        return None, None
    here, there = (buyer, shop) if side == "presentment_money" else (shop, buyer)
    total, currencies = _ZERO, set()
    for transaction in transactions:
        if transaction["kind"] != "refund" or transaction["status"] != "success":
            continue  # authorisations voided, pending or failed refunds: no money went back
        amount = transaction["amount"]
        money = transaction["amount_set"].get(side) if isinstance(transaction["amount_set"], Mapping) else None
        currency = (transaction["currency"] or "").upper() or None
        if isinstance(money, Mapping) and money.get("amount") is not None:
            currency = here or currency
        elif currency and here and there and currency != here and currency == there:
            there_total = lines_there()
            if not there_total:
                raise _refund_error(f"its transactions are in the other currency of the order and it has no "
                                    f"lines to convert them by; load it with money="
                                    f"{'shop' if side == 'presentment_money' else 'presentment'}", "transactions")
            amount = (amount * lines_here / there_total).quantize(_CENT)
            currency = here
        currencies.add(currency)
        total += amount
    currencies.discard(None)
    if len(currencies) > 1:
        raise _refund_error("its refund transactions are in different currencies", "transactions")
    return total, (currencies.pop() if currencies else None)


def _lines_of(data: Mapping[str, Any], included: bool, choice: Sequence[int]) -> list[RefundLine]:
    """The refund's lines, tax included; `choice` picks each shipping part's reading (`_shipping_choice`)."""
    lines = []
    for item in data["refund_line_items"] or []:
        line = item["line_item"]["line"]
        lines.append(RefundLine(
            key=line.key,
            description=line.description,
            quantity=Decimal(item["quantity"]),
            amount=item["subtotal"] if included else item["subtotal"] + item["total_tax"],
            tax_rate=line.tax_rate,
        ))
    known = list(dict.fromkeys(line.tax_rate for line in lines))
    for part, pick in zip(_shipping_parts(data), choice, strict=True):
        amount = _shipping_readings(part, included)[pick]
        lines.append(RefundLine(
            key="shipping",
            description=part["title"],
            quantity=Decimal(1),
            amount=amount,
            tax_rate=_shipping_rate(part, amount, known),
            kind="shipping",
        ))
    return lines


def _with_order(payload: Any, order: Any) -> tuple[Any, str | None, bool | None]:
    """`payload` with each refund line lacking its `line_item` given the order's, the order's name and flag."""
    if not isinstance(payload, Mapping) or not isinstance(order, Mapping):
        return payload, None, None
    if order.get("id") != payload.get("order_id"):
        raise _refund_error("the order given is not the one the refund belongs to", "order_id")
    placed = _with_positions(order.get("line_items"))
    placed = [item for item in placed if isinstance(item, Mapping)] if isinstance(placed, list) else []
    by_id = {item["id"]: item for item in placed if item.get("id") is not None}
    items = payload.get("refund_line_items")
    if isinstance(items, list):
        items = [_matched(item, by_id, placed) for item in items]
        payload = {**payload, "refund_line_items": items}
    flag = order.get("taxes_included")
    name = order.get("name")
    return payload, (name if isinstance(name, str) else None), (flag if isinstance(flag, bool) else None)


def _same_item(one: Mapping, other: Mapping) -> bool:
    """Whether two copies of a line item without ids describe the same line of the order."""
    fields_ = ("variant_id", "product_id", "sku", "title", "name", "variant_title", "price", "quantity")
    return all((one.get(name) or None) == (other.get(name) or None) for name in fields_)


def _matched(item: Any, by_id: Mapping[Any, Mapping], placed: Sequence[Mapping]) -> Any:
    """A refund line with the order's own line item: by its id, else (no ids) the one line equal to it."""
    if not isinstance(item, Mapping):
        return item
    carried = item.get("line_item")
    wanted = item.get("line_item_id")
    if carried is None:
        return {**item, "line_item": by_id[wanted]} if wanted in by_id else item
    if not isinstance(carried, Mapping):
        return item
    if carried.get("id") is not None and carried["id"] in by_id:
        return {**item, "line_item": {**carried, POSITION: by_id[carried["id"]][POSITION]}}
    if carried.get("id") is None and wanted in by_id:  # a trimmed copy: the order's line is the one named
        return {**item, "line_item": {**carried, "id": wanted, POSITION: by_id[wanted][POSITION]}}
    same = [line for line in placed if line.get("id") is None and _same_item(line, carried)]
    if carried.get("id") is None and len(same) == 1:
        return {**item, "line_item": {**carried, POSITION: same[0][POSITION]}}
    return item


def to_refund(
    payload: Mapping,
    *,
    store: str,
    money: Literal["presentment", "shop"] = "presentment",
    taxes_included: bool | None = None,
    order: Mapping | None = None,
) -> Refund:
    """Load a refund (the `refunds/create` body, or one entry of an order's `refunds[]`) into a `Refund`.

    Each refunded line item becomes a `RefundLine` with the key, description and VAT rate `to_order`
    gives that line, so it matches the invoice's item; each shipping refund a "shipping" line. Amounts
    are tax included, on the `money` side (as in `to_order`). `Refund.amount` is the money that went
    back: Σ successful refund transactions (Σ lines when the payload has no `transactions` at all, 0
    when it has an empty list: e.g. an order edit that took items off without paying anything back).
    Less than Σ lines: the difference is `restocking_fee`. More: an "adjustment" line holds the excess.

    `taxes_included`: the order's own flag. Shopify's refund subtotals are in the order's price basis
    (gross when the order's prices include tax) and the refund does not repeat the flag, so pass it
    when the order is at hand; None reads it from the refund's amounts, and fails when they can't tell.

    `order`: the raw payload of the refund's order (an orders/* body), when at hand, e.g. for the
    entries of its own `refunds[]`. Refund lines without their nested `line_item` (trimmed payloads)
    are then found in its `line_items`, and its `taxes_included` and `name` are used.

    Raises:
        OrderLoadError: the payload is not a well-formed Shopify refund (its `what` is "refund").
        ValueError: `money` is neither "presentment" nor "shop".
    """
    if money not in MONEY_SIDES:
        raise ValueError(f"money must be one of {', '.join(MONEY_SIDES)}, not {money!r}")
    payload = printable(payload)
    order_name = None
    if order is not None:
        payload, order_name, order_taxes_included = _with_order(payload, printable(order))
        taxes_included = order_taxes_included if taxes_included is None else taxes_included
    side = MONEY_SIDES[money]
    other = "shop_money" if side == "presentment_money" else "presentment_money"
    shop, buyer = _set_currency(payload, "shop_money"), _set_currency(payload, "presentment_money")
    data = _load_refund(payload, side)
    # How the refund is read (tax basis, shipping readings) is decided on the buyer's side, with the
    # transactions only when they are plainly in the buyer's money, and then applied to either side.
    seen = data if side == "presentment_money" else _load_refund(payload, "presentment_money")
    foreign = [t for t in seen["transactions"] or [] if not t["amount_set"] and buyer
               and (t["currency"] or buyer).upper() != buyer]
    seen_refunded = None
    if not foreign:
        seen_refunded, _ = _refunded_money(seen, "presentment_money", None, None, _ZERO, lambda: _ZERO)
    if taxes_included is None:
        taxes_included = _taxes_included(seen, _shipping_parts(seen), seen_refunded)
    choice = _shipping_choice(seen, taxes_included, seen_refunded)
    lines = _lines_of(data, taxes_included, choice)
    lines_total = sum((line.amount for line in lines), _ZERO)

    def lines_there() -> Decimal:
        there = _lines_of(_load_refund(payload, other), taxes_included, choice)
        return sum((line.amount for line in there), _ZERO)

    refunded, currency = _refunded_money(data, side, shop, buyer, lines_total, lines_there)
    currency = currency or (buyer if side == "presentment_money" else shop)
    amount = lines_total if refunded is None else refunded
    kept = max(lines_total - amount, _ZERO).quantize(_CENT)
    excess = (amount - lines_total).quantize(_CENT)
    if excess > 0:
        lines.append(RefundLine(
            key="refund-adjustment",
            description="Refund adjustment",
            quantity=Decimal(1),
            amount=excess,
            tax_rate=_ZERO,
            kind="adjustment",
        ))
    return Refund(
        platform="shopify",
        store=store,
        refund_id=str(data["id"]),
        order_id=str(data["order_id"]),
        order_name=(data["order_name"] or data["name"] or order_name or "").strip() or None,
        currency=currency,
        lines=tuple(lines),
        amount=amount,
        restocking_fee=kept,
        created_at=data["processed_at"] or data["created_at"],
    )
