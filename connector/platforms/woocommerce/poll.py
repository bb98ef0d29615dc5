"""WooCommerce's side of reconciliation: the REST client a store may use, and its orders as inbox entries."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from connector.platforms.polling import Polled, compact_json, parse_time
from connector.platforms.woocommerce.api import WooCommerceAPI
from connector.platforms.woocommerce.webhook import SOURCE_HEADER, UPDATED_TOPIC, event_key, store

logger = logging.getLogger(__name__)

# Webhooks' keys are reproduced exactly, so a new inbox entry from a poll is a state no webhook brought.
SAME_KEYS_AS_WEBHOOKS = True


def site_reference(url: str) -> str:
    """The store reference a site URL stands for, exactly as a webhook from that site names its store."""
    return store({SOURCE_HEADER: url})


def configured_store(config: Mapping[str, Any]) -> str | None:
    """The store the settings' REST credentials belong to (the host of WOOCOMMERCE_URL), if they are complete."""
    url = config.get("WOOCOMMERCE_URL") or ""
    if url and config.get("WOOCOMMERCE_CONSUMER_KEY") and config.get("WOOCOMMERCE_CONSUMER_SECRET"):
        return site_reference(url) or None
    return None


def api(config: Mapping[str, Any], store: str) -> WooCommerceAPI | None:
    """The REST client of the site the settings' credentials name, or None when they are not complete.

    Which store's credentials these are is `connector.stores`'s to decide: the environment's name one site, and
    a store row of another host (a second shop, a mistyped source header) is never given them.
    """
    if configured_store(config) is None:
        return None
    return WooCommerceAPI(
        config["WOOCOMMERCE_URL"], config["WOOCOMMERCE_CONSUMER_KEY"], config["WOOCOMMERCE_CONSUMER_SECRET"],
        timeout=(5, float(config.get("WOOCOMMERCE_READ_TIMEOUT") or 20)),
    )


def poll(client: WooCommerceAPI, since: datetime) -> Iterator[Polled]:
    """Every order modified after `since`, as the `order.updated` delivery of its current state."""
    for order in client.orders_modified_after(since):
        key = event_key(order)
        modified_at = parse_time(order.get("date_modified_gmt")) if key else None
        if key is None or modified_at is None:
            # Not an order state we could key; a webhook or a later pass of a readable state brings it.
            logger.warning("WooCommerce order skipped by reconciliation: no id or modification time")
            continue
        yield Polled(event_key=key, topic=UPDATED_TOPIC, body=compact_json(order),
                     modified_at=modified_at, order_id=str(order["id"]))
