"""Shopify orders: an `orders/*` payload loaded into an `Order`.

Money: every Shopify amount `x` comes with `x_set`, the same figure in two currencies.
`to_order(money="presentment")` (the default) takes `presentment_money`, what the customer saw and
paid, in the currency they paid in: an invoice-receipt states what the customer was charged.
`money="shop"` takes `shop_money`, the store's own accounting currency (the order's `currency`), for
a store that invoices in its own currency whatever the buyer paid in. Either way the order also
carries its total in the shop currency (`Order.shop_total`), from which the exchange rate follows.
`to_refund` takes the same `money` choice, so a refund's lines are in the same money as its order's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from marshmallow import ValidationError, fields, post_load, validate

from connector import fiscal
from connector.orders import Address, Customer, Line, Order, printable
from connector.platforms import common
from connector.platforms.common import LoadError

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


def load_error(messages: dict, what: str = "order") -> LoadError:
    """The load error of a Shopify payload that is not the order (or refund) it should be."""
    return LoadError(messages, what=what, platform="Shopify")


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


class _TaxLineSchema(common.LenientSchema):
    title = common.text()
    rate = fields.Decimal(required=True, validate=validate.Range(min=0, max=1))  # a fraction: 0.23 for 23 %
    price = common.money(required=True)


class _DiscountAllocationSchema(common.LenientSchema):
    amount = common.money(required=True)


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


class _LineItemSchema(common.LenientSchema):
    id = common.identifier(allow_none=True, load_default=None)
    position = fields.Integer(data_key=POSITION, allow_none=True, load_default=None)
    product_id = common.identifier(allow_none=True, load_default=None)
    variant_id = common.identifier(allow_none=True, load_default=None)
    sku = common.text()
    title = common.text()
    name = common.text()
    variant_title = common.text()
    price = common.money(required=True)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=common.MAX_QUANTITY))
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


class _ShippingLineSchema(common.LenientSchema):
    title = common.text()
    price = common.money(required=True)
    discounted_price = common.money(allow_none=True, load_default=None)
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


class _AddressSchema(common.LenientSchema):
    name = common.text()
    first_name = common.text()
    last_name = common.text()
    company = common.text()
    address1 = common.text()
    address2 = common.text()
    city = common.text()
    zip = common.text()
    country_code = common.text()

    @post_load
    def _clean(self, data: dict[str, Any], **kwargs: Any) -> dict[str, str]:
        data = {k: (v or "").strip() for k, v in data.items()}
        data["name"] = data["name"] or _full_name(data["first_name"], data["last_name"])
        return data


class _CustomerSchema(common.LenientSchema):
    id = common.identifier(allow_none=True, load_default=None)
    email = common.text()
    first_name = common.text()
    last_name = common.text()

    @post_load
    def _clean(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        data["email"] = (data["email"] or "").strip()
        data["name"] = _full_name(data["first_name"], data["last_name"])
        return data


class _NoteAttributeSchema(common.LenientSchema):
    name = common.text()
    value = fields.Raw(allow_none=True, load_default=None)


class _OrderSchema(common.LenientSchema):
    id = common.identifier(required=True)
    name = common.text()
    # ISO 4217 codes: IX takes them as `currency_code`, and the database keeps three letters.
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    presentment_currency = fields.String(allow_none=True, load_default=None,
                                         validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    total_price = common.money(required=True)
    financial_status = common.text()
    test = fields.Boolean(load_default=False)
    # Required: it decides whether every price is gross or net, so guessing would be wrong by the VAT.
    taxes_included = fields.Boolean(required=True)
    # Not a Shopify key: to_order puts the shop-currency total here, whichever side is loaded.
    shop_total_price = common.money(data_key="total_price_set.shop_money", allow_none=True, load_default=None)
    processed_at = fields.String(allow_none=True, load_default=None)
    created_at = fields.String(allow_none=True, load_default=None)
    email = common.text()
    contact_email = common.text()
    customer = fields.Nested(_CustomerSchema, allow_none=True, load_default=None)
    billing_address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    shipping_address = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    note_attributes = fields.List(fields.Nested(_NoteAttributeSchema), allow_none=True, load_default=list)
    line_items = fields.List(fields.Nested(_LineItemSchema), required=True, validate=validate.Length(min=1))
    shipping_lines = fields.List(fields.Nested(_ShippingLineSchema), allow_none=True, load_default=list)


_ORDER_SCHEMA = _OrderSchema()


def _tax_id_attribute(note_attributes: Sequence[Mapping[str, Any]], keys: Sequence[str],
                      country: str) -> str | None:
    """The tax number in the shop's tax-number attribute: the valid number written in it ("NIF: 501 964
    843"), else the value as typed, so that an invalid number is reported as such rather than lost."""
    wanted = {common.fold(k) for k in keys}
    for attribute in note_attributes:
        value = attribute["value"]
        if common.fold(attribute["name"] or "") in wanted and value is not None and str(value).strip():
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
    settings: Any = None,
) -> Order:
    """Load an order webhook body (orders/paid, orders/create…) into an `Order`.

    `settings` is accepted for the interface's sake: a Shopify order says all it owes itself.

    `tax_id_keys`: the cart attributes a tax number is looked for in (empty: `DEFAULT_TAX_ID_KEYS`).
    `money` picks the currency every amount is loaded in: "presentment" (default), what the customer
    paid in; "shop", the store's accounting currency (see the module docstring).

    Raises:
        LoadError: the payload is not a well-formed Shopify order.
        ValueError: `money` is neither "presentment" nor "shop".
    """
    if money not in MONEY_SIDES:
        raise ValueError(f"money must be one of {', '.join(MONEY_SIDES)}, not {money!r}")
    tax_id_keys = tax_id_keys or DEFAULT_TAX_ID_KEYS
    payload = printable(payload)
    prepared = _with_amounts(payload, MONEY_SIDES[money])
    if isinstance(payload, Mapping) and isinstance(prepared, dict):
        prepared["total_price_set.shop_money"] = _shop_amount(payload, "total_price")
        prepared["line_items"] = _with_positions(prepared.get("line_items"))
    try:
        data = _ORDER_SCHEMA.load(prepared)
    except ValidationError as error:
        raise load_error(error.normalized_messages()) from None
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
