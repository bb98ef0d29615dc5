"""The Shopify Admin API client against the local fake: orders updated since a time, Link paging, two errors."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
import requests

from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.platforms.shopify.api import ShopifyAPI
from devtools import shopify_fake

TOKEN = "shpat_0123456789abcdef0123456789abcdef"
SHOP = "local-store.myshopify.com"
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def api_url():
    url, server = shopify_fake.serve_in_thread(access_token=TOKEN)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def site(api_url):
    return api_url.split("/admin/")[0]


@pytest.fixture
def client(api_url):
    return ShopifyAPI(SHOP, TOKEN, base_url=api_url, timeout=(2, 5))


def put_order(site, **order):
    answer = requests.post(f"{site}/_fake/orders", json=order, timeout=5)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def put_orders(site, count):
    for n in range(count):
        put_order(site, id=5000 + n, financial_status="paid",
                  updated_at=(START + timedelta(minutes=n)).isoformat())


def order_calls(site):
    return [c for c in requests.get(f"{site}/_fake/calls", timeout=5).json() if c["path"] == "orders.json"]


def test_the_default_address_is_the_shops_admin_api():
    assert ShopifyAPI(SHOP, TOKEN).base_url == f"https://{SHOP}/admin/api/2025-07/"


def test_every_order_updated_since_a_time_is_read_over_linked_pages_oldest_first(site, client):
    put_orders(site, 600)

    orders = list(client.orders_updated_since(START + timedelta(minutes=10)))

    assert [o["id"] for o in orders] == list(range(5010, 5600))
    calls = order_calls(site)
    assert len(calls) == 3
    assert calls[0]["query"] == {"updated_at_min": "2025-03-01T09:10:00+00:00", "status": "any", "limit": "250",
                                 "order": "updated_at asc"}
    # The next pages follow the Link header: its cursor and the limit, nothing else.
    assert all(set(c["query"]) == {"limit", "page_info"} for c in calls[1:])


def test_cancelled_and_closed_orders_come_too(site, client):
    put_order(site, id=1, cancelled_at="2025-03-01T10:00:00+00:00", updated_at="2025-03-01T10:00:00+00:00")
    put_order(site, id=2, closed_at="2025-03-01T10:01:00+00:00", updated_at="2025-03-01T10:01:00+00:00")

    assert [o["id"] for o in client.orders_updated_since(START)] == [1, 2]


def test_an_order_updated_while_the_pages_are_read_comes_again_and_skips_none(site, api_url):
    put_orders(site, 400)

    class UpdatingAfterFirstPage(requests.Session):
        calls = 0

        def get(self, *args, **kwargs):
            answer = super().get(*args, **kwargs)
            UpdatingAfterFirstPage.calls += 1
            if UpdatingAfterFirstPage.calls == 1:
                put_order(site, id=5003, financial_status="refunded",
                          updated_at=(START + timedelta(days=1)).isoformat())
            return answer

    client = ShopifyAPI(SHOP, TOKEN, base_url=api_url, session=UpdatingAfterFirstPage())
    orders = list(client.orders_updated_since(START))

    assert {o["id"] for o in orders} == set(range(5000, 5400)) and len(orders) == 401
    assert orders[-1]["id"] == 5003 and orders[-1]["financial_status"] == "refunded"


def test_a_wrong_token_is_refused_without_naming_it(api_url):
    client = ShopifyAPI(SHOP, "shpat_wrong_token_value", base_url=api_url, timeout=(2, 5))

    with pytest.raises(PlatformRefused) as refused:
        list(client.orders_updated_since(START))

    assert "401" in str(refused.value) and "Invalid API key or access token" in str(refused.value)
    assert "shpat_wrong_token_value" not in str(refused.value)


@pytest.mark.parametrize("status", ["500", "429"])
def test_a_server_error_or_rate_limit_is_worth_trying_again(site, client, status):
    put_orders(site, 3)
    requests.post(f"{site}/_fake/faults", json=[{"path": "orders", "kind": status}], timeout=5)

    with pytest.raises(PlatformUnavailable, match=f"HTTP {status}"):
        list(client.orders_updated_since(START))
    assert len(list(client.orders_updated_since(START))) == 3


def test_an_answer_too_slow_is_a_timeout_worth_trying_again(site, api_url):
    requests.post(f"{site}/_fake/faults", json=[{"path": "orders", "kind": "timeout", "seconds": 2}], timeout=5)
    client = ShopifyAPI(SHOP, TOKEN, base_url=api_url, timeout=(2, 0.5))

    with pytest.raises(PlatformUnavailable, match="timed out"):
        list(client.orders_updated_since(START))


def test_a_next_page_on_another_site_is_never_asked_with_the_token(api_url, monkeypatch):
    client = ShopifyAPI(SHOP, TOKEN, base_url=api_url)
    answer = ({"orders": [{"id": 1}]}, {"Link": '<https://elsewhere.example/orders.json?page_info=x>; rel="next"'})
    asked = []
    monkeypatch.setattr(client._rest, "get", lambda path, params=None, url=None: asked.append(url) or answer)

    with pytest.raises(PlatformRefused, match="another site"):
        list(client.orders_updated_since(START))
    assert asked == [None]


def test_no_log_line_and_no_error_names_the_token(site, api_url, caplog):
    caplog.set_level(logging.DEBUG)
    put_orders(site, 300)
    requests.post(f"{site}/_fake/faults", json=[{"path": "orders", "kind": "503"}], timeout=5)
    client = ShopifyAPI(SHOP, TOKEN, base_url=api_url, timeout=(2, 5))

    with pytest.raises(PlatformUnavailable) as raised:
        list(client.orders_updated_since(START))
    assert len(list(client.orders_updated_since(START))) == 300

    assert "Shopify GET orders.json -> 200" in caplog.text and "Shopify GET orders.json -> 503" in caplog.text
    assert TOKEN not in caplog.text and TOKEN not in str(raised.value)
