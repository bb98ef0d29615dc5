"""LOG_FORMAT=json: one JSON object per line, naming the store inside one; anything else is refused."""

from __future__ import annotations

import io
import json
import logging

import pytest

from config.settings import ConfigError, from_env
from connector import logs
from tests.conftest import STORE, fixture_body, settings


def capture(log_format: str) -> tuple[logging.Handler, io.StringIO]:
    """A handler formatted as the connector's own stdout handler is for `log_format`."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.formatter(log_format))
    handler.addFilter(logs.StoreTag())
    logging.getLogger().addHandler(handler)
    return handler, out


def test_json_lines_parse_and_name_the_store_inside_one():
    handler, out = capture("json")
    try:
        log = logging.getLogger("connector.test")
        log.warning("before")
        with logs.for_store("woocommerce", "loja.example.pt"):
            log.warning("inside %s", "a \"quoted\"\nvalue")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        logging.getLogger().removeHandler(handler)

    before, inside, failed = (json.loads(line) for line in out.getvalue().splitlines())
    assert before["message"] == "before" and "store" not in before
    assert inside == {"time": inside["time"], "level": "WARNING", "logger": "connector.test",
                      "message": "inside a \"quoted\"\nvalue", "store": "woocommerce:loja.example.pt"}
    assert inside["time"].endswith("+00:00")
    assert failed["level"] == "ERROR" and "ValueError: boom" in failed["exception"]


def test_a_webhook_logs_json_lines_naming_its_store(app, post_order):
    handler, out = capture("json")
    try:
        assert post_order(fixture_body("paid_b2c_tax_included.json")).status_code == 200
    finally:
        logging.getLogger().removeHandler(handler)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    stored = [line for line in lines if line["message"].startswith("webhook stored")]
    assert stored and stored[0]["store"] == f"shopify:{STORE}"


def test_the_connectors_handler_takes_the_format_log_format_names():
    root = logging.getLogger()
    level = root.level
    try:
        logs.configure("INFO", "json")
        [ours] = [h for h in root.handlers if getattr(h, "_connector", False)]
        assert isinstance(ours.formatter, logs.JsonFormatter)
    finally:
        logs.configure(logging.getLevelName(level) if level else "WARNING", "text")
    assert not isinstance(ours.formatter, logs.JsonFormatter)


@pytest.mark.parametrize("value, expected", [(None, "text"), ("text", "text"), ("JSON", "json")])
def test_log_format_is_text_unless_json_is_asked_for(value, expected):
    extra = {} if value is None else {"LOG_FORMAT": value}
    assert from_env(settings(**extra))["LOG_FORMAT"] == expected


def test_an_unknown_log_format_is_refused_by_name():
    with pytest.raises(ConfigError, match="LOG_FORMAT must be text or json"):
        from_env(settings(LOG_FORMAT="logfmt"))
