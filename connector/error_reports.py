"""Error reports to Sentry (SENTRY_DSN), scrubbed of payloads, e-mails, tax numbers and secrets first."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, urlsplit

from flask import Flask

REDACTED = "[Filtered]"
# Anything@anything: customers' addresses, and the SMTP user's.
_EMAIL = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+")
# A Portuguese NIF is 9 digits; any 9-digit number goes, since an order id is no loss in an error report.
_NIF = re.compile(r"(?<![0-9])[0-9]{9}(?![0-9])")
# The platforms' key shapes (Stripe's sk_/rk_/whsec_, Shopify's shpat_, WooCommerce's ck_/cs_) and IX's
# api_key query parameter: they catch a store's own keys too, which no setting of the environment holds.
_KEY_SHAPES = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:live|test)_|whsec_|shp(?:at|ss|ca|pa)_|c[ks]_)[A-Za-z0-9]{8,}|(?<=api_key=)[^&\s'\"]+",
    re.IGNORECASE,
)
# Keys whose value is a secret wherever they appear in an event (headers, extra data, local variables).
_SECRET_NAME = re.compile(r"auth|secret|token|password|passwd|api.?key|signature|hmac|cookie|dsn", re.IGNORECASE)
# The settings (Flask config keys) that hold secrets, or URLs whose password is one.
_SECRET_SETTING = re.compile(r"SECRET|API_KEY|TOKEN|PASSWORD|CONSUMER_KEY|WEBHOOK_URL")
_URL_SETTINGS = ("SQLALCHEMY_DATABASE_URI", "REDIS_URL", "SMTP_URL")
# Sentry's own identifiers, which may hold nine digits in a row and must reach it as they are.
_STRUCTURE = frozenset({"event_id", "trace_id", "span_id", "parent_span_id", "timestamp", "start_timestamp",
                        "release", "dist", "sdk", "modules", "debug_meta", "lineno", "colno"})
_SHORTEST_SECRET = 6  # shorter values would blank out ordinary words


def init_app(app: Flask) -> None:
    """Report the web's and the worker's unhandled errors when SENTRY_DSN is set (the worker's work-horses
    inherit the SDK when they fork)."""
    dsn = app.config.get("SENTRY_DSN")
    if not dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.flask import FlaskIntegration
    from sentry_sdk.integrations.rq import RqIntegration

    sentry_sdk.init(
        dsn=dsn,
        integrations=[FlaskIntegration(), RqIntegration()],
        send_default_pii=False,
        # Webhook bodies are customers' orders; local variables hold them and API keys.
        max_request_body_size="never",
        include_local_variables=False,
        # Breadcrumbs (log lines) travel inside the event, so they are scrubbed with it.
        before_send=scrubber(secret_values(app.config)),
    )


def secret_values(config: Mapping[str, Any]) -> tuple[str, ...]:
    """Every secret the settings hold: API keys, webhook secrets, tokens, passwords (and URLs' passwords)."""
    found: set[str] = set()
    for name, value in config.items():
        if _SECRET_SETTING.search(name):
            found.update(_strings(value))
    for name in _URL_SETTINGS:
        password = urlsplit(str(config.get(name) or "")).password
        if password:
            found.add(password)
    return tuple(found)


def scrubber(secrets: Iterable[str]) -> Callable[[dict, dict], dict]:
    """A before_send that scrubs an event of request bodies, e-mails, NIF-like numbers and `secrets`."""
    forms = _secret_forms(secrets)

    def before_send(event: dict, hint: dict) -> dict:
        request = event.get("request")
        if isinstance(request, dict):
            for part in ("data", "cookies"):
                if part in request:
                    request[part] = REDACTED
        return scrub(event, forms)

    return before_send


def scrub(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with every string scrubbed, and secret-named keys' values replaced, at any depth."""
    if isinstance(value, str):
        return _scrub_text(value, secrets)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return REDACTED if _NIF.fullmatch(str(abs(value))) else value
    if isinstance(value, Mapping):
        return {key: item if key in _STRUCTURE
                else REDACTED if isinstance(key, str) and _SECRET_NAME.search(key) and item not in (None, "")
                else scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        # Sentry sends headers as [name, value] pairs in places.
        if len(value) == 2 and isinstance(value[0], str) and _SECRET_NAME.search(value[0]):
            return [value[0], REDACTED]
        return [scrub(item, secrets) for item in value]
    return value


def _scrub_text(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    text = _KEY_SHAPES.sub(REDACTED, text)
    text = _EMAIL.sub(REDACTED, text)
    return _NIF.sub(REDACTED, text)


def _secret_forms(secrets: Iterable[str]) -> tuple[str, ...]:
    forms = {form for secret in secrets if len(secret) >= _SHORTEST_SECRET
             for form in (secret, quote(secret, safe=""), quote_plus(secret))}
    # Longest first, so that a secret inside another is not half-replaced.
    return tuple(sorted(forms, key=len, reverse=True))


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value.strip()
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _strings(item)
