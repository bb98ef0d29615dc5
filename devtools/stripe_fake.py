"""A local stand-in for the Stripe API endpoints the connector reads, and Stripe's signed webhook deliveries."""

# Follows Stripe's API reference: Bearer keys, list objects with `has_more` and `starting_after`,
# `expand[]`, and errors as {"error": {"type", "code", "message"}}. Sessions (with their line items)
# and refunds live in memory and are put there through the /_fake control endpoints, which need no key.

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from devtools import serving
from devtools.faults import FaultRules

API = "/v1"
DEFAULT_KEY = "sk_test_local_fake"
DEFAULT_LIMIT = 10
MAX_LIMIT = 100
USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


class _State:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}  # in the order they were made
        self.faults = FaultRules()
        self.calls: list[dict[str, Any]] = []
        self.counter = 0

    def reset(self) -> None:
        with self.lock:
            self.sessions.clear()
            self.line_items.clear()
            self.refunds.clear()
            self.faults.replace([])
            self.calls.clear()
            self.counter = 0

    def new_id(self, prefix: str) -> str:
        """A fresh id of Stripe's shape (called with the lock held)."""
        self.counter += 1
        return f"{prefix}fake{self.counter:08d}"


class _Refusal(Exception):
    """An error answered as Stripe answers it: {"error": {"type", "code", "message", "param"}}."""

    def __init__(self, status: int, kind: str, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.code, self.param = status, kind, message, code, param


def _state() -> _State:
    state: _State = current_app.extensions["stripe_fake"]
    return state


def _masked(key: str) -> str:
    """The key as Stripe names it in its 401 message: its kind and last four characters."""
    kind = key.rsplit("_", 1)[0] + "_" if "_" in key else ""
    return f"{kind}{'*' * 8}{key[-4:]}" if len(key) > 8 else "****"


# --- the REST API --------------------------------------------------------------------------------


def _before_api_request() -> Response | None:
    path = serving.api_path(API)
    if path is None:
        return None
    state = _state()
    status = serving.log_and_fault(state.lock, state.calls, state.faults, path)
    if status is not None:
        kind, code = {429: ("invalid_request_error", "rate_limit")}.get(status, ("api_error", None))
        return _refusal_response(_Refusal(status, kind, f"fault injected: HTTP {status}", code))
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if not given or scheme.lower() != "bearer":
        raise _Refusal(401, "invalid_request_error", "You did not provide an API key.")
    if not hmac.compare_digest(given.encode(), state.api_key.encode()):
        raise _Refusal(401, "invalid_request_error", f"Invalid API Key provided: {_masked(given)}",
                       "api_key_invalid")
    return None


def _limit() -> int:
    text = request.args.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise _Refusal(400, "invalid_request_error", f"Invalid limit: must be between 1 and {MAX_LIMIT}",
                       "parameter_invalid_integer", "limit")
    return int(text)


def _expanded() -> set[str]:
    return set(request.args.getlist("expand[]")) | set(request.args.getlist("expand"))


def _list(items: list[dict[str, Any]], url: str) -> Response:
    """One page of `items` as Stripe lists them: after `starting_after` (an id in the list), `limit` long."""
    limit = _limit()
    after = request.args.get("starting_after")
    start = 0
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise _Refusal(400, "invalid_request_error", f"No such object: '{after}'", "resource_missing",
                           "starting_after")
        start = ids.index(after) + 1
    window = items[start : start + limit]
    return jsonify({"object": "list", "data": window, "has_more": start + limit < len(items), "url": url})


def _session(state: _State, session_id: str) -> dict[str, Any]:
    with state.lock:
        session = state.sessions.get(session_id)
    if session is None:
        raise _Refusal(404, "invalid_request_error", f"No such checkout.session: '{session_id}'",
                       "resource_missing", "session")
    return session


def _line_items(state: _State, session_id: str, with_taxes: bool) -> list[dict[str, Any]]:
    with state.lock:
        items = list(state.line_items.get(session_id, []))
    # `taxes` is an includable field: Stripe leaves it out unless it is expanded.
    return items if with_taxes else [{k: v for k, v in item.items() if k != "taxes"} for item in items]


def get_session(session_id: str) -> Response:
    state = _state()
    session = dict(_session(state, session_id))
    expanded = _expanded()
    if "line_items" in expanded:
        items = _line_items(state, session_id, "line_items.data.taxes" in expanded)
        url = f"{API}/checkout/sessions/{session_id}/line_items"
        session["line_items"] = {"object": "list", "data": items, "has_more": False, "url": url}
    return jsonify(session)


def list_line_items(session_id: str) -> Response:
    state = _state()
    _session(state, session_id)
    items = _line_items(state, session_id, "data.taxes" in _expanded())
    return _list(items, f"{API}/checkout/sessions/{session_id}/line_items")


def list_sessions() -> Response:
    state = _state()
    wanted = request.args.get("payment_intent")
    with state.lock:
        sessions = list(state.sessions.values())
    chosen = [s for s in reversed(sessions) if wanted is None or s.get("payment_intent") == wanted]
    return _list(chosen, f"{API}/checkout/sessions")


def get_payment_intent(payment_intent_id: str) -> Response:
    """The payment intent a session made, as far as the session tells (amount, currency, status)."""
    state = _state()
    with state.lock:
        session = next((s for s in state.sessions.values() if s.get("payment_intent") == payment_intent_id), None)
    if session is None:
        raise _Refusal(404, "invalid_request_error", f"No such payment_intent: '{payment_intent_id}'",
                       "resource_missing", "intent")
    paid = session.get("payment_status") == "paid"
    return jsonify({
        "id": payment_intent_id,
        "object": "payment_intent",
        "amount": session.get("amount_total"),
        "currency": session.get("currency"),
        "status": "succeeded" if paid else "processing",
        "created": session.get("created"),
        "livemode": False,
    })


def list_refunds() -> Response:
    state = _state()
    charge, intent = request.args.get("charge"), request.args.get("payment_intent")
    with state.lock:
        refunds = list(state.refunds.values())
    chosen = [
        r for r in reversed(refunds)  # newest first, as Stripe lists them
        if (charge is None or r.get("charge") == charge) and (intent is None or r.get("payment_intent") == intent)
    ]
    return _list(chosen, f"{API}/refunds")


# --- control endpoints ---------------------------------------------------------------------------


def fake_sessions() -> tuple[Response, int]:
    """Insert or replace one Checkout Session; its `line_items` (a list, or a list object) are kept apart, as
    Stripe serves them from their own endpoint."""
    state = _state()
    session = request.get_json(silent=True)
    if not isinstance(session, dict):
        raise _Refusal(400, "invalid_request_error", "the body must be one checkout.session object")
    session = dict(session)
    items = session.pop("line_items", None)
    if isinstance(items, dict):
        items = items.get("data")
    if items is None:
        items = []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise _Refusal(400, "invalid_request_error", "line_items must be a list of line item objects")
    with state.lock:
        if not isinstance(session.get("id"), str) or not session["id"].startswith("cs_"):
            session["id"] = state.new_id("cs_test_")
        session.setdefault("object", "checkout.session")
        session.setdefault("created", int(time.time()))
        session.setdefault("livemode", False)
        kept = []
        for item in items:
            item = dict(item)
            if not isinstance(item.get("id"), str) or not item["id"]:
                item["id"] = state.new_id("li_")
            item.setdefault("object", "item")
            kept.append(item)
        replaced = session["id"] in state.sessions
        state.sessions[session["id"]] = session
        state.line_items[session["id"]] = kept
    return jsonify({**session, "line_items": {"object": "list", "data": kept, "has_more": False}}), (
        200 if replaced else 201
    )


def fake_refunds() -> tuple[Response, int]:
    """Store one refund object (it needs a positive integer `amount`); newest is listed first."""
    state = _state()
    refund = request.get_json(silent=True)
    if not isinstance(refund, dict):
        raise _Refusal(400, "invalid_request_error", "the body must be one refund object")
    amount = refund.get("amount")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise _Refusal(400, "invalid_request_error", "the refund needs a positive integer amount in minor units")
    refund = dict(refund)
    with state.lock:
        if not isinstance(refund.get("id"), str) or not refund["id"].startswith("re_"):
            refund["id"] = state.new_id("re_")
        refund.setdefault("object", "refund")
        refund.setdefault("status", "succeeded")
        refund.setdefault("created", int(time.time()))
        refund.setdefault("currency", "eur")
        refund.setdefault("charge", None)
        refund.setdefault("payment_intent", None)
        state.refunds.pop(refund["id"], None)
        state.refunds[refund["id"]] = refund
    return jsonify(refund), 201


def _refusal_response(error: _Refusal) -> Response:
    body: dict[str, Any] = {"type": error.kind, "message": error.message}
    if error.code:
        body["code"] = error.code
    if error.param:
        body["param"] = error.param
    response = jsonify({"error": body})
    response.status_code = error.status
    return response


def _http_error_response(error: HTTPException) -> Response:
    status = error.code or 500
    kind = "api_error" if status >= 500 else "invalid_request_error"
    message = f"Unrecognized request URL ({request.method}: {request.path})." if status == 404 else error.name
    return _refusal_response(_Refusal(status, kind, message))


def create_app(api_key: str = DEFAULT_KEY) -> Flask:
    app = Flask(__name__)
    app.extensions["stripe_fake"] = _State(api_key)
    app.before_request(_before_api_request)
    app.register_error_handler(_Refusal, _refusal_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.add_url_rule(f"{API}/checkout/sessions", view_func=list_sessions, methods=["GET"])
    app.add_url_rule(f"{API}/checkout/sessions/<session_id>", view_func=get_session, methods=["GET"])
    app.add_url_rule(f"{API}/checkout/sessions/<session_id>/line_items", view_func=list_line_items,
                     methods=["GET"])
    app.add_url_rule(f"{API}/payment_intents/<payment_intent_id>", view_func=get_payment_intent, methods=["GET"])
    app.add_url_rule(f"{API}/refunds", view_func=list_refunds, methods=["GET"])
    app.add_url_rule("/_fake/sessions", view_func=fake_sessions, methods=["POST"])
    app.add_url_rule("/_fake/refunds", view_func=fake_refunds, methods=["POST"])
    serving.add_control_routes(app, _state, lambda message: _Refusal(400, "invalid_request_error", message))
    return app


# --- webhook deliveries, as Stripe makes them ----------------------------------------------------


def encode(event: Any) -> bytes:
    """The body Stripe sends: JSON indented by two spaces, non-ASCII text as it is."""
    return json.dumps(event, indent=2, ensure_ascii=False).encode()


def sign(body: bytes, secret: str, t: int | None = None) -> str:
    """A Stripe-Signature header: `t=<unix time>,v1=<hex HMAC-SHA256 of "{t}.{body}" keyed with the secret>`."""
    timestamp = int(time.time()) if t is None else int(t)
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def deliver(url: str, event: Any, secret: str, t: int | None = None, timeout: float = 10) -> requests.Response:
    """POST `event` to `url` with the headers and signature of a Stripe webhook delivery."""
    body = encode(event)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": USER_AGENT,
        "Stripe-Signature": sign(body, secret, t),
    }
    return requests.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)


# --- driving a running fake, as tests do ---------------------------------------------------------


class Control(serving.ControlClient):
    """A running fake's control endpoints (sessions and refunds in, faults, the calls it answered, reset).
    Each call raises on an HTTP error."""

    def add_session(
        self, session: dict[str, Any], line_items: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """Store a session; `line_items` (or the session's own `line_items`) are served from its lines endpoint."""
        body = dict(session)
        if line_items is not None:
            body["line_items"] = line_items
        return self._post("/_fake/sessions", body)

    def add_refund(self, refund: dict[str, Any]) -> dict[str, Any]:
        return self._post("/_fake/refunds", refund)


# --- serving -------------------------------------------------------------------------------------


def _server(host: str, port: int, api_key: str) -> BaseWSGIServer:
    return make_server(host, port, create_app(api_key), threaded=True)


def serve_in_thread(
    host: str = "127.0.0.1", port: int = 0, api_key: str = DEFAULT_KEY
) -> tuple[str, BaseWSGIServer]:
    """Serve a fresh fake from a daemon thread; returns (base_url, server); server.shutdown() stops it."""
    server = _server(host, port, api_key)
    serving.serve_in_thread(server, "stripe-fake")
    return f"http://{host}:{server.server_port}", server


@contextmanager
def running(api_key: str = DEFAULT_KEY) -> Iterator[str]:
    """A fresh fake served from a thread on a free port, for the `with` block; gives its base URL."""
    url, server = serve_in_thread(api_key=api_key)
    try:
        yield url
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.stripe_fake`: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m devtools.stripe_fake", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5058)
    parser.add_argument("--api-key", default=DEFAULT_KEY)
    args = parser.parse_args(argv)
    server = _server(args.host, args.port, args.api_key)
    serving.serve_until_interrupted(server, f"Stripe fake listening on http://{args.host}:{server.server_port}")


if __name__ == "__main__":
    main()
