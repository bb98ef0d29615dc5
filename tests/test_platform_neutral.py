"""The core stays platform-neutral: no topic name, payload key or platform header outside connector/platforms/,
no framework or database in the pure modules, and no development tool imported by the product."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from connector.platforms import PLATFORMS

ROOT = Path(__file__).parent.parent
CONNECTOR = ROOT / "connector"
PLATFORMS_DIR = CONNECTOR / "platforms"

# Payload keys only a platform's package may read.
PAYLOAD_KEYS = {
    "refunds", "order_id", "line_items", "financial_status", "note_attributes", "shipping_lines",
    "refund_line_items", "date_paid", "date_paid_gmt", "tax_lines", "fee_lines", "refund_shipping_lines",
    "order_adjustments", "total_price", "taxes_included", "date_modified_gmt", "meta_data",
}
KNOWN_TOPICS = {
    "orders/paid", "orders/create", "orders/updated", "orders/cancelled", "refunds/create",
    "order.created", "order.updated", "order.deleted", "order.restored",
}
HEADER_PREFIXES = ("x-shopify-", "x-wc-")
FRAMEWORKS = ("flask", "flask_", "sqlalchemy", "connector.extensions", "connector.models")


def platform_topics() -> set[str]:
    """Every topic a registered platform (or one being written) names in its `*_TOPIC` constants."""
    topics = set(KNOWN_TOPICS)
    modules = list(PLATFORMS.values())
    for name in ("woocommerce", "stripe"):
        try:
            modules.append(importlib.import_module(f"connector.platforms.{name}"))
        except ImportError:
            continue
    for module in modules:
        topics |= {value for key, value in vars(module).items()
                   if key.endswith("_TOPIC") and isinstance(value, str)}
    return topics


def core_modules() -> list[Path]:
    """Every product module that is not a platform's: connector/ outside platforms/, and config/."""
    paths = [*CONNECTOR.rglob("*.py"), *(ROOT / "config").rglob("*.py")]
    return sorted(p for p in paths if PLATFORMS_DIR not in p.parents)


def platform_strings(source: str, topics: set[str]) -> list[str]:
    """The string constants in `source` that are a platform's topic, payload key or header name."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text in topics or text in PAYLOAD_KEYS or text.strip().lower().startswith(HEADER_PREFIXES):
                found.append(text)
    return found


def imported_modules(source: str, path: Path) -> list[str]:
    """Absolute names of every module `source` (the text of `path`) imports, relative imports resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    modules = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            # `from connector import models` imports a module too.
            modules += [module, *(f"{module}.{alias.name}" for alias in node.names)]
    return modules


def framework_imports(modules: list[str]) -> list[str]:
    return [m for m in modules if m == "flask" or m.split(".")[0] in ("sqlalchemy",) or m.startswith(FRAMEWORKS)]


def name(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", core_modules(), ids=name)
def test_no_core_module_knows_a_platforms_topics_payload_keys_or_headers(path):
    found = platform_strings(path.read_text(encoding="utf-8"), platform_topics())

    assert found == [], f"{name(path)} names {', '.join(repr(s) for s in found)}: only connector/platforms/ may"


PURE = sorted([
    *PLATFORMS_DIR.rglob("*.py"),
    *(CONNECTOR / "invoicexpress").rglob("*.py"),
    CONNECTOR / "orders.py",
    CONNECTOR / "plans.py",
    CONNECTOR / "fiscal.py",
])


@pytest.mark.parametrize("path", PURE, ids=name)
def test_pure_modules_import_neither_flask_nor_the_database(path):
    found = framework_imports(imported_modules(path.read_text(encoding="utf-8"), path))

    assert found == [], f"{name(path)} imports {', '.join(found)}"


@pytest.mark.parametrize("path", sorted(CONNECTOR.rglob("*.py")), ids=name)
def test_the_product_never_imports_the_development_tools(path):
    found = [m for m in imported_modules(path.read_text(encoding="utf-8"), path) if m.split(".")[0] == "devtools"]

    assert found == [], f"{name(path)} imports {', '.join(found)}"


def test_the_checks_cover_the_core_the_platforms_and_the_pure_modules():
    core = set(core_modules())
    assert {CONNECTOR / "obligations.py", CONNECTOR / "issuing.py", CONNECTOR / "webhooks.py",
            CONNECTOR / "cli.py", CONNECTOR / "plans.py", ROOT / "config" / "settings.py"} <= core
    assert not any(PLATFORMS_DIR in p.parents for p in core)
    assert {PLATFORMS_DIR / "shopify" / "orders.py", CONNECTOR / "plans.py", CONNECTOR / "fiscal.py"} <= set(PURE)
    assert {"orders/paid", "refunds/create", "orders/cancelled"} <= platform_topics()


def test_the_string_check_finds_topics_keys_and_headers_wherever_they_are_written():
    source = (
        'TOPIC = "orders/paid"\n'
        'def f(payload):\n'
        '    return payload.get("order_id") or payload["refunds"]\n'
        'HEADERS = {"X-WC-Webhook-Signature": 1}\n'
        'label = f"{x}" + "x-shopify-topic"\n'
        'fine = "the order was paid"\n'
    )

    assert sorted(platform_strings(source, platform_topics())) == sorted([
        "orders/paid", "order_id", "refunds", "X-WC-Webhook-Signature", "x-shopify-topic",
    ])


def test_the_import_check_sees_relative_and_from_imports():
    source = ("from ..extensions import db\nfrom connector import models\nimport sqlalchemy.orm as so\n"
              "import flask.json\nimport json\nfrom devtools.ix_sandbox import app\n")

    modules = imported_modules(source, CONNECTOR / "platforms" / "example.py")

    assert sorted(framework_imports(modules)) == [
        "connector.extensions", "connector.extensions.db", "connector.models", "flask.json", "sqlalchemy.orm",
    ]
    assert sorted(m for m in modules if m.startswith("devtools")) == ["devtools.ix_sandbox",
                                                                      "devtools.ix_sandbox.app"]
