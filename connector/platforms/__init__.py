"""The shop platforms we take orders from, each a package with the same small interface (`Platform`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol

from connector.orders import Order, Refund
from connector.platforms import shopify, stripe, woocommerce
from connector.platforms.common import Change, Delivery


class Platform(Protocol):
    """What every package in this one provides; the core knows platforms only through it."""

    NAME: str
    TITLE: str  # how people write it: "WooCommerce"
    SECRET_SETTING: str  # the environment variable holding its webhook signing secrets
    DEFAULT_TAX_ID_KEYS: tuple[str, ...]  # where its stores usually keep a buyer's tax number
    PAID_TOPIC: str  # the topic a paid order usually comes as: what `preview` assumes without --topic

    def delivery(self, body: bytes, headers: Mapping[str, str]) -> Delivery:
        """What a webhook delivery is (store, event key, topic), or `common.PING` for a liveness ping."""

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: Sequence[str]) -> bool:
        """Whether the delivery is signed with any of `secrets`."""

    def changes(self, payload: Mapping, topic: str, settings: Any) -> list[Change]:
        """What an event means for invoicing, in the order the core acts on it (may raise `LoadError`)."""

    def snapshot(self, change: Change, payload: Mapping, api: Any) -> dict:
        """The source data of a refund change, or of a `fetched` sale (may call the platform's API:
        `PlatformUnavailable` is retried, `PlatformRefused` is final). Stored once, then read from the row."""

    def to_order(self, payload: Mapping, *, store: str, tax_id_keys: Sequence[str], money: str,
                 settings: Any = None) -> Order:
        """The neutral order of an order payload (raises `LoadError`). `settings`: the store's issuing
        settings, for what the payload leaves to the store (Stripe: the VAT rate of prices without its taxes)."""

    def to_refund(self, snapshot: Mapping, *, store: str, money: str, taxes_included: bool | None = None,
                  order: Mapping | None = None) -> Refund:
        """The neutral refund of a refund's snapshot, read against its order's payload when at hand."""

    def unwrap(self, payload: Mapping) -> Mapping:
        """The object a person pasted, with the platform's REST API envelope removed."""

    # Optional, for a platform whose refunds come inside order updates: `is_refund(payload) -> bool` tells a
    # pasted REST refund object (preview) from an order.
    # Optional, for a platform whose events may name changes only its API lists ("lookup" changes):
    # `look_up(change, payload, api) -> list[polling.Polled]`, each taken into the inbox as its own event.

    def api_client(self, config: Mapping[str, Any], store: str) -> Any:
        """The platform API client `snapshot` uses for `store`, from its settings (`stores.resolve(...).api`:
        its own credentials, or the environment's where they are its); None when there are none.

        Not `api`: that name is each package's API client module (`<platform>/api.py`)."""


PLATFORMS: dict[str, ModuleType] = {shopify.NAME: shopify, woocommerce.NAME: woocommerce, stripe.NAME: stripe}


def title(name: str) -> str:
    """How people write a platform's name ("WooCommerce"), for what a shop owner reads."""
    platform = PLATFORMS.get(name)
    return platform.TITLE if platform is not None else name
