"""WooCommerce's REST API v3, read only (orders and their refunds): a typed client with timeouts and two errors."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import requests

from connector.invoicexpress.client import int_or
from connector.platforms.common import PlatformRefused
from connector.platforms.polling import parse_time
from connector.platforms.rest import RestClient

PER_PAGE = 100  # WooCommerce's largest page
# WooCommerce compares `modified_after` strictly and to the second.
_ONE_SECOND = timedelta(seconds=1)


class WooCommerceAPI:
    """GET requests to `{url}/wp-json/wc/v3/`, authenticated with a REST key's consumer key and secret.

    Raises PlatformUnavailable when trying again later may succeed (timeouts, connection errors, 5xx,
    429) and PlatformRefused when it will not (other 4xx, an answer that is not what the API describes).
    Neither error's text, nor any log line, carries the key or the secret.
    """

    def __init__(
        self,
        url: str,
        consumer_key: str,
        consumer_secret: str,
        timeout: float | tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = url.rstrip("/") + "/wp-json/wc/v3/"
        basic = base64.b64encode(f"{consumer_key}:{consumer_secret}".encode()).decode()
        self._rest = RestClient(
            "WooCommerce", self.base_url, secrets=(consumer_key, consumer_secret, basic), timeout=timeout,
            session=session, auth=(consumer_key, consumer_secret),
        )

    def get_order(self, order_id: int | str) -> dict:
        """GET orders/{id}: the order as WooCommerce's REST API (and its webhooks) describe it."""
        return self._object(f"orders/{_id(order_id)}")

    def get_refund(self, order_id: int | str, refund_id: int | str) -> dict:
        """GET orders/{id}/refunds/{refund_id}: the refund with its lines, shipping and fees."""
        return self._object(f"orders/{_id(order_id)}/refunds/{_id(refund_id)}")

    def orders_modified_after(self, since: datetime, until: datetime | None = None) -> Iterator[dict]:
        """Every order (whatever its status) modified after `since` (and before `until`), oldest first.

        Each page after the first asks again from the last order's modification time rather than for
        page N + 1: an order modified while we read moves to the end of the list, and with plain page
        numbers every order behind it would shift back one place and the first of the next page would
        never be read. The orders at that second are read twice and handed on once.
        """
        cursor = since
        page = 1
        seen: set[tuple[Any, Any]] = set()
        while True:
            params = {
                "modified_after": _gmt(cursor),
                "dates_are_gmt": "true",
                "orderby": "modified",
                "order": "asc",
                "status": "any",
                "per_page": str(PER_PAGE),
                "page": str(page),
            }
            if until is not None:
                params["modified_before"] = _gmt(until)
            orders, headers = self._list("orders", params)
            fresh = False
            for order in orders:
                key = (order.get("id"), order.get("date_modified_gmt"))
                if key not in seen:
                    seen.add(key)
                    fresh = True
                    yield order
            total_pages = int_or(headers.get("X-WP-TotalPages"), 1)
            if len(orders) < PER_PAGE or page >= total_pages:
                return
            last = parse_time(orders[-1].get("date_modified_gmt"))
            if fresh and last is not None and last - _ONE_SECOND > cursor:
                cursor, page = last - _ONE_SECOND, 1
                kept = _gmt(cursor)
                seen = {k for k in seen if isinstance(k[1], str) and k[1] >= kept}
            else:
                # A whole page within one second (or without times): only the next page moves on.
                page += 1

    def _object(self, path: str) -> dict:
        payload, _ = self._get(path)
        if not isinstance(payload, dict) or "id" not in payload:
            raise PlatformRefused(f"WooCommerce GET {path}: the answer is not the object the API describes")
        return payload

    def _list(self, path: str, params: Mapping[str, str]) -> tuple[list[dict], Mapping[str, str]]:
        payload, headers = self._get(path, params)
        if not isinstance(payload, list) or not all(isinstance(item, dict) for item in payload):
            raise PlatformRefused(f"WooCommerce GET {path}: the answer is not the list the API describes")
        return payload, headers

    def _get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[object, Mapping[str, str]]:
        return self._rest.get(path, params)


def _id(value: int | str) -> str:
    """A WooCommerce id for a path: a positive integer, never anything that could change the path."""
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() or not int(value):
        raise ValueError(f"not a WooCommerce id: {value!r}")
    return quote(str(int(value)), safe="")


def _gmt(moment: datetime) -> str:
    """A time as WooCommerce's `dates_are_gmt=true` filters take it: UTC, to the second, without an offset."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
