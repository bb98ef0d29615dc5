"""Every log line about a store names it: a webhook's, an event job's and a document job's."""

from __future__ import annotations

import io
import logging

from connector import logs
from tests.conftest import STORE, drain, fixture_body


def capture() -> tuple[logging.Handler, io.StringIO]:
    """A handler formatted as the connector's own stdout handler is."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(logs.FORMAT))
    handler.addFilter(logs.StoreTag())
    logging.getLogger().addHandler(handler)
    return handler, out


def test_lines_inside_a_store_name_it_and_lines_outside_name_none():
    handler, out = capture()
    try:
        log = logging.getLogger("connector.test")
        log.warning("before")
        with logs.for_store("woocommerce", "loja.example.pt"):
            log.warning("inside")
        log.warning("after")
    finally:
        logging.getLogger().removeHandler(handler)

    before, inside, after = out.getvalue().splitlines()
    assert "store=" not in before and "store=" not in after
    assert "store=woocommerce:loja.example.pt inside" in inside


def test_a_webhook_and_the_jobs_it_starts_log_their_store_on_every_line(app, sandbox, post_order, queue):
    handler, out = capture()
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    try:
        assert post_order(fixture_body("paid_b2c_tax_included.json")).status_code == 200
        drain(queue)
    finally:
        logging.getLogger().removeHandler(handler)
        logging.getLogger().setLevel(level)

    ours = [line for line in out.getvalue().splitlines() if line.split()[3].startswith("connector.")]
    assert any("webhook stored" in line for line in ours)
    assert any("finalized" in line or "done" in line for line in ours), ours
    assert ours and all(f"store=shopify:{STORE}" in line for line in ours), ours
