"""Every body the connector sends to InvoiceXpress validates against IX's own OpenAPI description."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from connector.plans import plan_sale
from tests.test_plans import SETTINGS, load

SPEC = Path(__file__).resolve().parents[3] / "shared" / "reference" / "invoicexpress-openapi.yaml"
CASES = Path(__file__).parents[1] / "fixtures" / "shopify" / "cases.json"
FIXTURES = sorted(case["file"] for case in json.loads(CASES.read_text()) if case["expect"] == "issue")


@pytest.fixture(scope="module")
def spec():
    if not SPEC.exists():
        pytest.skip(f"IX's OpenAPI description is not at {SPEC} (it sits beside the project in CI)")
    import yaml

    return yaml.safe_load(SPEC.read_text())


def operation(spec: dict, method: str, path: str) -> dict:
    """The spec's operation for one of our requests, its path parameters checked against their enums."""
    for template, operations in spec["paths"].items():
        names = re.findall(r"\{([^}]+)\}", template)
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+)", re.escape(template)) + "$"
        match = re.match(pattern, path.replace("{id}", "123"))
        if not match or method.lower() not in operations:
            continue
        values = dict(zip(names, match.groups(), strict=True))
        op = operations[method.lower()]
        params = {}
        for param in op.get("parameters", []) + operations.get("parameters", []):
            param = resolve(spec, param["$ref"]) if "$ref" in param else param
            params[param["name"]] = param
        doc_type = values.get("invoices-type")
        if doc_type is not None:
            enum = params["invoices-type"]["schema"].get("enum")
            if enum is not None and doc_type not in enum:
                continue
        return op
    raise AssertionError(f"{method} {path} is not an operation of IX's API")


def resolve(spec: dict, ref: str) -> dict:
    node = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def validate(spec: dict, method: str, path: str, body: dict) -> None:
    from openapi_schema_validator import OAS31Validator

    op = operation(spec, method, path)
    request_body = op["requestBody"]
    if "$ref" in request_body:
        request_body = resolve(spec, request_body["$ref"])
    schema = request_body["content"]["application/json"]["schema"]
    # Round-trip through JSON: what is validated is exactly what goes on the wire.
    wire = json.loads(json.dumps(body, default=float))
    OAS31Validator({**schema, "components": spec["components"]}).validate(wire)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_request_of_an_issued_order_is_valid_against_the_spec(spec, fixture):
    plan = plan_sale(load(fixture), SETTINGS)
    assert plan.verdict == "issue", plan.reasons
    requests = plan.requests()
    assert [r["method"] for r in requests] == ["POST", "PUT", "PUT"]
    for request in requests:
        validate(spec, request["method"], request["path"], request["body"])


def test_the_validator_does_catch_an_invalid_body(spec):
    plan = plan_sale(load("paid_b2c_tax_included.json"), SETTINGS)
    body = json.loads(json.dumps(plan.create_body, default=float))
    del body["invoice"]["client"]["code"]
    with pytest.raises(Exception, match="code"):
        validate(spec, "POST", "/invoice_receipts.json", body)


@pytest.mark.parametrize(("order", "refund"), [
    ("paid_b2c_tax_included.json", "refund_full_b2c.json"),
    ("paid_mixed_rates.json", "refund_mixed_rates.json"),
    ("paid_with_discount_and_nif.json", "refund_amount_only.json"),
    ("paid_b2b_nif_in_company.json", "refund_with_restocking_fee.json"),
])
def test_every_request_of_a_credit_note_is_valid_against_the_spec(spec, order, refund):
    from connector.plans import plan_credit_note
    from connector.platforms import shopify

    sale = load(order)
    fixtures = Path(__file__).parents[1] / "fixtures" / "shopify"
    refunded = shopify.to_refund(json.loads((fixtures / refund).read_text()), store=sale.store,
                                 taxes_included=sale.taxes_included,
                                 order=json.loads((fixtures / order).read_text()))
    plan = plan_credit_note(refunded, sale, SETTINGS, left_to_credit=sale.total)
    assert plan.verdict == "issue", plan.reasons
    plan.create_body["invoice"]["owner_invoice_id"] = 1049
    for request in plan.requests():
        validate(spec, request["method"], request["path"], request["body"])
