"""Logging to stdout, one line per event, configured once."""

from __future__ import annotations

import logging
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def configure(level: str) -> None:
    """Send the connector's (and RQ's) log lines to stdout at `level`."""
    root = logging.getLogger()
    if not any(getattr(h, "_connector", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._connector = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # urllib3 logs full URLs at DEBUG, and IX's API key travels in the query string.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    # Alembic announces each of its plugins at INFO whenever migrations are loaded.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
