"""Hand-worked documents pin IX's arithmetic twice: the sandbox's own account of it and the connector's."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from connector.invoicexpress.totals import document_total
from devtools import invoicexpress_sandbox as sandbox
from devtools.invoicexpress_sandbox import TAX_RATES, ix_request_amounts, to_cents

KEY = "secret-key"


def item(price: str, quantity: str = "1", tax: str = "IVA23", discount: str | None = None) -> dict[str, Any]:
    line: dict[str, Any] = {"name": "SKU", "description": "Product", "unit_price": price, "quantity": quantity,
                            "tax": {"name": tax}}
    if discount is not None:
        line["discount"] = discount
    return line


def shown(sum_: str, discount: str, before_taxes: str, taxes: str, total: str) -> dict[str, Decimal]:
    return {"sum": Decimal(sum_), "discount": Decimal(discount), "before_taxes": Decimal(before_taxes),
            "taxes": Decimal(taxes), "total": Decimal(total)}


# (id, items, global_discount, the same document as the connector writes it (line discounts only; None: the
# items themselves), what IX shows). Every figure worked out by hand in the comment above it.
CASES = [
    # Tax-inclusive 3 × 9.99 at 23 %: 9.99 / 1.23 = 8.121951… → 8.1220 net. 3 × 8.1220 = 24.366 → sum 24.37;
    # tax 24.366 × 0.23 = 5.60418 → 5.60; total 24.366 × 1.23 = 29.97018 → 29.97.
    ("tax-inclusive 3 x 9.99", [item("8.1220", "3")], None, None,
     shown("24.37", "0.00", "24.37", "5.60", "29.97")),
    # Tax-inclusive 10.00 at 23 %: 10 / 1.23 = 8.130081… → 8.1301. Tax 8.1301 × 0.23 = 1.869923 → 1.87;
    # total 8.1301 × 1.23 = 9.999923 → 10.00.
    ("tax-inclusive 10.00", [item("8.1301")], None, None,
     shown("8.13", "0.00", "8.13", "1.87", "10.00")),
    # Tax-inclusive 2 × 19.99 at 23 % less 5.00: 19.99 / 1.23 = 16.252032… → 16.2520; discount 5 / 39.98 =
    # 12.50625…% → 12.5063. Subtotal 32.504 → 32.50; discount 32.504 × 0.125063 = 4.065047752 → 4.07;
    # net 28.438952248 → 28.44; tax × 0.23 = 6.540959017 → 6.54; total × 1.23 = 34.979911265 → 34.98.
    ("tax-inclusive with a line discount", [item("16.2520", "2", discount="12.5063")], None, None,
     shown("32.50", "4.07", "28.44", "6.54", "34.98")),
    # 2 × 10 less 10 % at 6 %: 20 − 2 = 18, tax 1.08. 3 × 3.3333 at 23 %: 9.9999, tax 2.299977. 5 at 0 %.
    # Sum 34.9999 → 35.00; discount 2.00; before 32.9999 → 33.00; taxes 3.379977 → 3.38;
    # total 32.9999 + 3.379977 = 36.379877 → 36.38.
    ("line discounts, mixed rates",
     [item("10", "2", "IVA6", discount="10"), item("3.3333", "3"), item("5", "1", "IVA0")], None, None,
     shown("35.00", "2.00", "33.00", "3.38", "36.38")),
    # 1.0260 at 23 %: before 1.026 → 1.03 (up 0.004), tax 0.23598 → 0.24 (up 0.004), but the total is
    # 1.26198 → 1.26: rounded once, not 1.03 + 0.24 = 1.27.
    ("total rounded once, not the sum of rounded parts", [item("1.0260")], None, None,
     shown("1.03", "0.00", "1.03", "0.24", "1.26")),
    # 1.50 at 23 %: tax 0.345, total 1.845 — both exactly on the half cent: half up gives 0.35 and 1.85
    # (half even would give 0.34 and 1.84).
    ("half a cent rounds up", [item("1.50")], None, None,
     shown("1.50", "0.00", "1.50", "0.35", "1.85")),
    # 2.5 × 3.99 at 6 %: 9.975 → 9.98; tax 0.5985 → 0.60; total 10.5735 → 10.57 (not 9.98 + 0.60).
    ("fractional quantity", [item("3.99", "2.5", "IVA6")], None, None,
     shown("9.98", "0.00", "9.98", "0.60", "10.57")),
    # 2 × 12.50 at 23 % and 8.00 at 6 %, 10 % off the whole document: nets 22.50 and 7.20. Sum 33.00,
    # discount 3.30, before 29.70; taxes 22.50 × 0.23 + 7.20 × 0.06 = 5.175 + 0.432 = 5.607 → 5.61;
    # total 35.307 → 35.31. The connector would say it as 10 % off each line.
    ("global discount, percentage", [item("12.50", "2"), item("8.00", "1", "IVA6")],
     {"value_type": "percentage", "value": 10},
     [item("12.50", "2", discount="10"), item("8.00", "1", "IVA6", discount="10")],
     shown("33.00", "3.30", "29.70", "5.61", "35.31")),
    # 40.00 at 23 % and 10.00 at 13 %, 5.00 off (net): shared 4.00 and 1.00, nets 36.00 and 9.00. Taxes 8.28
    # + 1.17 = 9.45; total 54.45. As line discounts: 10 % off each.
    ("global discount, absolute", [item("40.00"), item("10.00", "1", "IVA13")],
     {"value_type": "absolute", "value": 5},
     [item("40.00", discount="10"), item("10.00", "1", "IVA13", discount="10")],
     shown("50.00", "5.00", "45.00", "9.45", "54.45")),
    # 100.00 less 20 % at 23 %, then 50 % off the document: 80 → 40. Discount 60.00, tax 9.20, total 49.20.
    # As one line discount: 20 + 50 − 20 × 50 / 100 = 60 %.
    ("line and global discount", [item("100.00", discount="20")], {"value_type": "percentage", "value": 50},
     [item("100.00", discount="60")], shown("100.00", "60.00", "40.00", "9.20", "49.20")),
    # 30 × 0.02 at 13 % and 20 × 0.03 at 6 %, each its own line: bases 0.60 and 0.60, taxes 0.078 and 0.036
    # = 0.114 → 0.11; total 1.314 → 1.31. Rounding each line (0.0226 → 0.02, 0.0318 → 0.03) would give 1.20.
    ("many small lines, mixed rates", [item("0.02", "1", "IVA13")] * 30 + [item("0.03", "1", "IVA6")] * 20,
     None, None, shown("1.20", "0.00", "1.20", "0.11", "1.31")),
    # 40 lines of 0.10 tax-inclusive at 23 %: 0.10 / 1.23 = 0.0813008… → 0.0813. Base 3.252 → 3.25;
    # tax 0.74796 → 0.75; total 3.252 × 1.23 = 3.99996 → 4.00.
    ("many small tax-inclusive lines", [item("0.0813")] * 40, None, None,
     shown("3.25", "0.00", "3.25", "0.75", "4.00")),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "items", "global_discount", "as_connector", "expected"), CASES, ids=IDS)
def test_the_sandbox_arithmetic_gives_the_hand_worked_figures(name, items, global_discount, as_connector,
                                                            expected):
    assert ix_request_amounts(items, TAX_RATES, global_discount).shown() == expected


@pytest.mark.parametrize(("name", "items", "global_discount", "as_connector", "expected"), CASES, ids=IDS)
def test_the_connector_totals_give_the_hand_worked_total(name, items, global_discount, as_connector, expected):
    written = as_connector or items
    assert document_total(written, TAX_RATES) == expected["total"]
    # The connector's way of writing a global discount is the same document to IX.
    assert ix_request_amounts(written, TAX_RATES).shown() == expected


@pytest.mark.parametrize(("name", "items", "global_discount", "as_connector", "expected"), CASES, ids=IDS)
def test_a_sandbox_document_shows_the_hand_worked_figures(name, items, global_discount, as_connector, expected):
    body: dict[str, Any] = {
        "date": "10/03/2026", "due_date": "10/03/2026", "tax_exemption": "M99",
        "client": {"name": "Ana Silva", "code": "shop-1"}, "items": items,
    }
    if global_discount:
        body["global_discount"] = global_discount
    response = sandbox.create_app(KEY).test_client().post(f"/invoices.json?api_key={KEY}", json={"invoice": body})
    assert response.status_code == 201, response.json
    doc = response.json["invoice"]
    assert {key: Decimal(str(doc[key])).quantize(Decimal("0.01")) for key in expected} == expected
    if global_discount:
        assert doc["global_discount"] == {"value_type": global_discount["value_type"],
                                          "value": float(global_discount["value"])}


@pytest.mark.parametrize("bad", [
    {"value_type": "fixed", "value": 5},
    {"value_type": "percentage", "value": 101},
    {"value_type": "absolute", "value": -1},
    {"value_type": "percentage", "value": "ten"},
    "10%",
])
def test_a_global_discount_ix_could_not_read_is_refused(bad):
    body = {"date": "10/03/2026", "due_date": "10/03/2026", "client": {"name": "Ana", "code": "c"},
            "items": [item("10")], "global_discount": bad}
    response = sandbox.create_app(KEY).test_client().post(f"/invoices.json?api_key={KEY}", json={"invoice": body})
    assert response.status_code == 422
    assert {"error": "Global discount is invalid"} in response.json["errors"]


@pytest.mark.parametrize(("amount", "cents"), [
    ("0.005", "0.01"), ("0.00499", "0.00"), ("-0.005", "-0.01"), ("2.675", "2.68"), ("1.845", "1.85"),
    ("-1.844", "-1.84"), ("0", "0.00"),
])
def test_money_rounds_half_away_from_zero(amount, cents):
    assert to_cents(Fraction(amount)) == Decimal(cents)


def _decimals(places: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(0, high * 10**places).map(lambda n: str(Decimal(n).scaleb(-places)))


request_items = st.lists(
    st.builds(
        item,
        price=_decimals(4, 2000),
        quantity=st.integers(1, 60).map(str) | _decimals(3, 20).filter(lambda q: Decimal(q) > 0),
        tax=st.sampled_from(sorted(TAX_RATES)),
        discount=st.none() | _decimals(4, 100),
    ),
    min_size=1,
    max_size=25,
)


@hsettings(max_examples=300, deadline=None)
@given(request_items)
def test_the_connector_and_the_sandbox_agree_on_any_request(items):
    assert document_total(items, TAX_RATES) == ix_request_amounts(items, TAX_RATES).total
