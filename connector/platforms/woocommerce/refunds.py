"""WooCommerce refunds: the REST refund object (GET orders/{id}/refunds/{refund_id}) loaded into a `Refund`.

An order's `refunds[]` only lists each refund's id, reason and total; what was given back line by line
is in the refund object, which the worker fetches once (`snapshot`). Its `line_items`, `shipping_lines`
and `fee_lines` hold NEGATIVE quantities and amounts, without tax in `total` and with it in
`total_tax`, each pointing at the order's item it refunds through the `_refunded_item_id` meta. The
refund object does not name its order; `to_refund` takes it from the order given, the `order_id=`
argument, or the refund's own `_links.up`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from marshmallow import ValidationError, fields, validate

from connector.orders import Refund, RefundLine, printable
from connector.platforms import common
from connector.platforms.woocommerce import orders
from connector.platforms.woocommerce.orders import PLATFORM

_ZERO = Decimal(0)
REFUNDED_ITEM = "_refunded_item_id"
_ORDER_LINK = re.compile(r"/orders/(\d+)/?$")


def is_refund(payload: Any) -> bool:
    """Whether a pasted object is a REST refund object (orders/{id}/refunds/{refund_id}) rather than an order.

    Told by its shape: a refund has an `amount` and `line_items` (a coupon has no lines), and neither the
    order's `status` nor its `total`.
    """
    return (isinstance(payload, Mapping) and orders._is_id(payload.get("id")) and "amount" in payload
            and isinstance(payload.get("line_items"), list) and "status" not in payload and "total" not in payload)


def snapshot(change: common.Change, payload: Mapping, api: Any) -> dict:
    """What the change needs that the webhook body lacks: for a refund, its REST refund object.

    The REST client's errors go up as they are (retryable ones are retried by the worker). Without
    REST credentials a refund's lines cannot be read, which no retry will change.
    """
    if change.kind != "refund":
        return dict(payload)
    if api is None:
        raise common.PlatformRefused(
            "WooCommerce REST API credentials (WOOCOMMERCE_URL, WOOCOMMERCE_CONSUMER_KEY, "
            f"WOOCOMMERCE_CONSUMER_SECRET) are needed to read refund {change.refund_id}'s lines")
    return dict(api.get_refund(change.order_id, change.refund_id))


# --- payload schemas ---------------------------------------------------------------------------------


class _RefundItemSchema(orders._Schema):
    id = common.identifier(allow_none=True, load_default=None)
    name = common.text()
    method_title = common.text()  # shipping lines
    product_id = orders._count()
    variation_id = orders._count()
    sku = common.text()
    quantity = fields.Integer(strict=True, allow_none=True, load_default=None,
                              validate=validate.Range(min=-common.MAX_QUANTITY, max=common.MAX_QUANTITY))
    total = common.signed_money(required=True)
    total_tax = orders._amount()
    taxes = fields.List(fields.Nested(orders._TaxSchema), allow_none=True, load_default=list)
    meta_data = fields.List(fields.Nested(orders._MetaSchema), allow_none=True, load_default=list)


class _RefundSchema(orders._Schema):
    id = common.identifier(required=True)
    # Not in WooCommerce's v3 refund object; sent by some plugins and exports, and read when present.
    parent_id = orders._count()
    order_id = orders._count()
    date_created = common.text()
    date_created_gmt = common.text()
    amount = common.money(required=True)
    reason = common.text()
    line_items = fields.List(fields.Nested(_RefundItemSchema), allow_none=True, load_default=list)
    shipping_lines = fields.List(fields.Nested(_RefundItemSchema), allow_none=True, load_default=list)
    fee_lines = fields.List(fields.Nested(_RefundItemSchema), allow_none=True, load_default=list)
    tax_lines = fields.List(fields.Nested(orders._TaxLineSchema), allow_none=True, load_default=list)
    links = fields.Raw(data_key="_links", allow_none=True, load_default=None)


_REFUND_SCHEMA = _RefundSchema()


def _error(message: str, path: str) -> common.LoadError:
    return common.LoadError({path: [message]}, what="refund", platform=PLATFORM)


# --- reading a refund --------------------------------------------------------------------------------


def _refunded_item(item: Mapping[str, Any]) -> int | None:
    """The id of the order item a refund item gives money back on (its `_refunded_item_id` meta)."""
    for entry in item["meta_data"] or []:
        value = entry["value"]
        if entry["key"] == REFUNDED_ITEM and isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value).strip()
            if text.isdigit() and int(text) > 0:
                return int(text)
    return None


def _positive(item: Mapping[str, Any]) -> tuple[Decimal, Decimal, list[dict]]:
    """A refund item's net amount, its tax and its `taxes[]`, as positive figures."""
    tax = item["total_tax"]
    if tax is None:
        tax = sum(((t["total"] or _ZERO) for t in item["taxes"] or []), _ZERO)
    taxes = [{"id": t["id"], "total": abs(t["total"] or _ZERO), "subtotal": abs(t["subtotal"] or _ZERO)}
             for t in item["taxes"] or []]
    return abs(item["total"]), abs(tax), taxes


def _link_order_id(links: Any) -> int | None:
    """The order id in the refund's `_links.up` (…/wp-json/wc/v3/orders/723)."""
    ups = links.get("up") if isinstance(links, Mapping) else None
    for up in ups if isinstance(ups, list) else []:
        href = up.get("href") if isinstance(up, Mapping) else None
        match = _ORDER_LINK.search(href) if isinstance(href, str) else None
        if match:
            return int(match[1])
    return None


def _order_id(data: Mapping[str, Any], given: Any, loaded: orders.Loaded | None) -> str:
    candidates = []
    if given is not None and str(given).strip():
        candidates.append(str(given).strip())
    if loaded is not None:
        candidates.append(loaded.order.order_id)
    for hint in (data["parent_id"], data["order_id"], _link_order_id(data["links"])):
        if hint:
            candidates.append(str(hint))
    if not candidates:
        raise _error("the refund does not say which order it belongs to; load it with its order or order_id",
                     "order_id")
    if len(set(candidates)) > 1:
        raise _error("the refund belongs to another order than the one given", "order_id")
    return candidates[0]


def _merged_tax_lines(*sources: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The tax lines of the refund and of its order, one per rate id, a stated rate over an unstated one."""
    by_id: dict[int, Mapping[str, Any]] = {}
    for lines in sources:
        for line in lines or []:
            known = by_id.get(line["rate_id"])
            if known is None or (known["rate_percent"] is None and line["rate_percent"] is not None):
                by_id[line["rate_id"]] = line
    return list(by_id.values())


def _rate(rates: orders.TaxRates, item: Mapping[str, Any], what: str) -> Decimal:
    amount, tax, taxes = _positive(item)
    rate, problem = rates.line_tax(taxes, amount, tax)
    if problem:
        raise _error(f"a refunded {what}'s VAT rate cannot be told ({problem}); load the refund with its order",
                     what)
    return rate


def to_refund(
    payload: Mapping,
    *,
    store: str,
    money: str = "presentment",
    taxes_included: bool | None = None,
    order: Mapping | None = None,
    order_id: str | int | None = None,
) -> Refund:
    """Load a REST refund object into a `Refund`.

    Each refunded item becomes a `RefundLine` with the key, description and VAT rate `to_order` gives
    the order's line (so the credit note's item matches the invoice's), its amount tax included and
    positive; refunded shipping a "shipping" line, refunded fees their fee's line. `Refund.amount` is
    the refund's `amount`: less than its lines, the difference is `restocking_fee`; more (an amount-only
    refund has no lines at all), the excess is an "adjustment" line, which the credit note spreads over
    the invoice's VAT rates.

    `order`: the order's REST object, when at hand: the refunded items are found among its lines (by
    `_refunded_item_id`), and it gives the refund its order id, name and currency. Without it the
    lines are keyed from the refund's own SKU / variation / product ids, as `to_order` keys them.
    `order_id`: the order's id when no `order` is given; WooCommerce's v3 refund object does not carry
    it (only in `_links.up`, which is read too). `money` and `taxes_included` are accepted for the
    interface's sake: a WooCommerce refund has one currency and keeps its tax apart.

    Raises:
        LoadError: the payload is not a well-formed WooCommerce refund (its `what` is "refund"), or
            `order` is not a well-formed order (its `what` is "order").
    """
    try:
        data = _REFUND_SCHEMA.load(printable(payload))
    except ValidationError as error:
        raise common.LoadError(error.normalized_messages(), what="refund", platform=PLATFORM) from None
    loaded = orders.load(order, store=store) if order is not None else None
    resolved_order_id = _order_id(data, order_id, loaded)

    refunded = [*(data["line_items"] or []), *(data["shipping_lines"] or []), *(data["fee_lines"] or [])]
    order_tax_lines = loaded.data["tax_lines"] if loaded is not None else []
    rates = orders.tax_rates(_merged_tax_lines(data["tax_lines"] or [], order_tax_lines or []),
                             [(_positive(item)[2], _positive(item)[0]) for item in refunded])
    lines: list[RefundLine] = []
    for item in data["line_items"] or []:
        amount, tax, _ = _positive(item)
        if not amount + tax:
            continue
        source = _refunded_item(item)
        line = loaded.item_lines.get(source) if loaded is not None and source is not None else None
        lines.append(RefundLine(
            key=line.key if line else orders.item_key(item["sku"], item["variation_id"], item["product_id"],
                                                      source or item["id"]),
            description=line.description if line else orders.description(item["name"], "Product"),
            quantity=Decimal(abs(item["quantity"] or 0) or 1),
            amount=amount + tax,
            tax_rate=line.tax_rate if line else _rate(rates, item, "line_items"),
        ))
    for item in data["shipping_lines"] or []:
        amount, tax, _ = _positive(item)
        if not amount + tax:
            continue
        line = _order_line(loaded.shipping_lines if loaded else {}, _refunded_item(item))
        lines.append(RefundLine(
            key="shipping",
            description=line.description if line else orders.description(item["method_title"], "Shipping"),
            quantity=Decimal(1),
            amount=amount + tax,
            tax_rate=line.tax_rate if line else _rate(rates, item, "shipping_lines"),
            kind="shipping",
        ))
    for item in data["fee_lines"] or []:
        amount, tax, _ = _positive(item)
        if not amount + tax:
            continue
        line = _order_line(loaded.fee_lines if loaded else {}, _refunded_item(item), every=False)
        lines.append(RefundLine(
            key=line.key if line else orders.fee_key(item["name"]),
            description=line.description if line else orders.description(item["name"], "Fee"),
            quantity=Decimal(1),
            amount=amount + tax,
            tax_rate=line.tax_rate if line else _rate(rates, item, "fee_lines"),
        ))

    given_back = sum((line.amount for line in lines), _ZERO)
    amount = data["amount"]
    if amount > given_back:
        lines.append(RefundLine(key="refund-adjustment", description="Refund adjustment", quantity=Decimal(1),
                                amount=amount - given_back, tax_rate=_ZERO, kind="adjustment"))
    return Refund(
        platform="woocommerce",
        store=store,
        refund_id=str(data["id"]),
        order_id=resolved_order_id,
        order_name=loaded.order.name if loaded is not None else None,
        currency=loaded.order.currency if loaded is not None else None,
        lines=tuple(lines),
        amount=amount,
        restocking_fee=max(given_back - amount, _ZERO),
        created_at=orders.utc_time(data["date_created_gmt"], data["date_created"]),
    )


def _order_line(by_id: Mapping[int, Any], source: int | None, every: bool = True) -> Any:
    """The order's line a refunded shipping or fee line is of: by its id, else the order's only one."""
    if source is not None and source in by_id:
        return by_id[source]
    lines = list(by_id.values())
    return lines[0] if every and len(lines) == 1 else None
