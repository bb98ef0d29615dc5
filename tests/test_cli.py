"""`flask preview`: what an order event would produce, as one JSON object; it calls nothing and writes nothing."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from decimal import Decimal

import pytest
import responses
import sqlalchemy as sa

from connector import issuing
from connector.extensions import db
from connector.plans import plan_sale
from connector.platforms import shopify
from tests.conftest import FIXTURES

REPO_ROOT = FIXTURES.parents[1]

SHOPIFY = FIXTURES / "shopify"
# What each fixture must give (tests/fixtures/shopify/cases.json); PAID are those to be issued.
CASES = {case["file"]: case for case in json.loads((SHOPIFY / "cases.json").read_text())}
PAID = sorted(name for name, case in CASES.items() if case["expect"] == "issue")
KEYS = {"platform", "topic", "verdict", "reasons", "currency", "expected_total", "computed_total", "requests"}


@pytest.fixture
def preview(app, redis):
    """Run `preview` with no HTTP allowed; afterwards no table has a row and Redis holds nothing."""
    runner = app.test_cli_runner()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as http:
        yield lambda *args, **kwargs: runner.invoke(args=["preview", *args], **kwargs)
        assert len(http.calls) == 0
    db.session.rollback()
    for table in db.metadata.sorted_tables:
        assert db.session.scalar(sa.select(sa.func.count()).select_from(table)) == 0, table.name
    assert redis.keys("*") == []


def shown(result) -> dict:
    """The one JSON object preview printed (fails if anything else is on stdout)."""
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert result.stderr == ""
    value = json.loads(result.stdout)
    assert isinstance(value, dict)
    return value


def paid_total(name: str) -> str:
    return CASES[name]["paid_total"]


def test_there_are_paid_fixtures():
    assert len(PAID) >= 5


@pytest.mark.parametrize("name", PAID)
def test_a_paid_order_shows_one_object_with_the_contract_keys(preview, name):
    output = shown(preview("shopify", str(SHOPIFY / name)))

    assert set(output) == KEYS
    assert output["platform"] == "shopify"
    assert output["topic"] == "orders/paid"
    assert output["verdict"] == "issue"
    assert all(isinstance(reason, str) for reason in output["reasons"])  # notes on what was decided
    assert output["currency"] == CASES[name]["currency"]


@pytest.mark.parametrize("name", PAID)
def test_a_paid_order_shows_matching_totals_as_decimal_strings(preview, name):
    output = shown(preview("shopify", str(SHOPIFY / name)))

    assert isinstance(output["expected_total"], str)
    assert re.fullmatch(r"\d+\.\d{2}", output["expected_total"])
    assert output["expected_total"] == paid_total(name)
    assert output["computed_total"] == output["expected_total"]


@pytest.mark.parametrize("name", PAID)
def test_a_paid_order_shows_create_finalize_and_email_requests(preview, name):
    order = json.loads((SHOPIFY / name).read_text())
    output = shown(preview("shopify", str(SHOPIFY / name)))
    create, finalize, email = output["requests"]

    assert (create["method"], create["path"]) == ("POST", "/invoice_receipts.json")
    assert set(create["body"]) == {"invoice", "proprietary_uid"}
    invoice = create["body"]["invoice"]
    assert invoice["client"]["name"]
    assert invoice["reference"] == order["name"]
    assert invoice["items"]
    assert all(item["tax"]["name"] for item in invoice["items"])
    assert str(order["id"]) in create["body"]["proprietary_uid"]

    assert finalize == {
        "method": "PUT",
        "path": "/invoice_receipts/{id}/change-state.json",
        "body": {"invoice": {"state": "finalized"}},
    }

    assert (email["method"], email["path"]) == ("PUT", "/invoice_receipts/{id}/email-document.json")
    assert set(email["body"]) == {"message"}
    assert email["body"]["message"]["client"]["email"] == order["email"]
    assert order["name"] in email["body"]["message"]["subject"]


def test_the_same_order_always_gets_the_same_idempotency_key(preview):
    path = str(SHOPIFY / "paid_mixed_rates.json")
    first = shown(preview("shopify", path))["requests"][0]["body"]["proprietary_uid"]
    second = shown(preview("shopify", path))["requests"][0]["body"]["proprietary_uid"]

    assert first == second


@pytest.mark.parametrize("name", PAID)
def test_amounts_inside_request_bodies_are_json_numbers(app, preview, name):
    result = preview("shopify", str(SHOPIFY / name))
    assert result.exit_code == 0
    output = json.loads(result.stdout, parse_float=Decimal)
    settings = issuing.settings_for(None)
    order = shopify.to_order(json.loads((SHOPIFY / name).read_text()), store="preview",
                             tax_id_keys=settings.tax_id_keys)
    planned = plan_sale(order, settings).create_body["invoice"]["items"]

    shown_items = output["requests"][0]["body"]["invoice"]["items"]
    assert len(shown_items) == len(planned)
    for item, sent in zip(shown_items, planned, strict=True):
        assert set(item) == set(sent)
        for field in ("unit_price", "quantity", "discount"):
            if field in item:
                value = item[field]
                assert isinstance(value, int | Decimal) and not isinstance(value, bool), (field, value)
                assert Decimal(value) == Decimal(sent[field]), field
    # The totals beside the requests stay exact decimal strings.
    assert isinstance(output["expected_total"], str) and isinstance(output["computed_total"], str)


def test_a_discounted_order_shows_its_discount_as_a_number(preview):
    output = json.loads(preview("shopify", str(SHOPIFY / "paid_with_discount_and_nif.json")).stdout)
    discounts = [
        item["discount"] for item in output["requests"][0]["body"]["invoice"]["items"] if "discount" in item
    ]

    assert discounts
    assert all(isinstance(d, int | float) and d > 0 for d in discounts)


def test_an_unpaid_order_owes_nothing_and_says_why(preview):
    output = shown(preview("shopify", str(SHOPIFY / "authorized_not_paid.json")))

    assert set(output) == KEYS
    assert output["verdict"] == "none"
    assert output["requests"] == []
    assert len(output["reasons"]) == 1
    assert "not paid" in output["reasons"][0]
    assert output["computed_total"] is None


def test_a_topic_the_connector_does_not_act_on_owes_nothing(preview):
    output = shown(preview("shopify", str(SHOPIFY / "paid_mixed_rates.json"), "--topic", "orders/updated"))

    assert output["platform"] == "shopify"
    assert output["topic"] == "orders/updated"
    assert output["verdict"] == "none"
    assert output["reasons"] and "orders/updated" in output["reasons"][0]


def test_a_refund_without_its_order_asks_for_it(preview):
    output = shown(preview("shopify", str(SHOPIFY / "refunds_create.json"), "--topic", "refunds/create"))

    assert output["verdict"] == "hold"
    assert "--order" in output["reasons"][0]


def test_a_topic_the_connector_does_not_act_on_keeps_the_object_shape(preview):
    output = shown(preview("shopify", str(SHOPIFY / "paid_mixed_rates.json"), "--topic", "orders/updated"))

    assert set(output) == KEYS
    assert output["requests"] == []


def assert_fails_with_one_line_naming_it(preview, platform: str, path, content: bytes) -> None:
    """Previewing the file fails with one line on stderr that names it: no output, no traceback."""
    path.write_bytes(content)

    result = preview(platform, str(path))

    assert result.exit_code != 0
    assert result.stdout == ""
    error = result.stderr.strip()
    assert error and "\n" not in error
    assert path.name in error
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("notes.txt", b"this is not json\nat all\n"),
        ("empty.json", b""),
        ("binary.json", b"\xff\xfe\x00\x81garbage"),
        ("list.json", b"[1, 2, 3]"),
        ("string.json", b'"orders/paid"'),
        ("empty_object.json", b"{}"),
        ("customer.json", b'{"id": 1, "email": "a@example.pt", "first_name": "Ana"}'),
        ("bad_lines.json", b'{"id": 1, "currency": "EUR", "total_price": "1.00", "line_items": "none"}'),
    ],
)
def test_a_file_that_is_not_an_order_fails_with_one_line(preview, tmp_path, filename, content):
    assert_fails_with_one_line_naming_it(preview, "shopify", tmp_path / filename, content)


def test_a_refund_body_under_the_paid_topic_fails_with_one_line(preview):
    result = preview("shopify", str(SHOPIFY / "refunds_create.json"))

    assert result.exit_code != 0
    assert result.stdout == ""
    error = result.stderr.strip()
    assert error and "\n" not in error
    assert "refunds_create.json" in error


def test_a_missing_file_fails_without_output(preview, tmp_path):
    result = preview("shopify", str(tmp_path / "nowhere.json"))

    assert result.exit_code != 0
    assert result.stdout == ""
    assert "nowhere.json" in result.stderr


def test_an_unknown_platform_fails_without_output(preview):
    result = preview("stripe", str(SHOPIFY / "paid_mixed_rates.json"))

    assert result.exit_code != 0
    assert result.stdout == ""
    assert "stripe" in result.stderr


def test_preview_reads_standard_input(preview):
    result = preview("shopify", "-", input=(SHOPIFY / "paid_tax_excluded.json").read_bytes())

    assert shown(result)["expected_total"] == paid_total("paid_tax_excluded.json")


def test_preview_writes_nothing_and_calls_nothing_whatever_the_event(preview, tmp_path):
    # The `preview` fixture checks, after this test, that every table is empty, Redis is empty and
    # no HTTP request was attempted.
    for name in [*PAID, "authorized_not_paid.json"]:
        assert preview("shopify", str(SHOPIFY / name)).exit_code == 0
    assert preview("shopify", str(SHOPIFY / "refunds_create.json"), "--topic", "refunds/create").exit_code == 0
    assert preview("shopify", str(SHOPIFY / "refunds_create.json")).exit_code != 0


def test_a_refund_with_its_order_shows_the_credit_note_that_will_be_issued(preview):
    output = shown(preview("shopify", str(SHOPIFY / "refund_with_restocking_fee.json"), "--topic",
                           "refunds/create", "--order", str(SHOPIFY / "paid_b2b_nif_in_company.json")))

    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == "147.00"
    assert output["requests"][0]["path"] == "/credit_notes.json"


def wrapped(tmp_path, name: str, key: str) -> str:
    """The fixture as Shopify's REST API returns it: the object under one key."""
    path = tmp_path / f"api_{name}"
    path.write_text(json.dumps({key: json.loads((SHOPIFY / name).read_text())}))
    return str(path)


def test_an_order_as_the_rest_api_returns_it_previews_as_its_webhook_body(preview, tmp_path):
    name = "paid_with_discount_and_nif.json"
    as_webhook = shown(preview("shopify", str(SHOPIFY / name)))
    as_api = shown(preview("shopify", wrapped(tmp_path, name, "order")))

    assert as_api == as_webhook
    assert as_api["verdict"] == "issue"


def test_a_refund_and_its_order_as_the_rest_api_returns_them_preview_the_credit_note(preview, tmp_path):
    output = shown(preview("shopify", wrapped(tmp_path, "refund_with_restocking_fee.json", "refund"),
                           "--topic", "refunds/create",
                           "--order", wrapped(tmp_path, "paid_b2b_nif_in_company.json", "order")))

    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == "147.00"
    assert output["requests"][0]["path"] == "/credit_notes.json"


def test_an_object_holding_more_than_the_order_is_not_taken_for_an_answer_of_the_api(preview, tmp_path):
    path = tmp_path / "two_keys.json"
    path.write_text(json.dumps({"order": json.loads((SHOPIFY / "paid_tax_excluded.json").read_text()),
                                "note": "x"}))

    result = preview("shopify", str(path))

    assert result.exit_code != 0
    assert "two_keys.json" in result.stderr


def flask_command(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`flask --app wsgi ARGS` in a fresh process whose environment holds only `env` (and PATH)."""
    return subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=REPO_ROOT,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO_ROOT), **env},
                          capture_output=True, text=True, timeout=60)


def test_preview_runs_with_no_database_redis_secret_or_invoicexpress_settings():
    result = flask_command("preview", "shopify", str(SHOPIFY / "paid_b2c_tax_included.json"),
                           DOCUMENT_TYPE="invoice")

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["verdict"] == "issue"
    assert output["expected_total"] == paid_total("paid_b2c_tax_included.json")
    # The planning settings it was given are the ones it used.
    assert output["requests"][0]["path"] == "/invoices.json"


def test_preview_names_a_bad_planning_setting():
    result = flask_command("preview", "shopify", str(SHOPIFY / "paid_b2c_tax_included.json"),
                           DOCUMENT_TYPE="receipt")

    assert result.returncode != 0
    assert "DOCUMENT_TYPE" in result.stderr
    assert result.stdout == ""


def test_other_commands_without_the_settings_say_what_is_missing():
    result = flask_command("sweep")

    assert result.returncode != 0
    assert "DATABASE_URL is not set" in result.stderr
    assert "REDIS_URL is not set" in result.stderr
    assert "Traceback" not in result.stderr


# --- WooCommerce: an order as its webhook or REST API gives it, and a refund as its REST API gives it ---

WOOCOMMERCE = FIXTURES / "woocommerce"
WOO_PAID = ["paid_b2c_prices_include_tax.json", "paid_b2b_with_nif_meta.json"]
WOO_ORDER = WOOCOMMERCE / "refunded_partial.json"  # the order both refund objects belong to


def woo(name: str) -> dict:
    return json.loads((WOOCOMMERCE / name).read_text())


def body_total(app, request: dict) -> Decimal:
    """What IX will compute from a create request's items, with the planning settings' tax rates."""
    from connector.invoicexpress.totals import document_total

    with app.app_context():
        rates = issuing.settings_for(None).tax_rates
    return document_total(request["body"]["invoice"]["items"], rates)


def test_woocommerce_fixtures_cover_both_tax_bases():
    assert {woo(name)["prices_include_tax"] for name in WOO_PAID} == {True, False}


@pytest.mark.parametrize("name", WOO_PAID)
def test_a_paid_woocommerce_order_previews_the_invoice_for_what_was_paid(app, preview, name):
    order = woo(name)
    output = shown(preview("woocommerce", str(WOOCOMMERCE / name)))
    create, finalize, email = output["requests"]

    assert set(output) == KEYS
    assert (output["platform"], output["topic"]) == ("woocommerce", "order.updated")
    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == order["total"]
    assert (create["method"], create["path"]) == ("POST", "/invoice_receipts.json")
    assert body_total(app, create) == Decimal(order["total"])
    assert create["body"]["invoice"]["reference"] == f"#{order['number']}"
    assert str(order["id"]) in create["body"]["proprietary_uid"]
    assert finalize["path"] == "/invoice_receipts/{id}/change-state.json"
    assert email["body"]["message"]["client"]["email"] == order["billing"]["email"]


def test_a_woocommerce_order_is_the_same_whether_pasted_from_its_webhook_or_read_from_standard_input(preview):
    path = WOOCOMMERCE / "paid_b2c_prices_include_tax.json"

    assert shown(preview("woocommerce", "-", input=path.read_bytes())) == shown(preview("woocommerce", str(path)))


@pytest.mark.parametrize(("name", "words"), [
    ("on_hold.json", "on hold"),
    ("completed_without_date_paid.json", "no payment date"),
])
def test_a_woocommerce_order_not_paid_owes_nothing_and_says_why(preview, name, words):
    output = shown(preview("woocommerce", str(WOOCOMMERCE / name)))

    assert set(output) == KEYS
    assert output["verdict"] == "none"
    assert output["requests"] == []
    assert output["computed_total"] is None
    assert len(output["reasons"]) == 1 and words in output["reasons"][0]
    assert f"#{woo(name)['number']}" in output["reasons"][0]


@pytest.mark.parametrize("refund_name", ["refund_line_items.json", "refund_amount_only.json"])
def test_a_woocommerce_refund_with_its_order_previews_the_credit_note_for_the_refunded_amount(
        app, preview, refund_name):
    refund = woo(refund_name)
    output = shown(preview("woocommerce", str(WOOCOMMERCE / refund_name), "--order", str(WOO_ORDER)))
    create, finalize, *_ = output["requests"]

    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == refund["amount"]
    assert (create["method"], create["path"]) == ("POST", "/credit_notes.json")
    assert body_total(app, create) == Decimal(refund["amount"])
    assert f"refund:{refund['id']}:credit_note" in create["body"]["proprietary_uid"]
    assert create["body"]["invoice"]["reference"] == f"#{woo('refunded_partial.json')['number']} R{refund['id']}"
    assert finalize["path"] == "/credit_notes/{id}/change-state.json"


def test_a_refund_of_lines_credits_those_lines_and_the_shipping(preview):
    output = shown(preview("woocommerce", str(WOOCOMMERCE / "refund_line_items.json"), "--order", str(WOO_ORDER)))
    items = output["requests"][0]["body"]["invoice"]["items"]

    assert [(item["name"], item["quantity"]) for item in items] == [("CAN-AZUL", 1), ("shipping", 1)]
    assert output["reasons"] == []


def test_an_amount_only_refund_is_spread_over_the_invoice_and_other_refunds_are_named(preview):
    output = shown(preview("woocommerce", str(WOOCOMMERCE / "refund_amount_only.json"), "--order", str(WOO_ORDER)))
    [item] = output["requests"][0]["body"]["invoice"]["items"]

    assert item["tax"]["name"] == "IVA23"  # the order's only VAT rate
    # The order already lists refund 1301: its credit note would leave less to credit.
    assert len(output["reasons"]) == 1 and "1301" in output["reasons"][0]


def test_a_woocommerce_refund_without_its_order_asks_for_the_paid_order(preview):
    output = shown(preview("woocommerce", str(WOOCOMMERCE / "refund_line_items.json")))

    assert set(output) == KEYS
    assert output["verdict"] == "hold"
    assert output["requests"] == []
    assert output["expected_total"] == woo("refund_line_items.json")["amount"]
    assert len(output["reasons"]) == 1
    assert "give the paid order too" in output["reasons"][0] and "--order" in output["reasons"][0]


def test_a_woocommerce_refund_given_another_order_fails_with_one_line(preview):
    result = preview("woocommerce", str(WOOCOMMERCE / "refund_line_items.json"),
                     "--order", str(WOOCOMMERCE / "paid_b2c_prices_include_tax.json"))

    assert result.exit_code != 0
    assert result.stdout == ""
    error = result.stderr.strip()
    assert error and "\n" not in error and "another order" in error


def test_an_order_with_refunds_previews_its_sale_and_says_how_to_preview_each_credit_note(preview):
    order = woo("refunded_partial.json")
    output = shown(preview("woocommerce", str(WOO_ORDER)))

    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == order["total"]
    assert output["requests"][0]["path"] == "/invoice_receipts.json"
    [note] = output["reasons"]
    [refund] = order["refunds"]
    assert f"Refund {refund['id']} will become a credit note" in note
    assert "flask --app wsgi preview woocommerce REFUND_FILE --order ORDER_FILE" in note


def test_a_cancelled_woocommerce_order_issues_nothing(preview):
    output = shown(preview("woocommerce", str(WOOCOMMERCE / "cancelled.json")))

    assert output["verdict"] == "none"
    assert output["requests"] == []
    assert "cancellation" in output["reasons"][0].lower()


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("notes.txt", b"this is not json\nat all\n"),
        ("empty.json", b""),
        ("list.json", b"[1, 2, 3]"),
        ("empty_object.json", b"{}"),
        ("product.json", b'{"id": 88, "name": "Caneca", "type": "variable", "price": "12.30"}'),
        ("coupon.json", b'{"id": 7, "code": "natal", "amount": "5.00", "discount_type": "percent"}'),
        ("bad_lines.json", b'{"id": 1, "status": "processing", "currency": "EUR", "total": "1.00", '
                           b'"prices_include_tax": true, "date_paid": "2025-01-01T00:00:00", "line_items": "x"}'),
        ("bad_refund.json", b'{"id": 9, "amount": "many", "line_items": []}'),
    ],
)
def test_a_file_that_is_no_woocommerce_order_or_refund_fails_with_one_line(preview, tmp_path, filename, content):
    assert_fails_with_one_line_naming_it(preview, "woocommerce", tmp_path / filename, content)


def test_a_woocommerce_refund_previews_with_no_database_redis_or_platform_settings():
    result = flask_command("preview", "woocommerce", str(WOOCOMMERCE / "refund_line_items.json"),
                           "--order", str(WOO_ORDER))

    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert output["verdict"] == "issue"
    assert output["expected_total"] == output["computed_total"] == woo("refund_line_items.json")["amount"]
