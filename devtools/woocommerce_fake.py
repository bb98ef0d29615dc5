"""A local stand-in for the WooCommerce REST API v3 endpoints the connector reads, and its webhook deliveries."""

# Follows WooCommerce's REST docs and its source (WC_REST_Orders_Controller, WC_Webhook::deliver()):
# the same filters, paging headers, error bodies and webhook headers. Orders live in memory (or in a
# JSON file with --state) and are put there through the /_fake control endpoints, which need no auth.

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from connector.platforms.polling import parse_time
from devtools import serving
from devtools.faults import FaultRules

API = "/wp-json/wc/v3"
DEFAULT_KEY = "ck_local_fake"
DEFAULT_SECRET = "cs_local_fake"
MAX_PER_PAGE = 100
USER_AGENT = "WooCommerce/9.4.0 Hookshot (WordPress/6.7)"
_GMT_FORMAT = "%Y-%m-%dT%H:%M:%S"


class _State:
    def __init__(self, consumer_key: str, consumer_secret: str, path: Path | None) -> None:
        self.consumer_key = consumer_key
        self.consumer_secret = consumer_secret
        self.path = path
        self.lock = threading.Lock()
        self.orders: dict[int, dict[str, Any]] = {}
        self.refunds: dict[int, dict[int, dict[str, Any]]] = {}
        self.faults = FaultRules()
        self.calls: list[dict[str, Any]] = []
        self.next_id = 1000
        if path is not None and path.exists():
            self._load(path)

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.refunds.clear()
            self.faults.replace([])
            self.calls.clear()
            self.next_id = 1000
            self.save()

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def save(self) -> None:
        """Write the orders and refunds to the state file, if any (called with the lock held)."""
        if self.path is None:
            return
        kept = {
            "next_id": self.next_id,
            "orders": list(self.orders.values()),
            "refunds": {str(order_id): list(refunds.values()) for order_id, refunds in self.refunds.items()},
        }
        serving.write_json_atomically(self.path, kept)

    def _load(self, path: Path) -> None:
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            self.orders = {int(order["id"]): order for order in kept["orders"]}
            self.refunds = {
                int(order_id): {int(r["id"]): r for r in refunds} for order_id, refunds in kept["refunds"].items()
            }
            self.next_id = int(kept["next_id"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(
                f"the fake's state file {path} cannot be read ({exc!r}); move it away to start empty"
            ) from exc


class _Refusal(Exception):
    """An error answered as WooCommerce answers it: {"code", "message", "data": {"status"}}."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _state() -> _State:
    state: _State = current_app.extensions["woocommerce_fake"]
    return state


def now_gmt() -> str:
    return datetime.now(UTC).strftime(_GMT_FORMAT)


def _later_than(previous: Any) -> str:
    """Now, or a second after `previous` if that is not earlier: each change has its own modification time,
    as WooCommerce's webhook keys (order id and date_modified_gmt) need."""
    moment = datetime.now(UTC).replace(microsecond=0)
    before = parse_time(previous)
    if before is not None and moment <= before:
        moment = before + timedelta(seconds=1)
    return moment.strftime(_GMT_FORMAT)


# --- the REST API --------------------------------------------------------------------------------


def _authorized(state: _State) -> bool:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return False
    return hmac.compare_digest(auth.username or "", state.consumer_key) and hmac.compare_digest(
        auth.password or "", state.consumer_secret
    )


def _fault_response(status: int) -> Response:
    return _refusal_response(_Refusal(status, "fake_fault", f"fault injected: HTTP {status}"))


def _authorize(state: _State) -> None:
    if not _authorized(state):
        raise _Refusal(401, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")


def list_orders() -> Response:
    state = _state()
    args = request.args
    per_page = _int_arg("per_page", 10, 1, MAX_PER_PAGE)
    page = _int_arg("page", 1, 1, None)
    after, before = _time_arg("modified_after"), _time_arg("modified_before")
    statuses = {s.strip() for s in args.get("status", "any").split(",") if s.strip()}
    orderby = args.get("orderby", "date")
    if orderby not in {"date", "modified", "id", "include", "title", "slug"}:
        raise _Refusal(400, "rest_invalid_param", "Invalid parameter(s): orderby")
    direction = args.get("order", "desc")
    if direction not in {"asc", "desc"}:
        raise _Refusal(400, "rest_invalid_param", "Invalid parameter(s): order")

    with state.lock:
        orders = list(state.orders.values())
    chosen = []
    for order in orders:
        modified = parse_time(order.get("date_modified_gmt"))
        # WooCommerce's date filters are strict (WP_Date_Query's default is not inclusive).
        if after is not None and (modified is None or modified <= after):
            continue
        if before is not None and (modified is None or modified >= before):
            continue
        if "any" not in statuses and order.get("status") not in statuses:
            continue
        chosen.append(order)
    field = {"modified": "date_modified_gmt", "date": "date_created_gmt"}.get(orderby)
    chosen.sort(
        key=lambda o: (str(o.get(field) or "") if field else "", int(o["id"])), reverse=direction == "desc"
    )

    total = len(chosen)
    total_pages = -(-total // per_page)
    window = chosen[(page - 1) * per_page : page * per_page]
    response = jsonify(window)
    response.headers["X-WP-Total"] = str(total)
    response.headers["X-WP-TotalPages"] = str(total_pages)
    return response


def get_order(order_id: int) -> Response:
    return jsonify(_order(_state(), order_id))


def list_refunds(order_id: int) -> Response:
    state = _state()
    _order(state, order_id)
    with state.lock:
        refunds = sorted(state.refunds.get(order_id, {}).values(), key=lambda r: -int(r["id"]))
    response = jsonify(refunds)
    response.headers["X-WP-Total"] = str(len(refunds))
    response.headers["X-WP-TotalPages"] = "1" if refunds else "0"
    return response


def get_refund(order_id: int, refund_id: int) -> Response:
    state = _state()
    _order(state, order_id)
    with state.lock:
        refund = state.refunds.get(order_id, {}).get(refund_id)
    if refund is None:
        raise _Refusal(404, "woocommerce_rest_invalid_id", "Invalid ID.")
    return jsonify(refund)


def _order(state: _State, order_id: int) -> dict[str, Any]:
    with state.lock:
        order = state.orders.get(order_id)
    if order is None:
        raise _Refusal(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
    return order


def _int_arg(name: str, default: int, low: int, high: int | None) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise _Refusal(400, "rest_invalid_param", f"Invalid parameter(s): {name}") from None
    if value < low or (high is not None and value > high):
        raise _Refusal(400, "rest_invalid_param", f"Invalid parameter(s): {name}")
    return value


def _time_arg(name: str) -> datetime | None:
    text = request.args.get(name)
    if text is None:
        return None
    moment = parse_time(text)
    if moment is None:
        raise _Refusal(400, "rest_invalid_param", f"Invalid parameter(s): {name}")
    # The fake's site runs on UTC, so local and GMT dates (dates_are_gmt) read the same.
    return moment


# --- control endpoints ---------------------------------------------------------------------------


def fake_orders() -> tuple[Response, int]:
    """Insert or replace one REST order object; it is modified now unless it says when."""
    state = _state()
    order = request.get_json(silent=True)
    if not isinstance(order, dict):
        raise _Refusal(400, "fake_bad_body", "the body must be one order object")
    order = dict(order)
    with state.lock:
        if not isinstance(order.get("id"), int) or order["id"] <= 0:
            order["id"] = state.new_id()
        previous = state.orders.get(order["id"], {})
        if not order.get("date_modified_gmt"):
            order["date_modified_gmt"] = _later_than(previous.get("date_modified_gmt"))
        order.setdefault("date_modified", order["date_modified_gmt"])
        order.setdefault("date_created_gmt", previous.get("date_created_gmt") or order["date_modified_gmt"])
        order.setdefault("refunds", [])
        state.orders[order["id"]] = order
        state.save()
    return jsonify(order), 200 if previous else 201


def fake_refunds(order_id: int) -> tuple[Response, int]:
    """Store a REST refund object and list it on its order, as WooCommerce does when a refund is made."""
    state = _state()
    refund = request.get_json(silent=True)
    if not isinstance(refund, dict):
        raise _Refusal(400, "fake_bad_body", "the body must be one refund object")
    try:
        amount = Decimal(str(refund.get("amount")))
    except InvalidOperation:
        raise _Refusal(400, "fake_bad_body", "the refund needs an amount, e.g. \"5.00\"") from None
    if not amount.is_finite() or amount <= 0:
        raise _Refusal(400, "fake_bad_body", "the refund's amount must be positive")
    refund = dict(refund)
    with state.lock:
        order = state.orders.get(order_id)
        if order is None:
            raise _Refusal(404, "woocommerce_rest_shop_order_invalid_id", "Invalid ID.")
        if not isinstance(refund.get("id"), int) or refund["id"] <= 0:
            refund["id"] = state.new_id()
        refund.setdefault("reason", "")
        refund.setdefault("date_created_gmt", now_gmt())
        refund.setdefault("line_items", [])
        refund.setdefault("shipping_lines", [])
        refund.setdefault("fee_lines", [])
        state.refunds.setdefault(order_id, {})[refund["id"]] = refund
        # The order lists its newest refund first, with a negative total, as WooCommerce's REST API does.
        entry = {"id": refund["id"], "reason": refund["reason"], "total": f"-{amount}"}
        others = [r for r in order.get("refunds") or [] if r.get("id") != refund["id"]]
        order["refunds"] = [entry, *others]
        order["date_modified_gmt"] = _later_than(order.get("date_modified_gmt"))
        order["date_modified"] = order["date_modified_gmt"]
        state.save()
    return jsonify(refund), 201


def _refusal_response(error: _Refusal) -> Response:
    response = jsonify({"code": error.code, "message": error.message, "data": {"status": error.status}})
    response.status_code = error.status
    return response


def _http_error_response(error: HTTPException) -> Response:
    code = "rest_no_route" if error.code == 404 else "rest_error"
    return _refusal_response(_Refusal(error.code or 500, code, error.description or error.name))


def create_app(
    consumer_key: str = DEFAULT_KEY, consumer_secret: str = DEFAULT_SECRET, state_path: str | Path | None = None
) -> Flask:
    app = Flask(__name__)
    app.extensions["woocommerce_fake"] = _State(
        consumer_key, consumer_secret, Path(state_path) if state_path is not None else None
    )
    serving.guard_api(app, API, _state, _fault_response, _authorize)
    app.register_error_handler(_Refusal, _refusal_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.add_url_rule(f"{API}/orders", view_func=list_orders, methods=["GET"])
    app.add_url_rule(f"{API}/orders/<int:order_id>", view_func=get_order, methods=["GET"])
    app.add_url_rule(f"{API}/orders/<int:order_id>/refunds", view_func=list_refunds, methods=["GET"])
    app.add_url_rule(
        f"{API}/orders/<int:order_id>/refunds/<int:refund_id>", view_func=get_refund, methods=["GET"]
    )
    app.add_url_rule("/_fake/orders", view_func=fake_orders, methods=["POST"])
    app.add_url_rule("/_fake/orders/<int:order_id>/refunds", view_func=fake_refunds, methods=["POST"])
    serving.add_control_routes(app, _state, lambda message: _Refusal(400, "fake_bad_body", message))
    return app


# --- webhook deliveries, as WooCommerce makes them -----------------------------------------------

# wp_specialchars_decode($secret, ENT_QUOTES): the entities WooCommerce decodes in a secret before signing.
_SECRET_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#039;": "'", "&#39;": "'"}
_SECRET_ENTITY = re.compile("|".join(re.escape(e) for e in _SECRET_ENTITIES))


def encode(payload: Any) -> bytes:
    """The body WooCommerce sends: wp_json_encode's compact JSON, which escapes "/" and non-ASCII text."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True).replace("/", "\\/").encode()


def sign(body: bytes, secret: str) -> str:
    """X-WC-Webhook-Signature: base64 of the HMAC-SHA256 of the body, keyed with the entity-decoded secret."""
    key = _SECRET_ENTITY.sub(lambda m: _SECRET_ENTITIES[m.group(0)], secret)
    return base64.b64encode(hmac.new(key.encode(), body, hashlib.sha256).digest()).decode()


def deliver(
    url: str,
    order: Any,
    secret: str,
    topic: str = "order.updated",
    source: str = "https://shop.example/",
    webhook_id: int = 1,
    timeout: float = 10,
) -> requests.Response:
    """POST `order` to `url` with the headers and signature of a WooCommerce webhook delivery."""
    body = encode(order)
    resource, _, event = topic.partition(".")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-WC-Webhook-Source": source,
        "X-WC-Webhook-Topic": topic,
        "X-WC-Webhook-Resource": resource,
        "X-WC-Webhook-Event": event,
        "X-WC-Webhook-Signature": sign(body, secret),
        "X-WC-Webhook-ID": str(webhook_id),
        "X-WC-Webhook-Delivery-ID": hashlib.md5(f"{webhook_id}{time.time()}{uuid.uuid4()}".encode()).hexdigest(),
    }
    # WooCommerce follows no redirect (redirection 0).
    return requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)


def ping(url: str, webhook_id: int = 1, timeout: float = 10) -> requests.Response:
    """The unsigned form POST WooCommerce sends when a webhook is created."""
    return requests.post(
        url, data={"webhook_id": str(webhook_id)}, headers={"User-Agent": USER_AGENT}, timeout=timeout,
        allow_redirects=False,
    )


# --- driving a running fake, as tests do ---------------------------------------------------------


class Control(serving.ControlClient):
    """A running fake's control endpoints (orders and refunds in, faults, the calls it answered, reset), and
    its REST API read with the consumer key and secret it was started with. Each call raises on an HTTP error."""

    def __init__(self, url: str, consumer_key: str = DEFAULT_KEY, consumer_secret: str = DEFAULT_SECRET):
        super().__init__(url)
        self._auth = (consumer_key, consumer_secret)

    def add_order(self, order: dict[str, Any]) -> dict[str, Any]:
        return self._post("/_fake/orders", order)

    def add_refund(self, order_id: int, refund: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"/_fake/orders/{order_id}/refunds", refund)

    def order(self, order_id: int) -> dict[str, Any]:
        """The order as the REST API returns it now (its refunds[] included)."""
        answer = requests.get(f"{self.url}{API}/orders/{order_id}", auth=self._auth, timeout=5)
        answer.raise_for_status()
        return answer.json()


# --- serving -------------------------------------------------------------------------------------


def _server(
    host: str, port: int, consumer_key: str, consumer_secret: str, state_path: str | Path | None
) -> BaseWSGIServer:
    return make_server(host, port, create_app(consumer_key, consumer_secret, state_path), threaded=True)


def serve_in_thread(
    host: str = "127.0.0.1",
    port: int = 0,
    consumer_key: str = DEFAULT_KEY,
    consumer_secret: str = DEFAULT_SECRET,
    state_path: str | Path | None = None,
) -> tuple[str, BaseWSGIServer]:
    """Serve a fresh fake from a daemon thread; returns (site_url, server); server.shutdown() stops it."""
    server = _server(host, port, consumer_key, consumer_secret, state_path)
    serving.serve_in_thread(server, "woocommerce-fake")
    return f"http://{host}:{server.server_port}", server


def running(consumer_key: str = DEFAULT_KEY, consumer_secret: str = DEFAULT_SECRET) -> AbstractContextManager[str]:
    """A fresh fake served from a thread on a free port, for the `with` block; gives its site URL."""
    return serving.running(serve_in_thread(consumer_key=consumer_key, consumer_secret=consumer_secret))


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.woocommerce_fake`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools.woocommerce_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5056)
    parser.add_argument("--consumer-key", default=DEFAULT_KEY)
    parser.add_argument("--consumer-secret", default=DEFAULT_SECRET)
    parser.add_argument(
        "--state", default=None, metavar="PATH", help="keep the orders and refunds in this JSON file across runs"
    )
    args = parser.parse_args(argv)
    server = _server(args.host, args.port, args.consumer_key, args.consumer_secret, args.state)
    serving.serve_until_interrupted(server, f"WooCommerce fake listening on http://{args.host}:{server.server_port}")


if __name__ == "__main__":
    main()
