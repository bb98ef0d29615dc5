"""A local stand-in for the Stripe API endpoints the connector reads, and Stripe's signed webhook deliveries."""

# Follows Stripe's API reference: Bearer keys, list objects with `has_more` and `starting_after`,
# `expand[]`, and errors as {"error": {"type", "code", "message"}}. Sessions (with their line items),
# refunds, payment intents outside Checkout, events and exchange rates live in memory and are put there
# through the /_fake control endpoints, which need no key. The account settles in EUR.

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import threading
import time
from contextlib import AbstractContextManager
from decimal import ROUND_HALF_UP, Decimal
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
MAX_EVENT_TYPES = 20
SETTLEMENT_CURRENCY = "eur"
# Stripe's zero-decimal and three-decimal currencies: their minor unit is not a hundredth.
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd",
                          "vuv", "xaf", "xof", "xpf"})
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


class _State:
    def __init__(self, api_key: str) -> None:
        self.api_key = api_key
        self.lock = threading.Lock()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.line_items: dict[str, list[dict[str, Any]]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}  # in the order they were made
        self.payment_intents: dict[str, dict[str, Any]] = {}  # payments that no Checkout Session made
        self.events: dict[str, dict[str, Any]] = {}  # in the order they were put in
        self.exchange_rates: dict[str, Decimal] = {}  # EUR per major unit of the currency
        self.faults = FaultRules()
        self.calls: list[dict[str, Any]] = []
        self.counter = 0

    def reset(self) -> None:
        with self.lock:
            self.sessions.clear()
            self.line_items.clear()
            self.refunds.clear()
            self.payment_intents.clear()
            self.events.clear()
            self.exchange_rates.clear()
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


def _fault_response(status: int) -> Response:
    kind, code = {429: ("invalid_request_error", "rate_limit")}.get(status, ("api_error", None))
    return _refusal_response(_Refusal(status, kind, f"fault injected: HTTP {status}", code))


def _authorize(state: _State) -> None:
    auth = request.headers.get("Authorization", "")
    scheme, _, given = auth.partition(" ")
    if not given or scheme.lower() != "bearer":
        raise _Refusal(401, "invalid_request_error", "You did not provide an API key.")
    if not hmac.compare_digest(given.encode(), state.api_key.encode()):
        raise _Refusal(401, "invalid_request_error", f"Invalid API Key provided: {_masked(given)}",
                       "api_key_invalid")


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


def _suffix(payment_intent_id: str) -> str:
    return payment_intent_id.removeprefix("pi_")


def _intent_and_billing(state: _State, payment_intent_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The payment intent (one put in as it is, else what the session that made it tells) and who paid it."""
    with state.lock:
        stored = state.payment_intents.get(payment_intent_id)
        session = next((s for s in state.sessions.values() if s.get("payment_intent") == payment_intent_id), None)
    if stored is not None:
        intent = {k: v for k, v in stored.items() if k != "billing_details"}
        return intent, dict(stored.get("billing_details") or {})
    if session is None:
        raise _Refusal(404, "invalid_request_error", f"No such payment_intent: '{payment_intent_id}'",
                       "resource_missing", "intent")
    paid = session.get("payment_status") == "paid"
    intent = {
        "id": payment_intent_id,
        "object": "payment_intent",
        "amount": session.get("amount_total"),
        "currency": session.get("currency"),
        "status": "succeeded" if paid else "processing",
        "created": session.get("created"),
        "livemode": False,
    }
    customer = session.get("customer_details") or {}
    billing = {key: customer.get(key) for key in ("name", "email", "address", "phone")}
    return intent, billing


def _in_eur(state: _State, amount: Any, currency: Any) -> tuple[int, float | None]:
    """The settlement of `amount` (minor units of `currency`) in EUR cents, and the rate used (None for EUR)."""
    currency = str(currency or "").lower()
    if currency == SETTLEMENT_CURRENCY:
        return int(amount), None
    with state.lock:
        rate = state.exchange_rates.get(currency)
    if rate is None:
        # A made-up rate would hide a test's forgotten setting behind plausible numbers.
        raise _Refusal(400, "invalid_request_error",
                       f"the fake has no exchange rate for '{currency}': POST /_fake/exchange_rates first")
    exponent = 0 if currency in ZERO_DECIMAL else 3 if currency in THREE_DECIMAL else 2
    euros = Decimal(int(amount)).scaleb(-exponent) * rate
    return int((euros * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)), float(rate)


def _charge(state: _State, intent: dict[str, Any], billing: dict[str, Any], with_balance: bool) -> dict[str, Any]:
    """The intent's one charge: pending (no balance transaction yet) until the intent succeeds."""
    charge_id = f"ch_{_suffix(intent['id'])}"
    succeeded = intent.get("status") == "succeeded"
    with state.lock:
        refunded = sum(r.get("amount") or 0 for r in state.refunds.values()
                       if r.get("charge") == charge_id and r.get("status") == "succeeded")
    balance: Any = None
    if succeeded:
        balance = f"txn_{_suffix(intent['id'])}"
        if with_balance:
            amount, rate = _in_eur(state, intent.get("amount") or 0, intent.get("currency"))
            balance = {
                "id": balance, "object": "balance_transaction", "amount": amount, "currency": SETTLEMENT_CURRENCY,
                "exchange_rate": rate, "fee": 0, "net": amount, "status": "available", "type": "charge",
                "source": charge_id, "created": intent.get("created"),
            }
    amount = intent.get("amount") or 0
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if succeeded else 0,
        "amount_refunded": refunded,
        "refunded": succeeded and refunded >= amount > 0,
        "currency": intent.get("currency"),
        "status": "succeeded" if succeeded else "pending",
        "paid": succeeded,
        "payment_intent": intent["id"],
        "billing_details": {
            "name": billing.get("name"),
            "email": billing.get("email"),
            "phone": billing.get("phone"),
            "address": billing.get("address"),
        },
        "balance_transaction": balance,
        "created": intent.get("created"),
        "livemode": False,
    }


def get_payment_intent(payment_intent_id: str) -> Response:
    """A payment intent, its `latest_charge` an id, or the charge when `expand[]=latest_charge` (and its
    balance transaction with `latest_charge.balance_transaction`). An intent that has not been paid, is not
    processing and names no charge has none."""
    state = _state()
    intent, billing = _intent_and_billing(state, payment_intent_id)
    expanded = _expanded()
    if intent.get("status") in ("succeeded", "processing"):
        with_balance = "latest_charge.balance_transaction" in expanded
        charge = _charge(state, intent, billing, with_balance)
        intent["latest_charge"] = charge if with_balance or "latest_charge" in expanded else charge["id"]
    else:
        intent["latest_charge"] = None
    return jsonify(intent)


def _epoch(name: str) -> int | None:
    text = request.args.get(name)
    if text is None:
        return None
    if not text.isdigit():
        raise _Refusal(400, "invalid_request_error", f"Invalid integer: {text}", "parameter_invalid_integer", name)
    return int(text)


def _type_matches(pattern: str, name: str) -> bool:
    # `type` takes a trailing wildcard (`charge.*`), as Stripe's does.
    if pattern.endswith("*"):
        return name.startswith(pattern[:-1])
    return name == pattern


def list_events() -> Response:
    """Events newest first, filtered by `type` (with `*`) or `types[]` (at most 20), and `created[gt|gte|lt|lte]`
    or `created`."""
    state = _state()
    types = request.args.getlist("types[]")
    one_type = request.args.get("type")
    if len(types) > MAX_EVENT_TYPES:
        raise _Refusal(400, "invalid_request_error", f"types: at most {MAX_EVENT_TYPES} event types",
                       "parameter_invalid_array", "types")
    if types and one_type is not None:
        raise _Refusal(400, "invalid_request_error", "You may pass either type or types, but not both.",
                       "parameter_invalid", "types")
    bounds = {op: _epoch(f"created[{op}]") for op in ("gt", "gte", "lt", "lte")}
    exact = _epoch("created")
    with state.lock:
        events = list(state.events.values())

    def wanted(event: dict[str, Any]) -> bool:
        name, created = str(event.get("type") or ""), event["created"]
        return (
            (not types or name in types)
            and (one_type is None or _type_matches(one_type, name))
            and (exact is None or created == exact)
            and (bounds["gt"] is None or created > bounds["gt"])
            and (bounds["gte"] is None or created >= bounds["gte"])
            and (bounds["lt"] is None or created < bounds["lt"])
            and (bounds["lte"] is None or created <= bounds["lte"])
        )

    # Newest first; of events made in one second, the one put in last comes first.
    chosen = sorted((e for e in reversed(events) if wanted(e)), key=lambda e: e["created"], reverse=True)
    return _list(chosen, f"{API}/events")


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


def _posted(kind: str, with_amount: bool = False) -> dict[str, Any]:
    """A copy of the one `kind` object posted to a control endpoint; 400 for anything else, or (with_amount)
    for one without a positive integer `amount` in minor units."""
    posted = request.get_json(silent=True)
    if not isinstance(posted, dict):
        raise _Refusal(400, "invalid_request_error", f"the body must be one {kind} object")
    amount = posted.get("amount")
    if with_amount and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
        raise _Refusal(400, "invalid_request_error", f"the {kind} needs a positive integer amount in minor units")
    return dict(posted)


def fake_sessions() -> tuple[Response, int]:
    """Insert or replace one Checkout Session; its `line_items` (a list, or a list object) are kept apart, as
    Stripe serves them from their own endpoint."""
    state = _state()
    session = _posted("checkout.session")
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
    refund = _posted("refund", with_amount=True)
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


def fake_payment_intents() -> tuple[Response, int]:
    """Store one payment intent that no Checkout Session made ({id, amount, currency, status, billing_details
    {name, email, address, phone}, …}); it is served as it is, with its charge, and no session lists it."""
    state = _state()
    intent = _posted("payment_intent", with_amount=True)
    if intent.get("billing_details") is not None and not isinstance(intent["billing_details"], dict):
        raise _Refusal(400, "invalid_request_error", "billing_details must be an object")
    with state.lock:
        if not isinstance(intent.get("id"), str) or not intent["id"].startswith("pi_"):
            intent["id"] = state.new_id("pi_")
        intent.setdefault("object", "payment_intent")
        intent.setdefault("currency", "eur")
        intent.setdefault("status", "succeeded")
        intent.setdefault("created", int(time.time()))
        intent.setdefault("livemode", False)
        replaced = intent["id"] in state.payment_intents
        state.payment_intents[intent["id"]] = intent
    return jsonify(intent), 200 if replaced else 201


def fake_events() -> tuple[Response, int]:
    """Store one event as it is; `id` (evt_…), `object` and `created` (now) are filled in when it has none."""
    state = _state()
    event = _posted("event")
    created = event.get("created")
    if created is not None and (isinstance(created, bool) or not isinstance(created, int)):
        raise _Refusal(400, "invalid_request_error", "created must be a Unix time in whole seconds")
    if event.get("id") is not None and not isinstance(event["id"], str):
        raise _Refusal(400, "invalid_request_error", "id must be a string")
    with state.lock:
        if event.get("id") is None:
            event["id"] = state.new_id("evt_")
        event.setdefault("object", "event")
        if created is None:
            event["created"] = int(time.time())
        state.events.pop(event["id"], None)
        state.events[event["id"]] = event
    return jsonify(event), 201


def fake_exchange_rates() -> tuple[Response, int]:
    """Set the EUR a major unit of each currency is worth ({"jpy": 0.0062}); its payments settle at that rate."""
    state = _state()
    rates = request.get_json(silent=True)
    if not isinstance(rates, dict) or not rates:
        raise _Refusal(400, "invalid_request_error", 'the body must be {"<currency>": <EUR per unit>, …}')
    parsed = {}
    for currency, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
            raise _Refusal(400, "invalid_request_error", f"the rate of {currency!r} must be a positive number")
        parsed[str(currency).lower()] = Decimal(str(rate))
    with state.lock:
        state.exchange_rates.update(parsed)
        kept = {currency: float(rate) for currency, rate in state.exchange_rates.items()}
    return jsonify(kept), 200


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
    serving.guard_api(app, API, _state, _fault_response, _authorize)
    app.register_error_handler(_Refusal, _refusal_response)
    app.register_error_handler(HTTPException, _http_error_response)
    app.add_url_rule(f"{API}/checkout/sessions", view_func=list_sessions, methods=["GET"])
    app.add_url_rule(f"{API}/checkout/sessions/<session_id>", view_func=get_session, methods=["GET"])
    app.add_url_rule(f"{API}/checkout/sessions/<session_id>/line_items", view_func=list_line_items,
                     methods=["GET"])
    app.add_url_rule(f"{API}/payment_intents/<payment_intent_id>", view_func=get_payment_intent, methods=["GET"])
    app.add_url_rule(f"{API}/refunds", view_func=list_refunds, methods=["GET"])
    app.add_url_rule(f"{API}/events", view_func=list_events, methods=["GET"])
    app.add_url_rule("/_fake/sessions", view_func=fake_sessions, methods=["POST"])
    app.add_url_rule("/_fake/refunds", view_func=fake_refunds, methods=["POST"])
    app.add_url_rule("/_fake/payment_intents", view_func=fake_payment_intents, methods=["POST"])
    app.add_url_rule("/_fake/events", view_func=fake_events, methods=["POST"])
    app.add_url_rule("/_fake/exchange_rates", view_func=fake_exchange_rates, methods=["POST"])
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
    """A running fake's control endpoints (sessions, refunds, payment intents, events and exchange rates in,
    faults, the calls it answered, reset). Each call raises on an HTTP error."""

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

    def add_payment_intent(self, intent: dict[str, Any]) -> dict[str, Any]:
        """Store a payment intent no Checkout Session made; its `billing_details` go on its charge."""
        return self._post("/_fake/payment_intents", intent)

    def add_event(self, event: dict[str, Any]) -> dict[str, Any]:
        """Store an event for the events list to give, as Stripe keeps the events it sent (or failed to)."""
        return self._post("/_fake/events", event)

    def set_exchange_rates(self, rates: dict[str, float]) -> dict[str, float]:
        """Set what a major unit of each currency is worth in EUR, e.g. {"jpy": 0.0062}."""
        return self._post("/_fake/exchange_rates", rates)


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


def running(api_key: str = DEFAULT_KEY) -> AbstractContextManager[str]:
    """A fresh fake served from a thread on a free port, for the `with` block; gives its base URL."""
    return serving.running(serve_in_thread(api_key=api_key))


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
