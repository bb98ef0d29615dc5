"""WooCommerce orders: what an order state means (paid, cancelled, refunds), and the REST order as an `Order`.

Money: WooCommerce keeps every line's `subtotal` (before coupons) and `total` (after) without tax, the
tax beside them in `subtotal_tax` / `total_tax`, whether the shop enters its prices with tax or not
(`prices_include_tax` only says how they were entered). The `Order` is built in the basis the shop
entered: gross lines (amount + tax) for a tax-inclusive shop, net lines otherwise, so that what the
invoice shows per unit is the price the shop shows. Either way each line comes to exactly what
WooCommerce charged for it, and the lines add up to the order's `total`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import ValidationError, fields, pre_load, validate

from connector import fiscal
from connector.orders import Address, Customer, Line, Order, printable
from connector.platforms import common

PLATFORM = "WooCommerce"

# The order meta keys Portuguese NIF plugins keep the buyer's tax number in (compared folded).
DEFAULT_TAX_ID_KEYS = ("_billing_nif", "billing_nif", "_billing_vat", "vat_number")

DEFAULT_PAID_STATUSES = ("processing", "completed")
CANCELLED = "cancelled"
REFUNDED = "refunded"

_ZERO = Decimal(0)
_CENT = Decimal("0.01")
# How far a line's tax may be from rate × amount and still be read as that rate: WooCommerce rounds
# each line's tax to the cent.
_TAX_SLACK = Decimal("0.01")


# --- what an order state means ------------------------------------------------------------------------

_NOT_PAID = {
    "pending": "is pending payment: nothing is invoiced until it is paid.",
    "on-hold": "is on hold: nothing is invoiced until it is paid.",
    "failed": "has a failed payment: nothing is invoiced until it is paid.",
    "draft": "is a draft, not a placed order: nothing is invoiced.",
    "checkout-draft": "is a checkout that was never completed: nothing is invoiced.",
    "trash": "is in the trash: nothing is invoiced.",
}


def changes(payload: Any, topic: str, settings: Any) -> list[common.Change]:
    """What one WooCommerce delivery means for invoicing: a sale, refunds, a cancellation, or nothing (and why).

    Paid means a status the store counts as paid (`settings.paid_statuses`) *and* a payment date:
    a "completed" order paid by bank transfer may never have been paid. A refunded order is a sale
    and its refunds, since its credit notes need the invoice they correct. Never raises: a malformed
    order still says what it is, and `to_order` gives the clear reason later.
    """
    if not topic.startswith("order."):
        return [_none(f"WooCommerce's '{printable(topic) or 'unnamed'}' webhook is not about an order: "
                      "nothing is invoiced.")]
    # Its values go into the reasons people read and the database keeps (no lone surrogate, no control character).
    payload = printable(payload)
    if not isinstance(payload, Mapping) or not _is_id(payload.get("id")):
        return [_none("The WooCommerce payload is not an order: nothing is invoiced.")]
    order_id = str(payload["id"])
    if topic == "order.deleted":
        return [common.Change(kind="cancellation", order_id=order_id)]
    status = payload.get("status")
    if not isinstance(status, str) or not isinstance(payload.get("line_items"), list):
        return [_none("The WooCommerce payload is not an order (it has no status or lines): nothing is invoiced.")]
    label = _label(payload)
    refunds = [common.Change(kind="refund", order_id=order_id, refund_id=refund_id)
               for refund_id in _refund_ids(payload)]
    paid_on = payload.get("date_paid_gmt") or payload.get("date_paid")
    statuses = tuple(getattr(settings, "paid_statuses", None) or DEFAULT_PAID_STATUSES)
    if status == CANCELLED:
        return [common.Change(kind="cancellation", order_id=order_id), *refunds]
    if status == REFUNDED:
        if paid_on:
            return [common.Change(kind="sale", order_id=order_id), *refunds]
        return [_none(f"{label} is refunded but WooCommerce never recorded its payment: there is no invoice "
                      "to credit.")]
    if status in statuses:
        if paid_on:
            return [common.Change(kind="sale", order_id=order_id), *refunds]
        return [_none(f"{label} is {status} but WooCommerce has no payment date for it: nothing is invoiced "
                      "until the payment is recorded.")]
    if status in _NOT_PAID:
        return [_none(f"{label} {_NOT_PAID[status]}")]
    if status in DEFAULT_PAID_STATUSES:
        return [_none(f"{label} is {status}, which this store does not invoice on (WOOCOMMERCE_PAID_STATUSES: "
                      f"{', '.join(statuses)}).")]
    return [_none(f"{label} has the status '{status}', which this store does not count as paid "
                  f"(WOOCOMMERCE_PAID_STATUSES: {', '.join(statuses)}): nothing is invoiced.")]


def _none(reason: str) -> common.Change:
    return common.Change(kind="none", reason=reason)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _label(payload: Mapping) -> str:
    number = payload.get("number")
    return f"Order #{number if isinstance(number, str | int) and str(number).strip() else payload['id']}"


def _refund_ids(payload: Mapping) -> list[str]:
    """The ids of the order's refunds, once each, in id order (so the same refunds give the same changes)."""
    entries = payload.get("refunds")
    ids = {entry["id"] for entry in entries if isinstance(entry, Mapping) and _is_id(entry.get("id"))} \
        if isinstance(entries, list) else set()
    return [str(refund_id) for refund_id in sorted(ids)]


# --- payload schemas ---------------------------------------------------------------------------------


class _Schema(common.LenientSchema):
    @pre_load
    def _blank_is_none(self, data: Any, **kwargs: Any) -> Any:
        # WooCommerce sends "" for an amount it has none of (a tax rate that did not apply).
        if isinstance(data, Mapping):
            return {key: None if value == "" else value for key, value in data.items()}
        return data


def _amount(**kwargs: Any) -> fields.Decimal:
    return common.signed_money(allow_none=True, load_default=None, **kwargs)


def _count(**kwargs: Any) -> fields.Integer:
    """A WooCommerce id that may be 0 (no product, no variation, a guest customer)."""
    return fields.Integer(strict=True, allow_none=True, load_default=None, validate=validate.Range(min=0),
                          **kwargs)


class _TaxSchema(_Schema):
    """One entry of a line's `taxes[]`: the tax rate's id and what it charged."""

    id = common.identifier(required=True)
    total = _amount()
    subtotal = _amount()


class _TaxLineSchema(_Schema):
    rate_id = common.identifier(required=True)
    label = common.text()
    compound = fields.Boolean(allow_none=True, load_default=False)
    # Sent since WooCommerce 3.7; older stores' tax lines do not say their rate.
    rate_percent = fields.Decimal(allow_none=True, load_default=None, allow_nan=False,
                                  validate=validate.Range(min=0, max=100))


class _LineItemSchema(_Schema):
    id = common.identifier(required=True)
    name = common.text()
    product_id = _count()
    variation_id = _count()
    sku = common.text()
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=common.MAX_QUANTITY))
    subtotal = common.money(allow_none=True, load_default=None)
    subtotal_tax = common.money(allow_none=True, load_default=None)
    total = common.money(required=True)
    total_tax = common.money(required=True)
    taxes = fields.List(fields.Nested(_TaxSchema), allow_none=True, load_default=list)


class _ShippingLineSchema(_Schema):
    id = common.identifier(allow_none=True, load_default=None)
    method_title = common.text()
    total = common.money(required=True)
    total_tax = common.money(allow_none=True, load_default=None)
    taxes = fields.List(fields.Nested(_TaxSchema), allow_none=True, load_default=list)


class _FeeLineSchema(_Schema):
    id = common.identifier(allow_none=True, load_default=None)
    name = common.text()
    total = common.signed_money(required=True)  # negative: a discount
    total_tax = _amount()
    taxes = fields.List(fields.Nested(_TaxSchema), allow_none=True, load_default=list)


class _AddressSchema(_Schema):
    first_name = common.text()
    last_name = common.text()
    company = common.text()
    address_1 = common.text()
    address_2 = common.text()
    city = common.text()
    postcode = common.text()
    country = common.text()
    email = common.text()


class _MetaSchema(_Schema):
    key = common.text()
    value = fields.Raw(allow_none=True, load_default=None)


class _OrderSchema(_Schema):
    id = common.identifier(required=True)
    number = fields.Raw(allow_none=True, load_default=None)  # a string, or a number from some plugins
    status = common.text()
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    # Required: it decides whether the lines are gross or net, so guessing would be wrong by the VAT.
    prices_include_tax = fields.Boolean(required=True)
    total = common.money(required=True)
    customer_id = _count()
    date_created = common.text()
    date_created_gmt = common.text()
    billing = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    shipping = fields.Nested(_AddressSchema, allow_none=True, load_default=None)
    meta_data = fields.List(fields.Nested(_MetaSchema), allow_none=True, load_default=list)
    line_items = fields.List(fields.Nested(_LineItemSchema), required=True, validate=validate.Length(min=1))
    tax_lines = fields.List(fields.Nested(_TaxLineSchema), allow_none=True, load_default=list)
    shipping_lines = fields.List(fields.Nested(_ShippingLineSchema), allow_none=True, load_default=list)
    fee_lines = fields.List(fields.Nested(_FeeLineSchema), allow_none=True, load_default=list)


_ORDER_SCHEMA = _OrderSchema()


# --- VAT rates ---------------------------------------------------------------------------------------


def _percent(value: Decimal) -> Decimal:
    """23.0 → 23, 13.50 → 13.5: one spelling per rate, as the store's tax names are keyed."""
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value.normalize()


def _charged(taxes: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The entries of a `taxes[]` that charged something."""
    return [t for t in taxes or [] if (t["total"] or _ZERO) or (t["subtotal"] or _ZERO)]


def _fitting(pairs: Sequence[tuple[Decimal, Decimal]], candidates: Iterable[Decimal]) -> set[Decimal]:
    """The rates (percent) at which each (amount, tax) pair's tax is, to the cent, that rate of its amount."""
    pairs = [(amount, tax) for amount, tax in pairs if amount > 0]
    if not pairs:
        return set()
    return {rate for rate in candidates
            if all(abs(amount * rate / 100 - tax) <= _TAX_SLACK for amount, tax in pairs)}


@dataclass(frozen=True)
class TaxRates:
    """Each tax rate id of an order's `tax_lines` and its percentage (None: not said and not derivable)."""

    by_id: Mapping[int, Decimal | None]

    def line_tax(self, taxes: Sequence[Mapping[str, Any]], amount: Decimal,
                 tax: Decimal) -> tuple[Decimal, str | None]:
        """The VAT percentage of a line (net `amount`, its `tax`, its `taxes[]`) and, without one rate, why."""
        charged = _charged(taxes)
        if len(charged) > 1:
            listed = ", ".join(self._name(t["id"]) for t in charged)
            return _ZERO, f"this line carries several taxes ({listed}), which a Portuguese invoice cannot show"
        if charged:
            rate = self.by_id.get(charged[0]["id"])
            if rate is None:
                rate = _single(_fitting([(amount, tax)], fiscal.VAT_RATES))
            if rate is None:
                return _ZERO, ("WooCommerce does not say this line's VAT rate, and its amounts fit more than one "
                               "rate or none")
            return rate, None
        if tax:
            # A tax amount without its rate entry: only the amounts can tell.
            rate = _single(_fitting([(amount, tax)], fiscal.VAT_RATES))
            if rate is None:
                return _ZERO, "this line carries a tax amount without a rate that can be told from it"
            return rate, None
        stated = {self.by_id.get(t["id"]) for t in taxes or []} - {None}
        return (stated.pop() if len(stated) == 1 else _ZERO), None

    def _name(self, rate_id: int) -> str:
        rate = self.by_id.get(rate_id)
        return f"{rate} %" if rate is not None else f"tax rate {rate_id}"


def _single(rates: set[Decimal]) -> Decimal | None:
    return _percent(rates.pop()) if len(rates) == 1 else None


def tax_rates(tax_lines: Sequence[Mapping[str, Any]],
              taxed: Sequence[tuple[Sequence[Mapping], Decimal]]) -> TaxRates:
    """The rate of each tax line: as WooCommerce states it, else derived from every amount taxed under it.

    `taxed`: each line, shipping or fee as (its `taxes[]`, its net amount). A rate id whose amounts fit
    one Portuguese VAT rate (or one rate the order states elsewhere) takes it; one they fit several
    rates of (small amounts) or none of stays unknown, and the lines under it are held.
    """
    by_id: dict[int, Decimal | None] = {}
    for line in tax_lines or []:
        rate = line["rate_percent"]
        by_id[line["rate_id"]] = None if rate is None else _percent(rate)
    candidates = fiscal.VAT_RATES | {rate for rate in by_id.values() if rate is not None}
    for rate_id in [rate_id for rate_id, rate in by_id.items() if rate is None]:
        pairs = []
        for taxes, amount in taxed:
            charged = _charged(taxes)
            if len(charged) == 1 and charged[0]["id"] == rate_id:
                pairs.append((amount, charged[0]["total"] or _ZERO))
        whole = [(sum((a for a, _ in pairs), _ZERO), sum((t for _, t in pairs), _ZERO))]
        fitting = _fitting(pairs, candidates)
        # The sum as well, within a cent per line: many small lines together tell what one cannot.
        fitting = {rate for rate in fitting
                   if abs(whole[0][0] * rate / 100 - whole[0][1]) <= _TAX_SLACK * max(len(pairs), 1)}
        by_id[rate_id] = _single(fitting)
    return TaxRates(by_id)


# --- lines -------------------------------------------------------------------------------------------


def item_key(sku: str | None, variation_id: int | None, product_id: int | None, item_id: int | None) -> str:
    """The key an order line is known by (the invoice item's code); a refund of it uses the same."""
    if sku and sku.strip():
        return sku.strip()
    if variation_id:
        return f"woocommerce-variation-{variation_id}"
    if product_id:
        return f"woocommerce-product-{product_id}"
    return f"woocommerce-line-{item_id}"


def fee_key(name: str | None) -> str:
    """The key of a fee line, from its name (a refund of the fee carries the same name)."""
    slug = re.sub(r"[^0-9a-z]+", "-", common.fold(html.unescape(name or ""))).strip("-")
    return f"fee-{slug}"[:100] if slug else "fee"


def description(name: str | None, fallback: str = "") -> str:
    """A product or fee name as the buyer saw it: WooCommerce sends names with HTML entities (&ndash;)."""
    return html.unescape(name or "").strip() or fallback


def _item_line(item: Mapping[str, Any], rates: TaxRates, gross: bool) -> Line:
    total, total_tax = item["total"], item["total_tax"]
    subtotal = item["subtotal"] if item["subtotal"] is not None else total
    subtotal_tax = item["subtotal_tax"] if item["subtotal_tax"] is not None else total_tax
    # A line given away by a coupon (total 0) still tells its rate by its subtotal.
    rate, problem = rates.line_tax(item["taxes"], total or subtotal, total_tax if total else subtotal_tax)
    before = subtotal + subtotal_tax if gross else subtotal
    after = total + total_tax if gross else total
    if after > before:
        before = after  # a plugin that raised the price after the coupon: no discount to show
    quantity = Decimal(item["quantity"])
    return Line(
        key=item_key(item["sku"], item["variation_id"], item["product_id"], item["id"]),
        description=description(item["name"], "Product"),
        unit_price=before / quantity,
        quantity=quantity,
        tax_rate=rate,
        discount=before - after,
        kind="product",
        tax_problem=problem,
    )


def _shipping_line(shipping: Mapping[str, Any], rates: TaxRates, gross: bool) -> Line | None:
    tax = _charge_tax(shipping)
    if not shipping["total"] and not tax:
        return None  # free shipping is not an invoice line
    return _charge_line(shipping, tax, rates, gross, key="shipping",
                        text=description(shipping["method_title"], "Shipping"), kind="shipping")


def _charge_tax(charge: Mapping[str, Any]) -> Decimal:
    """A shipping or fee line's tax: its total_tax, or else the sum of its taxes[]."""
    if charge["total_tax"] is not None:
        return charge["total_tax"]
    return sum(((t["total"] or _ZERO) for t in charge["taxes"] or []), _ZERO)


def _fee_line(fee: Mapping[str, Any], rates: TaxRates, gross: bool) -> Line:
    return _charge_line(fee, _charge_tax(fee), rates, gross, key=fee_key(fee["name"]),
                        text=description(fee["name"], "Fee"), kind="fee")


def _charge_line(
    charge: Mapping[str, Any], tax: Decimal, rates: TaxRates, gross: bool, *, key: str, text: str, kind: str
) -> Line:
    """One invoice line of quantity 1 for a shipping or fee line, at its total (with its tax when `gross`)."""
    rate, problem = rates.line_tax(charge["taxes"], charge["total"], tax)
    return Line(
        key=key,
        description=text,
        unit_price=charge["total"] + tax if gross else charge["total"],
        quantity=Decimal(1),
        tax_rate=rate,
        kind=kind,
        tax_problem=problem,
    )


def _charged_gross(line: Line, gross: bool) -> Decimal:
    charged = line.unit_price * line.quantity - line.discount
    return charged if gross else charged * (1 + line.tax_rate / 100)


def _with_negative_fees(lines: list[Line], fees: Sequence[Mapping[str, Any]], gross: bool) -> list[Line]:
    """The product lines with the order's negative fees (discounts) spread over them, as line discounts.

    An invoice has no negative lines. Each negative fee, tax included, comes off the product lines in
    proportion to what each was charged, in cents, the largest line taking the rounding remainder, so
    the lines still add up to what the customer paid. A discount larger than the goods is held.
    """
    discount = sum((-(fee["total"] + _charge_tax(fee)) for fee in fees), _ZERO)
    if discount <= 0:
        return lines
    targets = [i for i, line in enumerate(lines)
               if line.kind == "product" and not line.tax_problem and _charged_gross(line, gross) > 0]
    charged = {i: _charged_gross(lines[i], gross) for i in targets}
    whole = sum(charged.values(), _ZERO)
    if not targets or discount > whole:
        names = ", ".join(description(fee["name"], "Fee") for fee in fees)
        return [*lines, Line(key="discount", description=names, unit_price=_ZERO, quantity=Decimal(1),
                             tax_rate=_ZERO, kind="fee",
                             tax_problem=f"a negative fee of {discount} is more than the goods it would "
                                         "discount, and an invoice cannot show a negative line")]
    shares: dict[int, Decimal] = {}
    largest = max(targets, key=lambda i: charged[i])
    for i in targets:
        if i != largest:
            shares[i] = (discount * charged[i] / whole).quantize(_CENT, ROUND_HALF_UP)
    shares[largest] = discount - sum(shares.values(), _ZERO)
    spread = list(lines)
    for i, share in shares.items():
        line = lines[i]
        basis_share = share if gross else share / (1 + line.tax_rate / 100)
        spread[i] = dataclasses.replace(line, discount=line.discount + basis_share)
    return spread


# --- the buyer ---------------------------------------------------------------------------------------


def _tax_id(raw: Any, data: Mapping[str, Any], keys: Sequence[str], country: str) -> str | None:
    """The buyer's tax number: in the order meta the NIF plugin keeps it in, in a billing field of that name,
    else in a company field. The valid number written there, else what was typed (reported as invalid later)."""
    wanted = {common.fold(key) for key in keys}
    typed = []
    for entry in data["meta_data"] or []:
        if common.fold(entry["key"] or "") in wanted:
            typed.append(entry["value"])
    # Some plugins also put it in the billing address itself ("billing": {"nif": …}).
    in_billing = {common.fold(re.sub(r"^_?billing_", "", key)) for key in keys} | wanted
    billing = raw.get("billing") if isinstance(raw, Mapping) else None
    if isinstance(billing, Mapping):
        typed.extend(value for key, value in billing.items()
                     if isinstance(key, str) and common.fold(key) in in_billing)
    for value in typed:
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
            return fiscal.find_tax_id(str(value), country) or str(value).strip()
    for address in (data["billing"], data["shipping"]):
        found = fiscal.find_tax_id((address or {}).get("company", ""), country)
        if found:
            return found
    return None


def _name(address: Mapping[str, Any] | None) -> str:
    address = address or {}
    return " ".join(part.strip() for part in (address.get("first_name"), address.get("last_name"))
                    if part and part.strip())


def _customer(raw: Any, data: Mapping[str, Any], tax_id_keys: Sequence[str]) -> Customer:
    # Personal data: never log anything built here.
    billing = data["billing"] or {}
    address = billing if billing.get("country") or billing.get("address_1") else (data["shipping"] or billing)
    email = (billing.get("email") or "").strip() or None
    if data["customer_id"]:
        key = f"woocommerce-customer-{data['customer_id']}"
    elif email:
        key = f"woocommerce-email-{hashlib.sha256(email.lower().encode()).hexdigest()[:16]}"
    else:
        key = f"woocommerce-order-{data['id']}"
    country = (billing.get("country") or "").strip().upper() or _ship_to_country(data) or "PT"
    return Customer(
        key=key,
        name=_name(billing) or _name(data["shipping"]),  # '' lets the invoicing layer say "Consumidor final"
        email=email,
        company=(billing.get("company") or "").strip() or None,
        address=Address(
            line1=(address.get("address_1") or "").strip(),
            line2=(address.get("address_2") or "").strip(),
            city=(address.get("city") or "").strip(),
            postal_code=(address.get("postcode") or "").strip(),
            country_code=(address.get("country") or "").strip().upper(),
        ),
        tax_id=_tax_id(raw, data, tax_id_keys or DEFAULT_TAX_ID_KEYS, country),
    )


def _ship_to_country(data: Mapping[str, Any]) -> str | None:
    """Where the goods go: the shipping address's country, else the billing address's."""
    for address in (data["shipping"], data["billing"]):
        if address and (address.get("country") or "").strip():
            return address["country"].strip().upper()
    return None


def utc_time(gmt: str | None, local: str | None = None) -> str | None:
    """WooCommerce's `*_gmt` time (no zone written) as ISO 8601 in UTC; the site's local time if that is all."""
    if gmt and gmt.strip():
        text = gmt.strip()
        return text if re.search(r"(Z|[+-]\d\d:?\d\d)$", text) else f"{text}Z"
    return (local or "").strip() or None


# --- loading -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Loaded:
    """An order payload loaded: its fields, its `Order`, and each line item's `Line` by the item's id."""

    data: Mapping[str, Any]
    order: Order
    item_lines: Mapping[int, Line]
    shipping_lines: Mapping[int, Line]
    fee_lines: Mapping[int, Line]


def load(payload: Any, *, store: str, tax_id_keys: Sequence[str] = ()) -> Loaded:
    """`to_order`, keeping what a refund of the order needs to find its lines."""
    raw = printable(payload)
    try:
        data = _ORDER_SCHEMA.load(raw)
    except ValidationError as error:
        raise common.LoadError(error.normalized_messages(), what="order", platform=PLATFORM) from None
    gross = data["prices_include_tax"]
    shipping = data["shipping_lines"] or []
    fees = data["fee_lines"] or []
    taxed = [(item["taxes"], item["total"]) for item in data["line_items"]]
    taxed += [(line["taxes"], line["total"]) for line in shipping]
    taxed += [(fee["taxes"], fee["total"]) for fee in fees if fee["total"] > 0]
    rates = tax_rates(data["tax_lines"] or [], taxed)

    items = [_item_line(item, rates, gross) for item in data["line_items"]]
    item_lines = {item["id"]: line for item, line in zip(data["line_items"], items, strict=True)}
    shipping_lines = {}
    shipped = []
    for entry in shipping:
        line = _shipping_line(entry, rates, gross)
        if line is not None:
            shipped.append(line)
            if entry["id"]:
                shipping_lines[entry["id"]] = line
    fee_lines = {}
    charged_fees = []
    for fee in fees:
        if fee["total"] > 0 or (fee["total"] == 0 and _charge_tax(fee) > 0):
            line = _fee_line(fee, rates, gross)
            charged_fees.append(line)
            if fee["id"]:
                fee_lines[fee["id"]] = line
    negative = [fee for fee in fees if fee["total"] < 0]
    lines = _with_negative_fees([*items, *charged_fees], negative, gross)
    number = data["number"]
    number = str(number).strip() if isinstance(number, str | int) and not isinstance(number, bool) else ""
    order = Order(
        platform="woocommerce",
        store=store,
        order_id=str(data["id"]),
        name=f"#{number or data['id']}",
        currency=data["currency"].upper(),
        taxes_included=gross,
        total=data["total"],
        financial_status=data["status"] or "",
        customer=_customer(raw, data, tax_id_keys),
        lines=(*lines, *shipped),
        test=False,  # WooCommerce has no test orders
        created_at=utc_time(data["date_created_gmt"], data["date_created"]),
        ship_to_country=_ship_to_country(data),
    )
    return Loaded(data=data, order=order, item_lines=item_lines, shipping_lines=shipping_lines,
                  fee_lines=fee_lines)


def to_order(payload: Mapping, *, store: str, tax_id_keys: Sequence[str] = (),
             money: str = "presentment", settings: Any = None) -> Order:
    """Load a WooCommerce REST order object (an `order.*` webhook body is one) into an `Order`.

    `tax_id_keys`: the order meta keys the store's NIF plugin uses (empty: `DEFAULT_TAX_ID_KEYS`).
    `money` and `settings` are accepted for the interface's sake: a WooCommerce order has one currency and
    says all it owes itself.

    Raises:
        LoadError: the payload is not a well-formed WooCommerce order; its text names fields, never values.
    """
    return load(payload, store=store, tax_id_keys=tax_id_keys).order
