"""The shop platforms we take webhooks from, each a module with the same small interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Protocol

from connector.orders import Order, Refund
from connector.platforms import shopify


class Platform(Protocol):
    """What every module in this package provides."""

    PAID_TOPIC: str
    REFUND_TOPIC: str
    CANCEL_TOPIC: str

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool: ...
    def event_key(self, headers: Mapping[str, str]) -> str | None: ...
    def topic(self, headers: Mapping[str, str]) -> str: ...
    def store(self, headers: Mapping[str, str]) -> str: ...
    def to_order(self, payload: Mapping, *, store: str, tax_id_keys: Sequence[str], money: str) -> Order: ...
    def to_refund(self, payload: Mapping, *, store: str, money: str) -> Refund: ...


PLATFORMS: dict[str, ModuleType] = {"shopify": shopify}
