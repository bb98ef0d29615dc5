"""Logging to stdout, one line per event, configured once; each line names the store it is about."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

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


def configure(level: str) -> None:
    """Send the connector's (and RQ's) log lines to stdout at `level`."""
    root = logging.getLogger()
    if not any(getattr(h, "_connector", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.addFilter(StoreTag())
        handler._connector = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG, and IX's API key travels in the query string.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO whenever migrations are loaded.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
