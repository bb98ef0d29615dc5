import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent.parent
CONNECTOR = ROOT / "connector"
FRAMEWORK_FREE = sorted(
    [
        CONNECTOR / "orders.py",
        *(CONNECTOR / "platforms").rglob("*.py"),
        *(CONNECTOR / "invoicexpress").glob("*.py"),
    ]
)


def imported_modules(source, path):
    """Absolute names of every module `source` (the text of `path`) imports, relative imports resolved."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, (base, node.module)))
            yield module
            # `from connector import extensions` imports a module too.
            yield from (f"{module}.{alias.name}" for alias in node.names)


def forbidden(module):
    top = module.split(".")[0]
    return top == "flask" or top.startswith("flask_") or module.startswith("connector.extensions")


@pytest.mark.parametrize("path", FRAMEWORK_FREE, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_neither_flask_nor_extensions(path):
    modules = imported_modules(path.read_text(encoding="utf-8"), path)
    assert [m for m in modules if forbidden(m)] == []


def test_the_check_covers_the_core_modules():
    assert {CONNECTOR / "orders.py", CONNECTOR / "platforms" / "shopify" / "orders.py"} <= set(FRAMEWORK_FREE)


def test_the_check_sees_relative_and_from_imports():
    source = "from ..extensions import db\nfrom connector import extensions\nimport flask.json\nimport json\n"

    modules = imported_modules(source, CONNECTOR / "platforms" / "example.py")

    assert [m for m in modules if forbidden(m)] == [
        "connector.extensions",
        "connector.extensions.db",
        "connector.extensions",
        "flask.json",
    ]
