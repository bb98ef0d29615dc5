"""How InvoiceXpress turns the items of a document into its total, and how to choose unit prices so that
it lands exactly on what the customer paid. One place, used by preview and issuing (the sandbox keeps its
own account of IX's arithmetic, so that each checks the other)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
HALF_CENT = Decimal("0.005")
PRICE_STEP = Decimal("0.0001")  # IX keeps 4 decimals of a unit price
# How far a pair of lines may be searched when no single line can absorb a difference.
PAIR_SEARCH = 60
MAX_STEPS = 50


def item_net(unit_price: Decimal, quantity: Decimal, discount_percent: Decimal) -> Decimal:
    """The taxable amount of one item, unrounded: price × quantity less its percentage discount."""
    gross = unit_price * quantity
    return gross - gross * discount_percent / Decimal(100)


def _num(value) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _rate(item: Mapping, tax_rates: Mapping[str, Decimal]) -> Decimal:
    return tax_rates[item["tax"]["name"]] if item.get("tax") else Decimal(0)


def unrounded_total(items: Iterable[Mapping], tax_rates: Mapping[str, Decimal]) -> Decimal:
    """Σ net × (1 + rate) over the items, before IX's single rounding."""
    total = Decimal(0)
    for item in items:
        net = item_net(_num(item["unit_price"]), _num(item["quantity"]), _num(item.get("discount") or 0))
        total += net + net * _rate(item, tax_rates) / Decimal(100)
    return total


def document_total(items: Iterable[Mapping], tax_rates: Mapping[str, Decimal]) -> Decimal:
    """The document total IX computes from request items, rounded once to the cent.

    `items` are IX request items (`unit_price`, `quantity`, optional `discount` and `tax.name`);
    `tax_rates` maps the account's tax names to percentages. IX keeps the line amounts unrounded
    and rounds the document's total (the assumption the whole connector checks against).
    """
    return unrounded_total(items, tax_rates).quantize(CENT, rounding=ROUND_HALF_UP)


def fit_unit_prices(items: list[dict], tax_rates: Mapping[str, Decimal], target: Decimal) -> list[dict] | None:
    """Items whose IX total is exactly `target`, changing unit prices by as few 0.0001 steps as possible.

    Per-line rounding in the shop (each line's VAT rounded to the cent) and IX's single rounding
    can disagree by a cent or two; moving a unit price in its 4th decimal absorbs that without
    changing what anybody reads on the invoice. Returns None when no change of one or two lines does.
    """
    if document_total(items, tax_rates) == target:
        return items
    gap = target - unrounded_total(items, tax_rates)
    effects = [_step_effect(item, tax_rates) for item in items]

    def lands(shift: Decimal) -> bool:
        # IX rounds half up: the new total T - gap + shift rounds to T when it lies in [T - ½¢, T + ½¢).
        return -HALF_CENT < gap - shift <= HALF_CENT

    best: tuple[Decimal, dict[int, int]] | None = None
    for i, effect in enumerate(effects):
        if effect == 0:
            continue
        for steps in _landing_steps(gap, effect):
            if lands(steps * effect) and _allowed(items[i], steps):
                best = _better(best, {i: steps})
    if best is None:
        for (i, a), (j, b) in itertools.combinations(enumerate(effects), 2):
            if a == 0 or b == 0:
                continue
            for steps_i in range(-PAIR_SEARCH, PAIR_SEARCH + 1):
                for steps_j in _landing_steps(gap - steps_i * a, b):
                    if lands(steps_i * a + steps_j * b) and _allowed(items[i], steps_i) \
                            and _allowed(items[j], steps_j):
                        best = _better(best, {i: steps_i, j: steps_j})
    if best is None:
        return None
    fitted = [dict(item) for item in items]
    for index, steps in best[1].items():
        fitted[index]["unit_price"] = _num(fitted[index]["unit_price"]) + steps * PRICE_STEP
    return fitted


def _landing_steps(rest: Decimal, effect: Decimal) -> set[int]:
    """Step counts that may move the total by `rest` to within half a cent: the nearest, and the
    smallest in each direction (the total only has to land in the cent, not on its middle)."""
    k = int((rest / effect).to_integral_value(ROUND_HALF_EVEN))
    first = int(((rest - HALF_CENT) / effect).to_integral_value(ROUND_CEILING))
    last = int(((rest + HALF_CENT) / effect).to_integral_value(ROUND_CEILING)) - 1
    return {k - 1, k, k + 1, first, last}


def _step_effect(item: Mapping, tax_rates: Mapping[str, Decimal]) -> Decimal:
    """How much the unrounded total moves when the item's unit price moves by one step."""
    return item_net(PRICE_STEP, _num(item["quantity"]), _num(item.get("discount") or 0)) * (
        1 + _rate(item, tax_rates) / Decimal(100)
    )


def _allowed(item: Mapping, steps: int) -> bool:
    # Under half a cent per unit, so the price shown to the cent stays what the shop showed (give or
    # take its own rounding); never to zero or below.
    new = _num(item["unit_price"]) + steps * PRICE_STEP
    return abs(steps) < MAX_STEPS and new > 0


def _better(best, candidate: dict[int, int]):
    cost = Decimal(sum(abs(s) for s in candidate.values()))
    return (cost, candidate) if best is None or cost < best[0] else best
