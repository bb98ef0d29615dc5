"""Hypothesis strategies for Shopify payloads, shared by the intake's fuzz tests and the worker's: any JSON,
and real paid orders (tests/fixtures/shopify) with keys deleted, values of the wrong type, amounts out of
range, odd texts and repeated list items."""

from __future__ import annotations

import copy
import json

from hypothesis import strategies as st

from tests.conftest import FIXTURES, fixture_body

# Text with everything, lone surrogates included (json.dumps writes them as \udXXX escapes).
any_text = st.text(st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)),
                   max_size=30)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400), st.floats(), any_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4),
    max_leaves=15,
)
json_objects = st.dictionaries(any_text, json_values, max_size=6)


ORDER_FIXTURES = sorted(p.name for p in (FIXTURES / "shopify").glob("*.json") if p.name != "cases.json")
ORDERS = {name: json.loads(fixture_body(name)) for name in ORDER_FIXTURES}
BASE_ORDER = "paid_b2c_tax_included.json"
# Keys the order schema reads: most mutations aim at paths made only of these (and their `_set`s).
SCHEMA_KEYS = frozenset("""
    id name currency presentment_currency total_price financial_status test taxes_included processed_at
    created_at email contact_email customer billing_address shipping_address note_attributes line_items
    shipping_lines product_id variant_id sku title variant_title price quantity taxable gift_card tip
    tip_payment_gateway tax_lines discount_allocations rate amount discounted_price first_name last_name
    company address1 address2 city zip country_code value shop_money presentment_money
""".split())
WRONG_VALUES = st.sampled_from([
    None, "", " ", "abc", "-1", -1, 0, "0", 1.5, "1.5", "-0.01", "0.001", "1e999999", "-1e999999", "1E+400",
    "1e-999999", "NaN", "Infinity", "sNaN", 1e308, -1e308, 5e-324, -0.0, float("nan"), float("inf"),
    10**40, -(10**40), 2**63, "9" * 40, "99999999999999999999999999999.99", True, False, [], {}, [None],
    [{}], {"amount": None}, {"presentment_money": {"amount": "1e999999"}}, "\x00", "\ud800", "€", "x" * 300,
    "EURO", "eur", "pt", "\n", "line\nbreak", 23, "23", 0.23,
])
AMOUNTS = st.one_of(
    st.sampled_from(["1e999999", "1E+400", "1e-999999", "1" * 40, 10**40, 1e308,
                     "99999999999999999999999999999.99"]),
    st.sampled_from(["-1", "NaN", "Infinity", "0", "0.001", "", "abc", -5, 0.1, 2, "7", 1000]),
    st.decimals(allow_nan=False, allow_infinity=False).map(str),
)


def paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def read_by_schema(path) -> bool:
    """Whether the order schema reads this path (an amount's `_set` counts as the amount)."""
    return all(isinstance(k, int) or k in SCHEMA_KEYS or k.removesuffix("_set") in SCHEMA_KEYS for k in path)


NUMBER_KEYS = frozenset({"price", "amount", "rate", "quantity", "total_price", "discounted_price"})
TEXT_KEYS = frozenset({"name", "title", "variant_title", "sku", "currency", "presentment_currency", "email",
                       "financial_status", "company", "country_code", "first_name", "last_name", "value"})
TEXTS = st.one_of(any_text, st.sampled_from(["\ud800", "\x00", "x" * 300, "", " ", "#1\n2", "€€€", "pt"]))


@st.composite
def mutated_orders(draw) -> dict:
    """A real paid order with keys deleted, values of the wrong type, amounts out of range, odd texts, list
    items repeated."""
    name = draw(st.one_of(st.just(BASE_ORDER), st.sampled_from(ORDER_FIXTURES)))
    return mutate(draw, copy.deepcopy(ORDERS[name]), read=read_by_schema, number_keys=NUMBER_KEYS,
                  text_keys=TEXT_KEYS, amount_sets=True)


def mutate(draw, order: dict, *, read, number_keys, text_keys, amount_sets: bool = False) -> dict:
    """One to three mutations of `order`, in place, most aimed at the paths `read` says the loading reads.

    `amount_sets`: an amount has a `{key}_set` twin that is written with it (Shopify's money sets); only
    amounts under a named key are then changed as amounts."""
    for _ in range(draw(st.integers(1, 3))):
        every = list(paths(order))
        action = draw(st.sampled_from(["delete", "wrong value", "any value", "amount", "text", "repeat"]))
        aimed = [p for p in every if read(p)]
        if action == "amount":
            aimed = [p for p in aimed if p[-1] in number_keys]
        elif action == "text":
            aimed = [p for p in aimed if p[-1] in text_keys]
        candidates = aimed if aimed and (action in ("amount", "text") or draw(st.integers(0, 3))) else every
        if not candidates:
            break
        path = draw(st.sampled_from(candidates))
        parent = order
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if action == "delete":
            del parent[key]
        elif action == "repeat" and isinstance(parent[key], list) and parent[key]:
            parent[key].append(copy.deepcopy(draw(st.sampled_from(parent[key]))))
        elif action == "amount" and (isinstance(key, str) or not amount_sets):
            parent[key] = amount = draw(AMOUNTS)
            if amount_sets and f"{key}_set" in parent:  # the plain figure and its `_set` alike
                parent[f"{key}_set"] = {"shop_money": {"amount": amount}, "presentment_money": {"amount": amount}}
        else:
            parent[key] = draw({"wrong value": WRONG_VALUES, "text": TEXTS}.get(action, json_values))
    return order
