"""What every platform package shares: what a delivery and its changes are, headers, HMAC, load errors, fields."""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from marshmallow import EXCLUDE, Schema, fields, validate

MAX_AMOUNT = Decimal("1e11")  # far above any order; the database keeps totals as text of 32 characters
MAX_QUANTITY = 10_000_000


# --- what a delivery is, and what it means -----------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a webhook's headers (and, where the platform puts it there, its body) say about it."""

    store: str  # the store reference the delivery names ('' when it names none)
    event_key: str | None  # the platform's stable id of this event (None: the inbox hashes the body)
    topic: str
    acted_on: bool  # whether the topic can owe a document; others are stored and ignored


# `delivery()` answers PING for a platform's "is this URL alive" request: answered 200, stored nowhere.
PING = Delivery(store="", event_key=None, topic="ping", acted_on=False)


@dataclass(frozen=True)
class Change:
    """One thing an event means for invoicing; one event may mean several (a payment and a new refund)."""

    kind: Literal["sale", "refund", "cancellation", "lookup", "none"]
    order_id: str = ""
    refund_id: str | None = None  # for a refund
    reason: str = ""  # for "none": why the event owes nothing, in words a shop owner understands
    # A sale whose order the event does not carry whole (Stripe's sessions have no lines): the worker reads
    # it from the platform (`snapshot`) when it issues the document, and keeps what it read.
    fetched: bool = False
    order_name: str = ""  # what the seller calls the order, for a fetched sale's row until it is read
    # "lookup": the event names changes only the platform's API lists (a Stripe charge's refunds): the
    # platform's `look_up` reads them, and each comes into the inbox as an event of its own.


# --- headers and signatures --------------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value, stripped, '' when absent; found whatever the case of the name."""
    # werkzeug's Headers.get ignores case already; a plain dict (tests, replays) does not.
    value = headers.get(name)
    if value is None:
        wanted = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == wanted), None)
    return (value or "").strip()


def signed_with_any(body: bytes, received: str, secrets: Sequence[str]) -> bool:
    """Whether `received` is the base64 HMAC-SHA256 of the raw body under any of `secrets`.

    Several secrets so that a rotation loses nothing. Fails closed: no signature, or no usable secret,
    is never a valid signature; every secret is tried, so the time taken says nothing of which matched.
    """
    signature = received.strip().encode()
    if not signature:
        return False
    valid = False
    for secret in secrets:
        # An empty key is public knowledge: anyone could sign with it.
        if not secret:
            continue
        expected = base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest())
        # Bytes, not str: compare_digest refuses non-ASCII str, and the header is attacker-controlled.
        valid |= hmac.compare_digest(expected, signature)
    return valid


# --- load errors -------------------------------------------------------------------------------------


class LoadError(ValueError):
    """The payload is not an order (or refund) we can invoice from; `messages` are marshmallow's, by field path.

    Its text names fields, never their values, so it is safe to log and to show a shop owner.
    """

    def __init__(self, messages: dict, what: str = "order", platform: str = "") -> None:
        self.messages = messages
        self.what = what
        self.platform = platform
        super().__init__(messages)

    def __str__(self) -> str:
        problems = "; ".join(f"{path}: {text}" for path, text in flatten(self.messages, root=self.what))
        return f"{self.platform} {self.what} not loaded: {problems}".strip()


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def flatten(messages: Any, path: str = "", root: str = "order") -> list[tuple[str, str]]:
    """marshmallow's nested messages as (field path, message) pairs."""
    if isinstance(messages, Mapping):
        return [item for key, sub in messages.items() for item in flatten(sub, _join(path, key), root)]
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return [(path or root, " ".join(messages))]
    if isinstance(messages, list):
        return [item for m in messages for item in flatten(m, path, root)]
    return [(path or root, str(messages))]


# --- text and fields ---------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Lower-case, accents and outer spaces removed: 'Número de Contribuinte ' → 'numero de contribuinte'."""
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def money(**kwargs: Any) -> fields.Decimal:
    """A non-negative amount, as Decimal from the JSON string, never a float.

    Bounded, so that a garbled amount is a load error rather than an overflow deep in the arithmetic.
    """
    return fields.Decimal(validate=validate.Range(min=0, max=MAX_AMOUNT), allow_nan=False, **kwargs)


def signed_money(**kwargs: Any) -> fields.Decimal:
    """An amount that may be negative (refund totals, negative fees), bounded either way."""
    return fields.Decimal(validate=validate.Range(min=-MAX_AMOUNT, max=MAX_AMOUNT), allow_nan=False, **kwargs)


def identifier(**kwargs: Any) -> fields.Integer:
    """A platform's numeric id: a positive integer, never a float or a string of digits."""
    return fields.Integer(strict=True, validate=validate.Range(min=1), **kwargs)


def text() -> fields.String:
    """An optional string: platforms send null and '' interchangeably, both become ''."""
    return fields.String(allow_none=True, load_default="")


class LenientSchema(Schema):
    """A payload schema that ignores what it does not name: platforms' payloads grow with each version."""

    class Meta:
        unknown = EXCLUDE


class PlatformUnavailable(Exception):
    """The platform's API did not answer usefully this time (timeout, connection error, 5xx, 429): try again
    later."""


class PlatformRefused(Exception):
    """The platform's API refused the request for good (4xx, or an answer that is not what its API describes)."""
