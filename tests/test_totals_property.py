"""Property tests: orders built with Shopify's own arithmetic always become an IX document that totals
exactly what was paid (or are held, saying both totals), and fitting never moves an item by a cent per unit.

What IX would total is taken from the sandbox's own account of IX's arithmetic
(devtools/invoicexpress_sandbox.py), not from the connector's totals.py that the plans use, so that the
property checks the connector against an independent oracle.

Orders are built directly (no Shopify payloads). One generator serves two sources: hypothesis (for the
properties, with shrinking) and `random.Random(seed)` (for the deterministic hold-rate count).

Shipping is either absent, taxed at the region's standard rate (23 / 22 / 16 %), or untaxed (0 %);
orders with untaxed shipping are planned with `tax_exemption_reason="M10"` (small-business regime), the
setting a store with untaxed shipping needs.
"""

from __future__ import annotations

import dataclasses
import random
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, event, example, given, target
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from config.settings import ISSUING
from connector.orders import Address, Customer, Line, Order
from connector.plans import Plan, Settings, plan_sale
from devtools.invoicexpress_sandbox import ix_request_amounts

SETTINGS = Settings(**{key: parse(default, key, []) for key, (_, default, parse) in ISSUING.items()})
EXEMPT_SETTINGS = dataclasses.replace(SETTINGS, tax_exemption_reason="M10")
TODAY = date(2026, 11, 24)
CENT = Decimal("0.01")
UNIT_PRICE_PLACES = Decimal("0.0001")

# Bounded, not derandomized: every run explores new orders; the whole module stays well under 30 s.
PROPERTY = hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

REGIONS = {  # VAT rates (reduced, intermediate, standard)
    "mainland": (Decimal(6), Decimal(13), Decimal(23)),
    "madeira": (Decimal(5), Decimal(12), Decimal(22)),
    "azores": (Decimal(4), Decimal(9), Decimal(16)),
}
AWKWARD_PRICES = tuple(Decimal(p) for p in (
    "0.83", "33.33", "9.99", "0.99", "19.99", "66.67", "0.01", "0.03", "1.01", "14.95", "12.34", "999.99",
    "49.99", "0.07", "2.49", "7.77", "16.66", "83.33",
))
AWKWARD_CENTS = (99, 95, 49, 1, 33, 67, 83, 5)
COMMON_PERCENTS = tuple(Decimal(p) for p in ("10", "15", "20", "25", "33.33", "50", "12.5", "100", "5", "66.67"))
SHIPPING_PRICES = tuple(Decimal(p) for p in ("0", "3.99", "4.90", "5", "6.50", "9.99", "19.99", "20"))


def round_cents(value: Decimal) -> Decimal:
    return value.quantize(CENT, ROUND_HALF_UP)


def ix_total(items, tax_rates) -> Decimal:
    """The total IX would show for these request items (the sandbox's arithmetic, the oracle)."""
    return ix_request_amounts(items, tax_rates).total


def ix_net(item: dict, tax_rates) -> Fraction:
    """One request item's taxable amount as IX computes it, exact."""
    [line] = ix_request_amounts([item], tax_rates).lines
    return line.net


# --- one generator, two sources of choices -------------------------------------------------------------

class HypothesisSource:
    """Choices drawn by hypothesis; every draw shrinks towards the simplest value (0 / the first option)."""

    def __init__(self, draw):
        self.draw = draw

    def integer(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))

    def pick(self, options):
        return self.draw(st.sampled_from(options))


class RandomSource:
    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def pick(self, options):
        return self.rng.choice(options)


def chance(source, percent: int) -> bool:
    """True `percent` % of the time; shrinks to False."""
    return source.integer(0, 99) >= 100 - percent


def gen_price(source) -> Decimal:
    mode = source.integer(0, 2)
    if mode == 0:
        return Decimal(source.integer(1, 99999)) / 100
    if mode == 1:
        return Decimal(source.integer(0, 999)) + Decimal(source.pick(AWKWARD_CENTS)) / 100
    return source.pick(AWKWARD_PRICES)


def gen_quantity(source) -> int:
    return source.integer(1, 3) if chance(source, 80) else source.integer(1, 50)


def gen_percent(source) -> Decimal:
    return source.pick(COMMON_PERCENTS) if chance(source, 50) else Decimal(source.integer(0, 10000)) / 100


def shopify_order_discounts(grosses: list[Decimal], percent: Decimal) -> list[Decimal]:
    """An order-level percentage code, spread over the lines in proportion, the remainder cent(s) on the last."""
    subtotal = sum(grosses)
    total = round_cents(subtotal * percent / 100)
    shares = [round_cents(gross * total / subtotal) for gross in grosses[:-1]]
    last = total - sum(shares)
    shares.append(min(max(last, Decimal(0)), grosses[-1]))
    return shares


def gen_order(source) -> tuple[Order, Settings]:
    """An order as Shopify computes it, and the settings it is planned with."""
    rates = REGIONS[source.pick(("mainland", "mainland", "mainland", "madeira", "azores"))]
    taxes_included = source.pick((True, False))
    count = source.integer(1, 15)
    raw = [(gen_price(source), gen_quantity(source), source.pick(rates)) for _ in range(count)]
    grosses = [price * quantity for price, quantity, _ in raw]

    discount_mode = source.pick(("none", "order_percent", "line_fixed"))
    if discount_mode == "order_percent":
        discounts = shopify_order_discounts(grosses, gen_percent(source))
    elif discount_mode == "line_fixed":
        discounts = [Decimal(source.integer(0, int(gross * 100))) / 100 if chance(source, 50) else Decimal(0)
                     for gross in grosses]
    else:
        discounts = [Decimal(0)] * count

    lines = [
        Line(key=f"L{i}", description=f"Product {i}", unit_price=price, quantity=Decimal(quantity),
             tax_rate=rate, discount=discount)
        for i, ((price, quantity, rate), discount) in enumerate(zip(raw, discounts, strict=True))
    ]
    settings = SETTINGS
    shipping = source.pick(("none", "taxed", "untaxed"))
    if shipping != "none":
        price = source.pick(SHIPPING_PRICES) if chance(source, 50) else Decimal(source.integer(0, 2000)) / 100
        rate = rates[2] if shipping == "taxed" else Decimal(0)
        lines.append(Line(key="shipping", description="Shipping", unit_price=price, quantity=Decimal(1),
                          tax_rate=rate, kind="shipping"))
        if shipping == "untaxed":
            settings = EXEMPT_SETTINGS

    return order_of(tuple(lines), taxes_included, shop_total(lines, taxes_included)), settings


def shop_total(lines, taxes_included: bool) -> Decimal:
    """Shopify's total: gross lines as they are, or net lines plus each line's VAT rounded to the cent."""
    nets = [line.unit_price * line.quantity - line.discount for line in lines]
    if taxes_included:
        return sum(nets, Decimal(0))
    return sum(nets, Decimal(0)) + sum((round_cents(net * line.tax_rate / 100)
                                        for net, line in zip(nets, lines, strict=True)), Decimal(0))


def order_of(lines: tuple[Line, ...], taxes_included: bool, total: Decimal) -> Order:
    return Order(
        platform="shopify", store="s.myshopify.com", order_id="1001", name="#1001", currency="EUR",
        taxes_included=taxes_included, total=total, financial_status="paid",
        customer=Customer(key="customer-1", name="Ana Silva", email="ana@example.pt",
                          address=Address(line1="Rua Augusta 1", city="Lisboa", postal_code="1100-048",
                                          country_code="PT")),
        lines=lines, ship_to_country="PT",
    )


@st.composite
def shopify_orders(draw) -> tuple[Order, Settings]:
    return gen_order(HypothesisSource(draw))


# --- what the properties check ----------------------------------------------------------------------------

def exact_net(line: Line, taxes_included: bool) -> Decimal:
    """The shop line's taxable amount, unrounded."""
    net = line.unit_price * line.quantity - line.discount
    return net / (1 + line.tax_rate / 100) if taxes_included else net


def shop_gap_cents(order: Order) -> float:
    """How far the shop's total is from IX's exact model of the same lines (what fitting must absorb)."""
    exact = sum((exact_net(line, order.taxes_included) * (1 + line.tax_rate / 100) for line in order.lines),
                Decimal(0))
    return float(abs(order.total - exact) * 100)


def items_by_line(plan: Plan, order: Order) -> list[tuple[dict, Line]]:
    lines = {line.key: line for line in order.lines}
    return [(item, lines[item["name"]]) for item in plan.create_body["invoice"]["items"]]


def assert_held_with_both_totals(plan: Plan, order: Order) -> None:
    assert plan.verdict == "hold", plan
    computed = ix_total(plan.create_body["invoice"]["items"], plan.tax_rates)
    assert plan.computed_total == computed
    assert str(computed) in plan.reasons[0], plan.reasons
    assert str(order.total) in plan.reasons[0], plan.reasons


def check_sale(order: Order, settings: Settings, plan: Plan | None = None) -> Plan:
    """Property A: issued at exactly what was paid, with sane items; or held with both totals."""
    plan = plan or plan_sale(order, settings, today=TODAY)
    if plan.verdict == "hold":
        assert_held_with_both_totals(plan, order)
        return plan
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == plan.expected_total == order.total
    items = plan.create_body["invoice"]["items"]
    assert ix_total(items, settings.tax_rates) == order.total
    invoiced = [line for line in order.lines if line.unit_price * line.quantity != 0]
    assert [item["name"] for item in items] == [line.key for line in invoiced]
    for item, line in items_by_line(plan, order):
        price = item["unit_price"]
        assert price > 0
        assert price == price.quantize(UNIT_PRICE_PLACES), price
        assert item["quantity"] == line.quantity
        assert Decimal(0) <= item.get("discount", Decimal(0)) <= 100
    return plan


def visible_shift(item: dict, line: Line, taxes_included: bool, tax_rates) -> Fraction:
    """How far the item's net is from the shop line's exact net, per unit."""
    return abs(ix_net(item, tax_rates) - Fraction(exact_net(line, taxes_included))) / Fraction(line.quantity)


def tiny_lines(*specs: tuple[str, int, int], shipping: tuple[str, int] | None = None) -> tuple[Line, ...]:
    """Lines from (unit price, quantity, VAT %), and optionally a shipping line (price, VAT %)."""
    lines = tuple(Line(key=f"L{i}", description=f"Product {i}", unit_price=Decimal(price),
                       quantity=Decimal(quantity), tax_rate=Decimal(rate))
                  for i, (price, quantity, rate) in enumerate(specs))
    if shipping:
        lines += (Line(key="shipping", description="Shipping", unit_price=Decimal(shipping[0]),
                       quantity=Decimal(1), tax_rate=Decimal(shipping[1]), kind="shipping"),)
    return lines


def shop_order(lines: tuple[Line, ...], taxes_included: bool = False) -> Order:
    return order_of(lines, taxes_included, shop_total(lines, taxes_included))


# Tax excluded, 35 × 0.05 and 1 × 0.75 at 23 %: Shopify charges 1.75 + 0.40 + 0.75 + 0.17 = 3.07, IX's exact
# total is 2.50 × 1.23 = 3.075, which rounds half up to 3.08. The gap is exactly -0.005; fit_unit_prices'
# `lands` accepts gap - shift in [-0.005, 0.005) where half-up rounding needs (-0.005, 0.005], so "0 steps"
# on the 35-unit line is taken as a fit and the plan is issued at 3.08. (Hypothesis found it as a 12-line
# Azores order, 173.52 paid and issued at 173.53, after ~3,000 examples; this is the same gap made small.)
HALF_CENT_BELOW = (shop_order(tiny_lines(("0.05", 35, 23), ("0.75", 1, 23))), SETTINGS)
# (Fixed: `lands` once took [-0.005, 0.005); this order was issued a cent high.)
# Found by hypothesis (shrunk): three 0.02 lines at 13 % and shipping 0.02 at 23 %, tax excluded; Shopify
# rounds each line's VAT to 0.00 (total 0.08), IX's exact total is 0.0924. When `_allowed` took abs(steps) <= 100
# the shipping was fitted to 0.0100, a whole cent (half its price); now it must be held or fitted by less.
CENT_MOVED = (shop_order(tiny_lines(("0.02", 1, 13), ("0.02", 1, 13), ("0.02", 1, 13), shipping=("0.02", 23))),
              SETTINGS)


# --- the properties ---------------------------------------------------------------------------------------

@PROPERTY
@given(shopify_orders())
def test_a_shopify_order_is_issued_at_exactly_what_was_paid_or_held_with_both_totals(case):
    order, settings = case
    target(shop_gap_cents(order), label="cents between the shop's total and IX's exact model")
    plan = plan_sale(order, settings, today=TODAY)
    check_sale(order, settings, plan)
    event(f"verdict: {plan.verdict}")


def test_a_gap_of_exactly_half_a_cent_below_is_fitted_not_issued_a_cent_high():
    order, settings = HALF_CENT_BELOW
    assert order.total == Decimal("3.07")
    plan = plan_sale(order, settings, today=TODAY)
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == ix_total(plan.create_body["invoice"]["items"], settings.tax_rates) == order.total


# Found by a focused search: tax excluded, 925.13 at 23 % less 5.17, and five small lines whose rounded VAT
# adds up to a gap only the big line can absorb. The fit moves its price by 98 steps (925.1398), and the discount
# sent as 0.5588 % (exactly 0.55884...) takes 0.0003 less off: the item's net is 919.9701, 0.0101 above the
# shop's 919.96. `_allowed` budgets the price move (< 100 steps) but not the discount's rounding.
# (Fixed by keeping moves under 50 steps; the order was then held, as the search only tried the step counts
# nearest the middle of the cent: the big line +49 steps with a small one +11 lands it at 1132.58.)
DISCOUNT_ROUNDING = (
    shop_order(tuple(dataclasses.replace(line, discount=Decimal("5.17")) if line.key == "L0" else line
                     for line in tiny_lines(("925.13", 1, 23), ("0.26", 1, 6), ("0.30", 1, 13), ("0.10", 1, 6),
                                            ("0.13", 1, 6), ("0.14", 1, 13)))),
    SETTINGS)


def unfitted_price(line: Line, taxes_included: bool) -> Decimal:
    price = line.unit_price / (1 + line.tax_rate / 100) if taxes_included else line.unit_price
    return price.quantize(UNIT_PRICE_PLACES, ROUND_HALF_UP)


@PROPERTY
@given(shopify_orders())
@example(CENT_MOVED)
def test_fitting_never_moves_an_item_net_by_a_cent_per_unit(case):
    order, settings = case
    plan = plan_sale(order, settings, today=TODAY)
    if plan.verdict != "issue":
        return
    pairs = items_by_line(plan, order)
    shifts = [visible_shift(item, line, order.taxes_included, settings.tax_rates) for item, line in pairs]
    target(float(max(shifts)) * 10_000, label="largest shift per unit, in 0.0001 steps")
    for (item, line), shift in zip(pairs, shifts, strict=True):
        # The price itself never moves by a cent per unit.
        assert abs(item["unit_price"] - unfitted_price(line, order.taxes_included)) < CENT, (item, line)
        assert shift < CENT, (item, line)


def test_a_fitted_discounted_line_is_issued_under_a_cent_per_unit_from_the_shops_net():
    order, settings = DISCOUNT_ROUNDING
    assert order.total == Decimal("1132.58")
    plan = plan_sale(order, settings, today=TODAY)
    assert plan.verdict == "issue", plan.reasons
    assert plan.computed_total == ix_total(plan.create_body["invoice"]["items"], settings.tax_rates) == order.total
    for item, line in items_by_line(plan, order):
        assert visible_shift(item, line, order.taxes_included, settings.tax_rates) < CENT, item


@PROPERTY
@given(shopify_orders(), st.integers(1, 10_000), st.booleans())
def test_a_total_that_does_not_add_up_is_held_never_fitted(case, excess_cents, down):
    order, settings = case
    tolerance = CENT * len(order.lines) + CENT
    delta = (tolerance + CENT * excess_cents) * (-1 if down else 1)
    wrong = dataclasses.replace(order, total=order.total + delta)
    plan = plan_sale(wrong, settings, today=TODAY)
    assert_held_with_both_totals(plan, wrong)


def test_hold_rate_over_a_fixed_batch_of_shopify_orders_is_below_one_percent():
    rng = random.Random(20261124)
    batch = 2000
    holds = []
    for _ in range(batch):
        order, settings = gen_order(RandomSource(rng))
        plan = plan_sale(order, settings, today=TODAY)
        check_sale(order, settings, plan)
        if plan.verdict == "hold":
            holds.append(plan.reasons[0])
    rate = len(holds) / batch
    print(f"hold rate: {len(holds)}/{batch} = {rate:.2%}")
    assert rate < 0.01, holds[:5]


# --- the classic example -----------------------------------------------------------------------------------

def test_three_at_9_99_including_23_percent_is_8_1220_each_and_totals_29_97():
    line = Line(key="L0", description="Mug", unit_price=Decimal("9.99"), quantity=Decimal(3),
                tax_rate=Decimal(23))
    order = order_of((line,), taxes_included=True, total=Decimal("29.97"))
    plan = plan_sale(order, SETTINGS, today=TODAY)
    assert plan.verdict == "issue", plan.reasons
    [item] = plan.create_body["invoice"]["items"]
    assert item["unit_price"] == Decimal("8.1220")
    assert item["quantity"] == 3
    assert plan.computed_total == ix_total([item], SETTINGS.tax_rates) == Decimal("29.97")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_generator_follows_shopify_arithmetic(seed):
    """The generator itself: discounts within their lines, totals as Shopify adds them."""
    rng = random.Random(seed)
    for _ in range(200):
        order, _ = gen_order(RandomSource(rng))
        assert 1 <= len([line for line in order.lines if line.kind == "product"]) <= 15
        for line in order.lines:
            assert 0 <= line.discount <= line.unit_price * line.quantity
        assert order.total == shop_total(order.lines, order.taxes_included)
        assert order.total == round_cents(order.total)
