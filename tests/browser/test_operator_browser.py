"""In a real browser: an operator signs in, finds a held order, reads why, fixes the setting it names, retries,
and watches the document reach done. Screenshots are kept in the test's directory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration import conftest as integration

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PASSWORD = "operator browser password"
FIXTURE = Path(__file__).parents[1] / "fixtures" / "shopify" / "paid_b2c_tax_included.json"
STORE = "integration.myshopify.com"
# Every rate the connector knows but the order's 23 %: the order is held until a person names IVA23.
TAX_NAMES_WITHOUT_23 = "13=IVA13,6=IVA6,22=IVA22,12=IVA12,5=IVA5,16=IVA16,9=IVA9,4=IVA4,0=IVA0"


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) for the browser "
                    "tests; Playwright's own browsers are not used")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                                                 "(requirements-dev.txt)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def held_connector(clean_db, clean_redis, procs):
    """The connector with the operator pages on, and one paid order held for want of a tax name."""
    running = integration.start_connector(clean_db, clean_redis, procs, ADMIN_PASSWORD=PASSWORD,
                                          INVOICEXPRESS_TAX_NAMES=TAX_NAMES_WITHOUT_23)
    assert running.post(FIXTURE.read_bytes()).status_code == 200
    running.wait_until(lambda: running.rows("SELECT state FROM documents") == [("held",)], what="a held document")
    yield running
    running.engine.dispose()


def test_an_operator_fixes_a_held_order_and_watches_it_reach_done(held_connector, browser, tmp_path):
    connector = held_connector
    shots: list[Path] = []

    def shot(page, name: str) -> None:
        path = tmp_path / f"{len(shots) + 1:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)
        print(f"screenshot: {path}")

    context = browser.new_context(base_url=connector.url,
                                  http_credentials={"username": "admin", "password": PASSWORD})
    page = context.new_page()
    try:
        # Signed in once: every page after this one is asked with the same credentials.
        page.goto("/admin/")
        assert page.locator("h1").inner_text() == "Documents"
        page.get_by_role("link", name="held 1").click()
        page.wait_for_url(re.compile(r"state=held"))
        shot(page, "held-list")

        page.get_by_role("link", name="#1001").first.click()
        page.wait_for_url(re.compile(r"/admin/documents/\d+$"))
        assert page.locator("h1 .state").inner_text() == "held"
        reason = page.locator("p.reason.alert").inner_text()
        shot(page, "held-reason")
        assert "23" in reason
        setting = re.search(r"\b(INVOICEXPRESS_[A-Z_]+)\b", reason)
        assert setting, f"the reason names no setting: {reason}"

        # The fix the reason asks for, as an operator makes it: the store's own setting, by the stores command.
        fixed = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "wsgi", "stores", "set", STORE, "--platform", "shopify",
             f"{setting.group(1).lower()}=23=IVA23,{TAX_NAMES_WITHOUT_23}"],
            env={**connector.env, "PYTHONPATH": str(integration.REPO_ROOT)}, cwd=integration.REPO_ROOT,
            capture_output=True, text=True, timeout=60)
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr

        page.get_by_role("button", name="Retry").click()
        page.wait_for_url(re.compile(r"notice=retried"))
        assert "Retry requested" in page.locator("p.notice").inner_text()
        shot(page, "retried")

        deadline = time.monotonic() + 60
        while page.locator("h1 .state").inner_text() != "done":
            assert time.monotonic() < deadline, f"not done in 60 s: {connector.rows('SELECT * FROM documents')}"
            time.sleep(0.5)
            page.reload()
        shot(page, "done")
        timeline = page.locator("table").last.inner_text()
        assert "Retry requested by operator" in timeline and "Done." in timeline
        number = page.locator("dt:text-is('sequence number') + dd").inner_text()
        assert number != "—"
        [issued] = connector.ix_documents()
        assert issued["status"] == "settled" and issued["emails"]  # one document at IX, sent to the customer

        page.get_by_role("link", name="The order's whole story").click()
        assert "Retry requested by operator" in page.locator("table").last.inner_text()
        shot(page, "story")

        # On PostgreSQL too, the customer's e-mail finds the order (searched in the raw event bodies).
        page.goto("/admin/")
        page.get_by_label("Search").fill("ANA.SILVA@example.pt")
        page.get_by_role("button", name="Filter").click()
        assert page.locator("tbody tr").count() == 1 and "#1001" in page.locator("tbody").inner_text()
        page.get_by_label("Search").fill("nobody@example.pt")
        page.get_by_role("button", name="Filter").click()
        assert page.locator("tbody tr").count() == 0
        shot(page, "search")
    finally:
        context.close()
        print("screenshots:", *map(str, shots), sep="\n  ")
