"""What a platform's poll hands to reconciliation: one order (or refund) state, as the inbox will store it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class Polled:
    """One order state a platform's API reported, ready for the inbox like a webhook's delivery.

    `acted_on` False: seen (it moves the watermark) but owes nothing, so it is not stored.
    `order_id` lets reconciliation tell whether the order is known to us at all.
    """

    event_key: str
    topic: str
    body: bytes
    modified_at: datetime
    order_id: str
    acted_on: bool = True


def compact_json(payload: Any) -> bytes:
    """The payload as the compact JSON bytes a webhook would carry."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def parse_time(text: Any) -> datetime | None:
    """An ISO 8601 time from a platform (a naive one is UTC, as platforms' `_gmt` fields are), or None."""
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
