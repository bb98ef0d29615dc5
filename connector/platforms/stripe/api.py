"""Stripe's REST API, read only (Checkout Sessions, line items, refunds, payments, events): a typed client."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from urllib.parse import quote

import requests

from connector.platforms.common import PlatformRefused
from connector.platforms.rest import RestClient

DEFAULT_BASE_URL = "https://api.stripe.com"
PAGE_LIMIT = 100  # Stripe's largest page
# Far more pages than any session's lines or any charge's refunds: a server that always says `has_more`
# (or hands back the same cursor) must not keep the worker looping.
MAX_PAGES = 1000

# Stripe's ids are a prefix and letters, digits and underscores (`cs_test_a1B2…`); anything else could
# change the path it is put in.
ID_BODY = re.compile(r"[A-Za-z0-9_]{1,250}")
SESSION_PREFIXES = ("cs_",)
CHARGE_PREFIXES = ("ch_", "py_")  # `py_` charges come from some payment methods (SEPA, Bancontact, …)
PAYMENT_INTENT_PREFIXES = ("pi_",)
MAX_EVENT_TYPES = 20  # the most `types[]` Stripe takes in one events list
# An event type is dotted lower-case words (`checkout.session.completed`); Stripe's `type` filter also takes `*`,
# `types[]` does not.
_EVENT_TYPE = re.compile(r"[a-z0-9_]+(\.[a-z0-9_]+)*")


class StripeAPI:
    """GET requests to Stripe's `/v1/` API with a secret or restricted key as a Bearer token.

    Raises PlatformUnavailable when trying again later may succeed (timeouts, connection errors, 5xx,
    429) and PlatformRefused when it will not (other 4xx, an answer that is not what the API describes).
    Neither error's text, nor any log line, carries the key.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float | tuple[float, float] = (5, 20),
        session: requests.Session | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/v1/"
        bearer = f"Bearer {api_key}"
        self._rest = RestClient(
            "Stripe", self.base_url, secrets=(api_key, bearer), timeout=timeout, session=session,
            headers={"Authorization": bearer},
        )

    def get_session(self, session_id: str) -> dict:
        """GET checkout/sessions/{id}: the Checkout Session as its events carry it (without line items)."""
        return self._object(f"checkout/sessions/{stripe_id(session_id, SESSION_PREFIXES)}", "checkout.session")

    def session_line_items(self, session_id: str) -> list[dict]:
        """Every line item of a session, each with its `taxes` expanded, all pages, in Stripe's order."""
        path = f"checkout/sessions/{stripe_id(session_id, SESSION_PREFIXES)}/line_items"
        return self._all(path, {"expand[]": "data.taxes"})

    def refunds_of_charge(self, charge_id: str) -> list[dict]:
        """Every refund of a charge, all pages, newest first as Stripe lists them."""
        return self._all("refunds", {"charge": stripe_id(charge_id, CHARGE_PREFIXES)})

    def get_payment_intent(self, payment_intent_id: str) -> dict:
        """GET payment_intents/{id}: the payment intent (its amount, currency, status and latest charge)."""
        path = f"payment_intents/{stripe_id(payment_intent_id, PAYMENT_INTENT_PREFIXES)}"
        return self._object(path, "payment_intent")

    def payment_intent_with_charge(self, payment_intent_id: str) -> dict:
        """GET payment_intents/{id} with its latest charge and that charge's balance transaction expanded.

        `latest_charge` is None while the intent has no charge, else the charge (`billing_details`,
        `amount_refunded`, …) whose `balance_transaction` is None until the money settles, else the
        settlement: `amount` in the account's currency's minor units, `currency`, and `exchange_rate`
        (None when nothing was converted). Anything else is refused, an id left unexpanded included.
        """
        path = f"payment_intents/{stripe_id(payment_intent_id, PAYMENT_INTENT_PREFIXES)}"
        intent = self._object(path, "payment_intent", {"expand[]": "latest_charge.balance_transaction"})
        charge = intent.get("latest_charge")
        if charge is None:
            return intent
        if not _is_object(charge, "charge"):
            raise PlatformRefused(f"Stripe GET {path}: the latest charge is not the expanded charge asked for")
        balance = charge.get("balance_transaction")
        if balance is not None and not _is_object(balance, "balance_transaction"):
            raise PlatformRefused(f"Stripe GET {path}: the balance transaction is not the expanded one asked for")
        return intent

    def events(self, types: Sequence[str], created_after: int) -> list[dict]:
        """Every event of one of `types` (at most 20) created after the epoch second `created_after`, all pages.

        Newest first, as Stripe lists them. Stripe keeps events for 30 days: an older `created_after`
        gives what it still has, without saying that the rest is gone.
        """
        wanted = list(dict.fromkeys(types))
        if not wanted or len(wanted) > MAX_EVENT_TYPES:
            raise ValueError(f"between 1 and {MAX_EVENT_TYPES} event types, as Stripe takes them")
        if not all(isinstance(name, str) and _EVENT_TYPE.fullmatch(name) for name in wanted):
            raise ValueError("an event type is dotted lower-case words, such as checkout.session.completed")
        if isinstance(created_after, bool) or not isinstance(created_after, int) or created_after < 0:
            raise ValueError("created_after is a Unix time in whole seconds")
        # requests repeats a key whose value is a list: types[]=a&types[]=b, as Stripe reads arrays.
        return self._all("events", {"types[]": wanted, "created[gt]": str(created_after)})

    def session_of_payment_intent(self, payment_intent_id: str) -> dict | None:
        """The Checkout Session that created a payment intent, or None when it came from no Checkout Session."""
        found = self._page(
            "checkout/sessions",
            {"payment_intent": stripe_id(payment_intent_id, PAYMENT_INTENT_PREFIXES), "limit": "1"},
        )[0]
        return found[0] if found else None

    def _object(self, path: str, kind: str, params: Mapping[str, str] | None = None) -> dict:
        payload, _ = self._rest.get(path, params)
        if not _is_object(payload, kind):
            raise PlatformRefused(f"Stripe GET {path}: the answer is not the {kind} the API describes")
        return payload

    def _all(self, path: str, params: Mapping[str, str | list[str]]) -> list[dict]:
        items: list[dict] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page_params = {**params, "limit": str(PAGE_LIMIT)}
            if cursor is not None:
                page_params["starting_after"] = cursor
            data, has_more = self._page(path, page_params)
            items.extend(data)
            if not has_more:
                return items
            last = data[-1].get("id") if data else None
            if not isinstance(last, str) or not last or last == cursor:
                raise PlatformRefused(f"Stripe GET {path}: a page says there is more but gives no cursor")
            cursor = last
        raise PlatformRefused(f"Stripe GET {path}: more than {MAX_PAGES} pages")

    def _page(self, path: str, params: Mapping[str, str | list[str]]) -> tuple[list[dict], bool]:
        payload, _ = self._rest.get(path, params)
        data = payload.get("data") if isinstance(payload, dict) else None
        if (
            not isinstance(payload, dict)
            or payload.get("object") != "list"
            or not isinstance(data, list)
            or not all(isinstance(item, dict) for item in data)
        ):
            raise PlatformRefused(f"Stripe GET {path}: the answer is not the list the API describes")
        return data, payload.get("has_more") is True


def _is_object(value: object, kind: str) -> bool:
    """Whether `value` is a Stripe object of `kind` with an id, as an expanded field or an answer is."""
    return isinstance(value, dict) and value.get("object") == kind and isinstance(value.get("id"), str)


def stripe_id(value: object, prefixes: tuple[str, ...]) -> str:
    """A Stripe id of one of the given kinds, checked before it goes into a path; ValueError otherwise."""
    if isinstance(value, str):
        for prefix in prefixes:
            if value.startswith(prefix) and ID_BODY.fullmatch(value[len(prefix) :]):
                return quote(value, safe="")
    # The value itself is left out: an id from a garbled event may be anything, a pasted key included.
    raise ValueError(f"not a Stripe id starting with {' or '.join(prefixes)}")
