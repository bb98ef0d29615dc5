"""The WooCommerce REST client against the local fake: orders and refunds read, paging, and its two errors."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.platforms.woocommerce.api import WooCommerceAPI
from devtools import woocommerce_fake

KEY = "ck_0123456789abcdef0123456789abcdef01234567"
SECRET = "cs_fedcba9876543210fedcba9876543210fedcba98"
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def gmt(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
def site():
    with woocommerce_fake.running(KEY, SECRET) as url:
        yield url


@pytest.fixture
def client(site):
    return WooCommerceAPI(site, KEY, SECRET, timeout=(2, 5))


def put_order(site, **fields):
    answer = requests.post(f"{site}/_fake/orders", json=fields, timeout=5)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def put_orders(site, count, first=START, step=timedelta(minutes=1), status="processing"):
    return [put_order(site, id=100 + n, status=status, date_modified_gmt=gmt(first + n * step))
            for n in range(count)]


def order_calls(site):
    return [c for c in requests.get(f"{site}/_fake/calls", timeout=5).json() if c["path"] == "orders"]


def test_an_order_is_read_as_the_api_gives_it(site, client):
    put_order(site, id=7, status="processing", total="24.60", date_paid_gmt="2025-03-01T09:00:00")

    order = client.get_order(7)

    assert order["id"] == 7 and order["total"] == "24.60" and order["status"] == "processing"


def test_an_unknown_order_is_refused_with_woocommerces_code(client):
    with pytest.raises(PlatformRefused) as refused:
        client.get_order(404404)

    assert "orders/404404" in str(refused.value) and "404" in str(refused.value)
    assert "woocommerce_rest_shop_order_invalid_id" in str(refused.value)


def test_a_refund_is_read_with_its_lines(site, client):
    put_order(site, id=8, status="completed", total="30.00")
    line = {"id": 91, "product_id": 5, "quantity": -1, "total": "-10.00", "total_tax": "-2.30"}
    made = requests.post(f"{site}/_fake/orders/8/refunds", json={"amount": "12.30", "reason": "broken",
                                                                 "line_items": [line]}, timeout=5).json()

    refund = client.get_refund(8, made["id"])
    order = client.get_order(8)

    assert refund["line_items"] == [line] and refund["reason"] == "broken"
    assert order["refunds"] == [{"id": made["id"], "reason": "broken", "total": "-12.30"}]


def test_an_unknown_refund_is_refused(site, client):
    put_order(site, id=9, status="completed")

    with pytest.raises(PlatformRefused, match="orders/9/refunds/55: HTTP 404"):
        client.get_refund(9, 55)


def test_an_id_that_is_not_a_number_is_never_sent(client):
    with pytest.raises(ValueError):
        client.get_order("7/refunds")


def test_every_order_modified_after_a_time_is_read_over_several_pages_oldest_first(site, client):
    put_orders(site, 250)

    since = START + timedelta(minutes=9, seconds=30)  # orders 110 and on: 240 of them
    orders = list(client.orders_modified_after(since))

    assert [o["id"] for o in orders] == list(range(110, 350))
    calls = order_calls(site)
    assert len(calls) >= 3
    assert all(c["query"]["per_page"] == "100" and c["query"]["status"] == "any" for c in calls)
    assert all(c["query"]["orderby"] == "modified" and c["query"]["order"] == "asc" for c in calls)
    assert all(c["query"]["dates_are_gmt"] == "true" for c in calls)
    assert calls[0]["query"]["modified_after"] == "2025-03-01T09:09:30"


def test_until_bounds_the_window(site, client):
    put_orders(site, 30)

    orders = client.orders_modified_after(START + timedelta(minutes=4, seconds=30), START + timedelta(minutes=8))

    assert [o["id"] for o in orders] == [105, 106, 107]


def test_refunded_and_cancelled_orders_come_too(site, client):
    put_order(site, id=1, status="refunded", date_modified_gmt=gmt(START))
    put_order(site, id=2, status="cancelled", date_modified_gmt=gmt(START + timedelta(seconds=1)))
    put_order(site, id=3, status="pending", date_modified_gmt=gmt(START + timedelta(seconds=2)))

    assert [o["status"] for o in client.orders_modified_after(START - timedelta(hours=1))] == [
        "refunded", "cancelled", "pending"]


def test_an_order_modified_while_the_pages_are_read_skips_no_other_order(site):
    put_orders(site, 250)

    class ModifyingAfterFirstPage(requests.Session):
        calls = 0

        def get(self, *args, **kwargs):
            answer = super().get(*args, **kwargs)
            ModifyingAfterFirstPage.calls += 1
            if ModifyingAfterFirstPage.calls == 1:
                # The shop changes an order of the first page: it moves to the end of the list.
                put_order(site, id=120, status="completed", date_modified_gmt=gmt(START + timedelta(days=1)))
            return answer

    client = WooCommerceAPI(site, KEY, SECRET, timeout=(2, 5), session=ModifyingAfterFirstPage())
    orders = list(client.orders_modified_after(START - timedelta(seconds=1)))

    ids = [o["id"] for o in orders]
    assert set(ids) == set(range(100, 350))
    # Its old state on the first page, its new state last: both are states the shop had.
    assert ids.count(120) == 2 and ids[-1] == 120 and orders[-1]["status"] == "completed"
    assert len(ids) == 251


def test_more_orders_in_one_second_than_a_page_holds_are_all_read(site, client):
    put_orders(site, 150, step=timedelta(0))
    put_order(site, id=900, status="processing", date_modified_gmt=gmt(START + timedelta(seconds=1)))

    ids = [o["id"] for o in client.orders_modified_after(START - timedelta(seconds=1))]

    assert sorted(ids) == [*range(100, 250), 900] and len(ids) == 151


def test_nothing_modified_reads_one_empty_page(site, client):
    put_orders(site, 3)

    assert list(client.orders_modified_after(START + timedelta(days=1))) == []
    assert len(order_calls(site)) == 1


def test_wrong_credentials_are_refused_without_naming_them(site):
    client = WooCommerceAPI(site, KEY, "cs_wrong_secret_value", timeout=(2, 5))

    with pytest.raises(PlatformRefused) as refused:
        client.get_order(1)

    text = str(refused.value)
    assert "401" in text and "woocommerce_rest_cannot_view" in text
    assert KEY not in text and "cs_wrong_secret_value" not in text


@pytest.mark.parametrize("status", ["500", "503", "429"])
def test_a_server_error_or_rate_limit_is_worth_trying_again(site, client, status):
    put_order(site, id=5, status="processing")
    rule = {"method": "GET", "path": "^orders/5$", "kind": status}
    requests.post(f"{site}/_fake/faults", json=[rule], timeout=5)

    with pytest.raises(PlatformUnavailable, match=f"HTTP {status}"):
        client.get_order(5)
    assert client.get_order(5)["id"] == 5  # the fault struck once


def test_a_server_error_on_a_later_page_stops_the_listing_with_unavailable(site, client):
    put_orders(site, 150)
    requests.post(f"{site}/_fake/faults", json=[{"path": "^orders$", "kind": "500", "times": 5}], timeout=5)

    with pytest.raises(PlatformUnavailable):
        list(client.orders_modified_after(START - timedelta(seconds=1)))


def test_an_answer_too_slow_is_a_timeout_worth_trying_again(site):
    put_order(site, id=6, status="processing")
    requests.post(f"{site}/_fake/faults", json=[{"path": "refunds", "kind": "timeout", "seconds": 2}], timeout=5)
    client = WooCommerceAPI(site, KEY, SECRET, timeout=(2, 0.5))

    with pytest.raises(PlatformUnavailable, match="timed out"):
        client.get_refund(6, 1)


def test_a_site_that_does_not_answer_is_unavailable(site):
    _, server = woocommerce_fake.serve_in_thread()
    port = server.server_port
    server.shutdown()
    server.server_close()
    client = WooCommerceAPI(f"http://127.0.0.1:{port}", KEY, SECRET, timeout=(1, 1))

    with pytest.raises(PlatformUnavailable, match="connection failed"):
        client.get_order(1)


@pytest.fixture
def html_site():
    def app(environ, start_response):
        return Response("<html>Briefly unavailable for scheduled maintenance.</html>", 200,
                        content_type="text/html")(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_an_answer_that_is_not_json_is_refused(html_site):
    client = WooCommerceAPI(html_site, KEY, SECRET, timeout=(2, 5))

    with pytest.raises(PlatformRefused, match="not JSON"):
        client.get_order(1)
    with pytest.raises(PlatformRefused, match="not JSON"):
        list(client.orders_modified_after(START))


def test_no_log_line_and_no_error_names_the_key_or_the_secret(site, caplog):
    caplog.set_level(logging.DEBUG)
    put_order(site, id=11, status="processing")
    requests.post(f"{site}/_fake/faults", json=[{"path": "^orders/11$", "kind": "500"}], timeout=5)
    good = WooCommerceAPI(site, KEY, SECRET, timeout=(2, 5))
    bad = WooCommerceAPI(site, KEY, SECRET + "x", timeout=(2, 5))
    errors = []

    for attempt in (lambda: good.get_order(11), lambda: bad.get_order(11), lambda: good.get_refund(11, 3)):
        with pytest.raises((PlatformRefused, PlatformUnavailable)) as raised:
            attempt()
        errors.append(str(raised.value))
    good.get_order(11)
    list(good.orders_modified_after(START - timedelta(days=1)))

    logged = caplog.text
    assert "WooCommerce GET orders/11 -> 200" in logged and "WooCommerce GET orders -> 200" in logged
    for text in [logged, *errors]:
        assert KEY not in text and SECRET not in text
        assert "Y2tf" not in text  # the start of base64("ck_…"), the Basic header's value
