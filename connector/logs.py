"""Logging to stdout, one line per event, configured once; each line names the store it is about."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime

FORMAT = "%(asctime)s %(levelname)s %(name)s%(store_tag)s %(message)s"

# The store the current request or job works for ("shopify:acme.myshopify.com"), or "" outside one.
_store: ContextVar[str] = ContextVar("store", default="")


@contextlib.contextmanager
def for_store(platform: str, name: str) -> Iterator[None]:
    """Every log line inside names the store (a webhook's, a job's, a reconciliation pass's)."""
    token = _store.set(f"{platform}:{name}")
    try:
        yield
    finally:
        _store.reset(token)


class StoreTag(logging.Filter):
    """Puts ` store=<platform>:<name>` on a record made for a store (nothing on the others)."""

    def filter(self, record: logging.LogRecord) -> bool:
        store = _store.get()
        record.store_tag = f" store={store}" if store else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line (time, level, logger, message, and store inside one), for log add-ons that
    index fields rather than parse text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        # StoreTag has run by now (it is the handler's filter); outside a handler, the context says.
        tag = getattr(record, "store_tag", None)
        store = tag.removeprefix(" store=") if tag is not None else _store.get()
        if store:
            entry["store"] = store
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter(log_format: str = "text") -> logging.Formatter:
    """The formatter for LOG_FORMAT: `text` (FORMAT) or `json` (JsonFormatter)."""
    return JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT)


def configure(level: str, log_format: str = "text") -> None:
    """Send the connector's (and RQ's) log lines to stdout at `level`, as text or as JSON lines."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_connector", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.addFilter(StoreTag())
        handler._connector = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG, and IX's API key travels in the query string.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO whenever migrations are loaded.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
