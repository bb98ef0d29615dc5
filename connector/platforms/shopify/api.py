"""Shopify's Admin REST API, read only (orders updated since a time): a typed client with two errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import requests

from connector.platforms.common import PlatformRefused
from connector.platforms.rest import RestClient

API_VERSION = "2025-07"
PAGE_LIMIT = 250  # Shopify's largest page
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


class ShopifyAPI:
    """GET requests to `https://{shop}/admin/api/{version}/` (or `base_url`) with an Admin API access token.

    Raises PlatformUnavailable when trying again later may succeed (timeouts, connection errors, 5xx,
    429) and PlatformRefused when it will not (other 4xx, an answer that is not what the API describes).
    The token is sent in X-Shopify-Access-Token and never appears in a log line or an error.
    """

    def __init__(
        self,
        shop_domain: str,
        access_token: str,
        base_url: str | None = None,
        timeout: float | tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = (base_url or f"https://{shop_domain}/admin/api/{API_VERSION}").rstrip("/") + "/"
        self._rest = RestClient(
            "Shopify", self.base_url, secrets=(access_token,), timeout=timeout, session=session,
            headers={"X-Shopify-Access-Token": access_token},
        )

    def orders_updated_since(self, since: datetime) -> Iterator[dict]:
        """Every order (whatever its status) updated at or after `since`, oldest first, all pages.

        Shopify pages with a cursor (`page_info` in the Link header's next address), so an order
        updated while we read is not lost: it comes again, later, with its new state.
        """
        params: dict[str, str] | None = {
            "updated_at_min": _iso(since),
            "status": "any",
            "limit": str(PAGE_LIMIT),
            "order": "updated_at asc",
        }
        next_url: str | None = None
        while True:
            payload, headers = self._rest.get("orders.json", params, url=next_url)
            orders = payload.get("orders") if isinstance(payload, dict) else None
            if not isinstance(orders, list) or not all(isinstance(o, dict) for o in orders):
                raise PlatformRefused("Shopify GET orders.json: the answer is not the list the API describes")
            yield from orders
            next_url = _next_page(headers.get("Link"))
            if next_url is None or not orders:
                return
            if not next_url.startswith(self.base_url):
                # The token goes only to the shop's own API.
                raise PlatformRefused("Shopify GET orders.json: the next page is on another site")
            params = None  # the next address carries page_info and the limit; Shopify refuses other filters


def _next_page(link: str | None) -> str | None:
    match = _NEXT_LINK.search(link or "")
    return match.group(1) if match else None


def _iso(moment: datetime) -> str:
    """A time as Shopify's filters take it: ISO 8601 with its offset (UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")
