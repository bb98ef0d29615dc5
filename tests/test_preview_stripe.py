"""`flask preview stripe`: a pasted session event, with or without its lines, and a refund against its session."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.conftest import FIXTURES
from tests.test_cli import preview, shown  # noqa: F401 - `preview` is the fixture: no HTTP, nothing written

STRIPE = FIXTURES / "stripe"
PAID = STRIPE / "checkout_session_completed_paid.json"  # 2 mugs, a postcard and shipping: 74.78 EUR
REFUND = STRIPE / "refund_created.json"  # 56.33 EUR of that session's payment


def without_lines(tmp_path) -> str:
    """The paid session's event as Stripe delivers it: with no `line_items`."""
    payload = json.loads(PAID.read_text())
    del payload["data"]["object"]["line_items"]
    path = tmp_path / "no_lines.json"
    path.write_text(json.dumps(payload))
    return str(path)


def test_a_session_with_its_lines_expanded_previews_the_whole_invoice(preview):  # noqa: F811
    output = shown(preview("stripe", str(PAID)))

    assert (output["platform"], output["topic"]) == ("stripe", "checkout.session.completed")
    assert output["verdict"] == "issue", output["reasons"]
    assert output["currency"] == "EUR"
    assert output["expected_total"] == output["computed_total"] == "74.78"  # the session's amount_total
    create = output["requests"][0]
    assert create["method"] == "POST"
    items = create["body"]["invoice"]["items"]
    assert [item["description"] for item in items] == ["Caneca de cerâmica", "Postal ilustrado", "Shipping"]
    assert [item["tax"]["name"] for item in items] == ["IVA23"] * 3
    assert create["body"]["invoice"]["client"]["name"] == "Exemplo Comércio, Lda"


def test_a_session_as_stripe_delivers_it_is_held_saying_its_lines_are_read_at_issue_time(preview, tmp_path):  # noqa: F811
    output = shown(preview("stripe", without_lines(tmp_path)))

    assert output["verdict"] == "hold"
    [reason] = output["reasons"]
    assert "reads them from Stripe" in reason and "when it issues the document" in reason, reason
    assert "line_items expanded" in reason  # how to preview it whole
    assert output["requests"] == []


def test_a_refund_with_its_session_previews_the_credit_note(preview):  # noqa: F811
    output = shown(preview("stripe", str(REFUND), "--topic", "refund.created", "--order", str(PAID)))

    assert output["verdict"] == "issue", output["reasons"]
    assert (output["currency"], output["expected_total"], output["computed_total"]) == ("EUR", "56.33", "56.33")
    [create, *_] = output["requests"]
    assert create["path"] == "/credit_notes.json"
    credit = create["body"]["invoice"]
    assert "re_3QhY2fAbCdEfGh1Refund02" in credit["reference"]
    # An amount-only refund is spread over the invoice's VAT rates: here all of it at 23 %.
    assert {item["tax"]["name"] for item in credit["items"]} == {"IVA23"}
    assert sum(Decimal(str(item["unit_price"])) * Decimal(str(item["quantity"])) * Decimal("1.23")
               for item in credit["items"]).quantize(Decimal("0.01")) == Decimal("56.33")


def test_a_refund_without_its_session_asks_for_it(preview):  # noqa: F811
    output = shown(preview("stripe", str(REFUND), "--topic", "refund.created"))

    assert output["verdict"] == "hold"
    assert output["expected_total"] == "56.33"
    assert any("--order" in reason for reason in output["reasons"])


def test_a_refund_against_another_payments_session_is_refused_in_one_line(preview, tmp_path):  # noqa: F811
    other = json.loads(PAID.read_text())
    other["data"]["object"]["payment_intent"] = "pi_3QhAnotherPaymentIntent"
    path = tmp_path / "other.json"
    path.write_text(json.dumps(other))

    result = preview("stripe", str(REFUND), "--topic", "refund.created", "--order", str(path))

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "another payment" in result.stderr and len(result.stderr.strip().splitlines()) == 1
