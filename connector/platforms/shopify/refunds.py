"""Shopify refunds: a `refunds/create` body, or an entry of an order's `refunds[]`, loaded into a `Refund`."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Literal

from marshmallow import ValidationError, fields, post_load, validate

from connector import fiscal
from connector.orders import Refund, RefundLine, printable
from connector.platforms import common
from connector.platforms.common import LoadError
from connector.platforms.shopify.orders import (
    _ZERO,
    MONEY_SIDES,
    POSITION,
    _item_line,
    _LineItemSchema,
    _percent,
    _tax,
    _TaxLineSchema,
    _with_amounts,
    _with_positions,
    load_error,
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


class _RefundLineItemSchema(common.LenientSchema):
    line_item_id = common.identifier(allow_none=True, load_default=None)
    quantity = fields.Integer(strict=True, required=True, validate=validate.Range(min=1, max=common.MAX_QUANTITY))
    subtotal = common.money(required=True)
    total_tax = common.money(required=True)
    # Required: the key and the VAT rate come from it, and without them the credit matches nothing.
    line_item = fields.Nested(_RefundedItemSchema, required=True)

    @post_load
    def _same_line(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        carried = data["line_item"]["id"]
        if data["line_item_id"] is not None and carried is not None and data["line_item_id"] != carried:
            raise ValidationError("line_item_id is not the id of the line_item it carries", "line_item_id")
        return data


class _RefundedShippingSchema(common.LenientSchema):
    title = common.text()
    price = common.money(allow_none=True, load_default=None)
    tax_lines = fields.List(fields.Nested(_TaxLineSchema), load_default=list)


class _RefundShippingLineSchema(common.LenientSchema):
    subtotal_amount = common.money(required=True)
    tax_amount = common.money(allow_none=True, load_default=None)  # not every API version sends it
    shipping_line = fields.Nested(_RefundedShippingSchema, allow_none=True, load_default=None)


class _OrderAdjustmentSchema(common.LenientSchema):
    kind = common.text()
    amount = common.signed_money(required=True)
    tax_amount = common.signed_money(allow_none=True, load_default=None)


class _TransactionSchema(common.LenientSchema):
    kind = common.text()
    status = common.text()
    amount = common.money(required=True)
    currency = fields.String(allow_none=True, load_default=None, validate=validate.Regexp(r"^[A-Za-z]{3}$"))
    # Present when Shopify sends the amount in both currencies; then `amount` is already the side asked for.
    amount_set = fields.Raw(allow_none=True, load_default=None)


class _RefundSchema(common.LenientSchema):
    id = common.identifier(required=True)
    order_id = common.identifier(required=True)
    order_name = common.text()
    name = common.text()
    processed_at = fields.String(allow_none=True, load_default=None)
    created_at = fields.String(allow_none=True, load_default=None)
    refund_line_items = fields.List(fields.Nested(_RefundLineItemSchema), allow_none=True, load_default=list)
    refund_shipping_lines = fields.List(fields.Nested(_RefundShippingLineSchema), allow_none=True,
                                        load_default=list)
    order_adjustments = fields.List(fields.Nested(_OrderAdjustmentSchema), allow_none=True, load_default=list)
    # None when the payload has no `transactions` at all, [] when it says no money moved.
    transactions = fields.List(fields.Nested(_TransactionSchema), allow_none=True, load_default=None)


_REFUND_SCHEMA = _RefundSchema()


def _refund_error(message: str, path: str = "refund") -> LoadError:
    return load_error({path: [message]}, what="refund")


def _load_refund(payload: Any, side: str) -> dict[str, Any]:
    try:
        return _REFUND_SCHEMA.load(_with_amounts(payload, side))
    except ValidationError as error:
        raise load_error(error.normalized_messages(), what="refund") from None


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
        LoadError: the payload is not a well-formed Shopify refund (its `what` is "refund").
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
