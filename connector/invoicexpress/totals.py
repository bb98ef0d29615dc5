"""How InvoiceXpress turns the items of a document into its total: one place, used by preview,
the issuing check and the sandbox, so that "what IX will compute" means one thing everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")


def item_net(unit_price: Decimal, quantity: Decimal, discount_percent: Decimal) -> Decimal:
    """The taxable amount of one item, unrounded: price × quantity less its percentage discount."""
    gross = unit_price * quantity
    return gross - gross * discount_percent / Decimal(100)


def document_total(items: Iterable[Mapping], tax_rates: Mapping[str, Decimal]) -> Decimal:
    """The document total IX computes from request items, rounded once to the cent.

    `items` are IX request items (`unit_price`, `quantity`, optional `discount` and `tax.name`);
    `tax_rates` maps the account's tax names to percentages. IX keeps the line amounts unrounded
    and rounds the document's total (the assumption the whole connector checks against).
    """
    total = Decimal(0)
    for item in items:
        net = item_net(
            Decimal(str(item["unit_price"])),
            Decimal(str(item["quantity"])),
            Decimal(str(item.get("discount") or 0)),
        )
        rate = tax_rates[item["tax"]["name"]] if item.get("tax") else Decimal(0)
        total += net + net * rate / Decimal(100)
    return total.quantize(CENT, rounding=ROUND_HALF_UP)
