"""A local stand-in for the Shopify Admin REST API's order list, with cursor paging, a token check and faults."""

# Follows Shopify's REST docs: GET orders.json filtered by updated_at_min and status, paged with a
# `page_info` cursor in the Link header (no other filter allowed beside it), 401 {"errors": …} without
# the right X-Shopify-Access-Token. Orders are put in through /_fake/orders, which needs no token.

from __future__ import annotations

import argparse
import base64
import hmac
import json
import threading
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from connector.platforms.polling import parse_time
from devtools import serving
from devtools.faults import FaultRules

API = "/admin/api/2025-07"
DEFAULT_TOKEN = "shpat_local_fake"
MAX_LIMIT = 250


class _State:
    def __init__(self, access_token: str) -> None:
        self.access_token = access_token
        self.lock = threading.Lock()
        self.orders: dict[int, dict[str, Any]] = {}
        self.faults = FaultRules()
        self.calls: list[dict[str, Any]] = []

    def reset(self) -> None:
        with self.lock:
            self.orders.clear()
            self.calls.clear()
        self.faults.replace([])


class _Refusal(Exception):
    def __init__(self, status: int, errors: Any) -> None:
        super().__init__(str(errors))
        self.status, self.errors = status, errors


def _state() -> _State:
    state: _State = current_app.extensions["shopify_fake"]
    return state


def _fault_response(status: int) -> Response:
    return _refusal_response(_Refusal(status, f"fault injected: HTTP {status}"))


def _authorize(state: _State) -> None:
    token = request.headers.get("X-Shopify-Access-Token", "")
    if not hmac.compare_digest(token, state.access_token):
        raise _Refusal(401, "[API] Invalid API key or access token (unrecognized login or wrong password)")


def list_orders() -> Response:
    state = _state()
    args = request.args
    try:
        limit = int(args.get("limit", "50"))
    except ValueError:
        raise _Refusal(400, {"limit": ["is not a number"]}) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _Refusal(400, {"limit": [f"must be between 1 and {MAX_LIMIT}"]})

    if "page_info" in args:
        if set(args) - {"page_info", "limit", "fields"}:
            raise _Refusal(400, {"page_info": ["Invalid value."]})
        try:
            cursor = json.loads(base64.urlsafe_b64decode(args["page_info"].encode()))
            filters, after = cursor["filters"], tuple(cursor["after"])
        except (ValueError, KeyError, TypeError):
            raise _Refusal(400, {"page_info": ["Invalid value."]}) from None
    else:
        filters = {k: args[k] for k in ("updated_at_min", "status", "order") if k in args}
        after = None
    since = parse_time(filters.get("updated_at_min")) if filters.get("updated_at_min") else None
    if filters.get("updated_at_min") and since is None:
        raise _Refusal(400, {"updated_at_min": ["is invalid"]})
    status = filters.get("status", "open")
    descending = filters.get("order", "created_at desc").split()[-1] == "desc"
    field = filters.get("order", "created_at desc").split()[0]

    with state.lock:
        orders = list(state.orders.values())
    chosen = []
    for order in orders:
        updated = parse_time(order.get("updated_at"))
        if since is not None and (updated is None or updated < since):  # "at or after"
            continue
        if status == "open" and (order.get("closed_at") or order.get("cancelled_at")):
            continue
        if status == "cancelled" and not order.get("cancelled_at"):
            continue
        chosen.append(order)

    def key(order: dict[str, Any]) -> tuple[str, int]:
        moment = parse_time(order.get(field))
        return (moment.isoformat() if moment else "", int(order["id"]))

    chosen.sort(key=key, reverse=descending)
    if after is not None:
        chosen = [o for o in chosen if (key(o) < after if descending else key(o) > after)]
    page = chosen[:limit]
    response = jsonify({"orders": page})
    if len(chosen) > limit:
        cursor = {"filters": filters, "after": list(key(page[-1]))}
        page_info = base64.urlsafe_b64encode(json.dumps(cursor).encode()).decode()
        base = request.host_url.rstrip("/") + API
        response.headers["Link"] = f'<{base}/orders.json?limit={limit}&page_info={page_info}>; rel="next"'
    return response


def fake_orders() -> tuple[Response, int]:
    """Insert or replace one order object; it is updated now unless it says when."""
    state = _state()
    order = request.get_json(silent=True)
    if isinstance(order, dict) and isinstance(order.get("order"), dict):
        order = order["order"]
    if not isinstance(order, dict) or not isinstance(order.get("id"), int):
        raise _Refusal(400, "the body must be one order object with an integer id")
    order = dict(order)
    order.setdefault("updated_at", datetime.now(UTC).isoformat(timespec="seconds"))
    with state.lock:
        known = order["id"] in state.orders
        state.orders[order["id"]] = order
    return jsonify(order), 200 if known else 201


def _refusal_response(error: _Refusal) -> Response:
    response = jsonify({"errors": error.errors})
    response.status_code = error.status
    return response


def _http_error_response(error: HTTPException) -> Response:
    return _refusal_response(_Refusal(error.code or 500, error.name))


def create_app(access_token: str = DEFAULT_TOKEN) -> Flask:
    app = Flask(__name__)
    app.extensions["shopify_fake"] = _State(access_token)
    serving.guard_api(app, API, _state, _fault_response, _authorize)
    app.register_error_handler(_Refusal, _refusal_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.add_url_rule(f"{API}/orders.json", view_func=list_orders, methods=["GET"])
    app.add_url_rule("/_fake/orders", view_func=fake_orders, methods=["POST"])
    serving.add_control_routes(app, _state, lambda message: _Refusal(400, message))
    return app


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, access_token: str = DEFAULT_TOKEN
) -> tuple[str, BaseWSGIServer]:
    """Serve a fresh fake from a daemon thread; returns (api_base_url, server); server.shutdown() stops it.

    The URL is the Admin API's base, as SHOPIFY_API_BASE_URL takes it."""
    server = make_server(host, port, create_app(access_token), threaded=True)
    serving.serve_in_thread(server, "shopify-fake")
    return f"http://{host}:{server.server_port}{API}", server


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.shopify_fake`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools.shopify_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5057)
    parser.add_argument("--access-token", default=DEFAULT_TOKEN)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, create_app(args.access_token), threaded=True)
    serving.serve_until_interrupted(server, f"Shopify fake listening on http://{args.host}:{server.server_port}{API}")


if __name__ == "__main__":
    main()
