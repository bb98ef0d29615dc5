"""Every setting the connector reads, parsed from the environment once, with one error listing every problem."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

PLATFORM_SECRETS = {
    "shopify": "SHOPIFY_WEBHOOK_SECRET",
    "woocommerce": "WOOCOMMERCE_WEBHOOK_SECRET",
    "stripe": "STRIPE_WEBHOOK_SECRET",
}
# Platforms whose intake exists; a secret for another one is refused rather than ignored, so nobody
# believes a store is connected when it is not.
SUPPORTED_PLATFORMS = ("shopify", "woocommerce", "stripe")

# Rate (percent) → the IX account's tax name. IX's default PT account names; each account can differ.
DEFAULT_TAX_NAMES = "23=IVA23,13=IVA13,6=IVA6,22=IVA22,12=IVA12,5=IVA5,16=IVA16,9=IVA9,4=IVA4,0=IVA0"


class ConfigError(Exception):
    """The environment cannot run the connector; the message lists every problem, one per line."""


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Parse the environment into Flask config keys, or raise ConfigError naming every problem."""
    problems: list[str] = []
    env = {key: value.strip() for key, value in environ.items()}

    def required(name: str) -> str:
        if not env.get(name):
            problems.append(f"{name} is not set")
        return env.get(name, "")

    def number(name: str, default: float, minimum: float = 0) -> float:
        raw = env.get(name) or str(default)
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if value < minimum:
            problems.append(f"{name} must be at least {minimum}, got {raw!r}")
        return value

    database_url = _database_url(required("DATABASE_URL"), problems)
    redis_url = required("REDIS_URL")
    if redis_url and urlsplit(redis_url).scheme not in ("redis", "rediss", "unix"):
        problems.append("REDIS_URL must start with redis://, rediss:// or unix://")

    secrets = {platform: split(env.get(var, "")) for platform, var in PLATFORM_SECRETS.items()}
    for platform, values in secrets.items():
        if values and platform not in SUPPORTED_PLATFORMS:
            problems.append(f"{PLATFORM_SECRETS[platform]} is set, but {platform} is not supported yet")
    enabled = [p for p in SUPPORTED_PLATFORMS if secrets[p]]
    secret_keys = tuple(split(env.get("SECRET_KEY", "")))
    for key in secret_keys:
        if len(key) < 16:
            problems.append("SECRET_KEY must be at least 16 characters (each, when several are given)")
            break
    # With SECRET_KEY set, stores may hold their own secrets and IX accounts (`flask stores set`): whether
    # every store can then be served is checked against the database when the web and the worker start.
    stores_may_have_their_own = bool(secret_keys)
    if not enabled and not stores_may_have_their_own:
        names = " or ".join(PLATFORM_SECRETS[p] for p in SUPPORTED_PLATFORMS)
        problems.append(f"no shop platform is enabled: set {names} (the webhook signing secret)")

    ix_required = bool(enabled) or not stores_may_have_their_own
    base_url, api_key = invoicexpress_account(
        {name: env.get(name.upper(), "") for name in INVOICEXPRESS_SETTINGS}, problems, required=ix_required)

    woocommerce_url = env.get("WOOCOMMERCE_URL", "").rstrip("/")
    if woocommerce_url and urlsplit(woocommerce_url).scheme not in ("http", "https"):
        problems.append("WOOCOMMERCE_URL must be the shop's http(s) address, e.g. https://shop.example")
    woocommerce_keys = [env.get(name, "") for name in ("WOOCOMMERCE_CONSUMER_KEY", "WOOCOMMERCE_CONSUMER_SECRET")]
    if woocommerce_url and not all(woocommerce_keys):
        problems.append("WOOCOMMERCE_URL is set: set WOOCOMMERCE_CONSUMER_KEY and WOOCOMMERCE_CONSUMER_SECRET too "
                        "(a REST API key with Read access)")
    stripe_api_base = env.get("STRIPE_API_BASE_URL", "").rstrip("/") or "https://api.stripe.com"
    if urlsplit(stripe_api_base).scheme not in ("http", "https"):
        problems.append("STRIPE_API_BASE_URL must be an http(s) URL")
    if secrets["stripe"] and not env.get("STRIPE_API_KEY"):
        # A session's event carries no lines: without the API nothing could ever be invoiced.
        problems.append("STRIPE_WEBHOOK_SECRET is set: set STRIPE_API_KEY too (a restricted key with read access "
                        "to Checkout Sessions, Charges, PaymentIntents and Events)")
    shopify_api_base = env.get("SHOPIFY_API_BASE_URL", "").rstrip("/")
    if shopify_api_base and urlsplit(shopify_api_base).scheme not in ("http", "https"):
        problems.append("SHOPIFY_API_BASE_URL must be an http(s) URL")

    admin_password = env.get("ADMIN_PASSWORD") or None  # unset: the /admin pages are off
    if admin_password is not None and len(admin_password) < 12:
        problems.append("ADMIN_PASSWORD must be at least 12 characters")
    alerts = _alerts(env, problems, number)

    issuing = _issuing(env, problems)

    config = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "REDIS_URL": redis_url,
        "WEBHOOK_SECRETS": {p: secrets[p] for p in enabled},
        "INVOICEXPRESS_BASE_URL": base_url,
        "INVOICEXPRESS_API_KEY": api_key,
        "INVOICEXPRESS_CONNECT_TIMEOUT": number("INVOICEXPRESS_CONNECT_TIMEOUT", 5, 0.1),
        "INVOICEXPRESS_READ_TIMEOUT": number("INVOICEXPRESS_READ_TIMEOUT", 30, 0.1),
        # IX allows 780 a minute per account (older documents: 100); leave room for other integrations.
        "INVOICEXPRESS_REQUESTS_PER_MINUTE": number("INVOICEXPRESS_REQUESTS_PER_MINUTE", 600, 1),
        # Keys that encrypt stores' own secrets (the first encrypts, all decrypt); empty: stores have none.
        "SECRET_KEYS": secret_keys,
        # How documents are issued; every store can override each of these (`flask stores set`).
        "ISSUING": issuing,
        "MAX_CONTENT_LENGTH": int(number("MAX_WEBHOOK_BYTES", 2 * 1024 * 1024, 1024)),
        "DOCUMENT_LEASE_SECONDS": number("DOCUMENT_LEASE_SECONDS", 90, 1),
        "SWEEP_INTERVAL_SECONDS": number("SWEEP_INTERVAL_SECONDS", 60, 1),
        # The first retry of a document waits this long; each later one twice as long, up to an hour.
        "RETRY_BASE_SECONDS": number("RETRY_BASE_SECONDS", 10, 0.1),
        # Platforms' APIs, for refunds' lines and reconciliation (each optional).
        "WOOCOMMERCE_URL": woocommerce_url,
        "WOOCOMMERCE_CONSUMER_KEY": env.get("WOOCOMMERCE_CONSUMER_KEY", ""),
        "WOOCOMMERCE_CONSUMER_SECRET": env.get("WOOCOMMERCE_CONSUMER_SECRET", ""),
        "WOOCOMMERCE_READ_TIMEOUT": number("WOOCOMMERCE_READ_TIMEOUT", 20, 0.1),
        "STRIPE_API_KEY": env.get("STRIPE_API_KEY", ""),
        "STRIPE_API_BASE_URL": stripe_api_base,
        "STRIPE_READ_TIMEOUT": number("STRIPE_READ_TIMEOUT", 20, 0.1),
        "SHOPIFY_ACCESS_TOKEN": env.get("SHOPIFY_ACCESS_TOKEN", ""),
        "SHOPIFY_API_BASE_URL": shopify_api_base,
        "RECONCILE_INTERVAL_SECONDS": number("RECONCILE_INTERVAL_SECONDS", 600, 1),
        "LOG_LEVEL": _log_level(env, problems),
        "LOG_FORMAT": _log_format(env, problems),
        "METRICS_TOKEN": _metrics_token(env, problems),  # unset: /metrics answers 404
        "SENTRY_DSN": _sentry_dsn(env, problems),  # unset: no error reports leave the process
        "ADMIN_PASSWORD": admin_password,
        **alerts,
    }
    if problems:
        raise ConfigError("The connector cannot start:\n" + "\n".join(f"- {p}" for p in problems))
    return config


INVOICEXPRESS_SETTINGS = ("invoicexpress_account", "invoicexpress_base_url", "invoicexpress_api_key")


def invoicexpress_account(values: Mapping[str, str], problems: list[str], of_store: bool = False,
                          required: bool = True) -> tuple[str, str]:
    """An IX account's base URL and API key from its settings by their lower-cased names (the environment's,
    or one store's: `of_store`, whose problems name the settings as `stores set` does)."""
    api_key = (values.get("invoicexpress_api_key") or "").strip()
    account = (values.get("invoicexpress_account") or "").strip()
    base_url = (values.get("invoicexpress_base_url") or "").strip().rstrip("/")
    name = (lambda setting: setting) if of_store else str.upper
    if not required and not (api_key or account or base_url):
        return "", ""
    if not api_key:
        problems.append(f"{name('invoicexpress_api_key')} is not set")
    if account and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]*", account):
        problems.append(f"{name('invoicexpress_account')} must be the bare account name (ACCOUNT in "
                        f"ACCOUNT.app.invoicexpress.com), got {account!r}")
    if not base_url:
        if account:
            base_url = f"https://{account}.app.invoicexpress.com"
        else:
            problems.append(f"{name('invoicexpress_account')} is not set "
                            f"(or set {name('invoicexpress_base_url')})")
    elif urlsplit(base_url).scheme not in ("http", "https"):
        problems.append(f"{name('invoicexpress_base_url')} must be an http(s) URL")
    return base_url, api_key


def planning_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Only what planning reads (issuing settings, log level): enough for `preview`, which needs no
    database, Redis, secret or IX account. Raises ConfigError naming every problem in those."""
    problems: list[str] = []
    env = {key: value.strip() for key, value in environ.items()}
    config = {"ISSUING": _issuing(env, problems), "LOG_LEVEL": _log_level(env, problems),
              "LOG_FORMAT": _log_format(env, problems)}
    if problems:
        raise ConfigError("The connector cannot plan documents:\n" + "\n".join(f"- {p}" for p in problems))
    return config


def _issuing(env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    return {key: parse(env.get(var) or default, var, problems) for key, (var, default, parse) in ISSUING.items()}


def _log_level(env: Mapping[str, str], problems: list[str]) -> str:
    level = (env.get("LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append("LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    return level


def _log_format(env: Mapping[str, str], problems: list[str]) -> str:
    log_format = (env.get("LOG_FORMAT") or "text").lower()
    if log_format not in ("text", "json"):
        problems.append("LOG_FORMAT must be text or json")
    return log_format


def _metrics_token(env: Mapping[str, str], problems: list[str]) -> str | None:
    token = env.get("METRICS_TOKEN") or None
    if token is not None and (len(token) < 16 or not token.isprintable() or " " in token):
        # The value itself stays out of the message: it is a secret.
        problems.append("METRICS_TOKEN must be at least 16 characters, without spaces")
    return token


def _sentry_dsn(env: Mapping[str, str], problems: list[str]) -> str | None:
    dsn = env.get("SENTRY_DSN") or None
    if dsn is not None and (urlsplit(dsn).scheme not in ("http", "https") or not urlsplit(dsn).username):
        problems.append("SENTRY_DSN must be the DSN Sentry shows, https://KEY@HOST/PROJECT")
    return dsn


def _lower_list(raw: str, name: str, problems: list[str]) -> tuple[str, ...]:
    return tuple(key.lower() for key in split(raw))


def _exemption(raw: str, name: str, problems: list[str]) -> str | None:
    from connector.fiscal import EXEMPTION_REASONS

    code = raw.strip().upper()
    if code and code not in EXEMPTION_REASONS:
        problems.append(f"{name} must be an exemption reason code such as M10 (M01 to M99), got {raw!r}")
    return code or None


def _choice(*choices: str):
    def parse(raw: str, name: str, problems: list[str]) -> str:
        value = raw.strip().lower()
        if value not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return value

    return parse


def _text(raw: str, name: str, problems: list[str]) -> str | None:
    return raw.strip() or None


def _boolean(raw: str, name: str, problems: list[str]) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        problems.append(f"{name} must be true or false, got {raw!r}")
    return value in ("true", "1", "yes")


def _vat_rate(raw: str, name: str, problems: list[str]) -> Decimal | None:
    """A VAT percentage such as 23 or 13.5 ('' → None: the setting's fallback applies)."""
    if not raw.strip():
        return None
    try:
        rate = Decimal(raw.strip())
    except InvalidOperation:
        rate = Decimal("NaN")
    if not rate.is_finite() or not 0 <= rate < 100:
        problems.append(f"{name} must be a VAT percentage such as 23, got {raw!r}")
        return None
    return rate.normalize() if rate != rate.to_integral_value() else rate.quantize(Decimal(1))


def split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


def _alerts(env: Mapping[str, str], problems: list[str], number) -> dict[str, Any]:
    """Where alerts go (ALERT_EMAIL through SMTP_URL, ALERT_WEBHOOK_URL) and when a problem is one."""
    emails = tuple(split(env.get("ALERT_EMAIL", "")))
    if any("@" not in address for address in emails):
        problems.append("ALERT_EMAIL must be e-mail addresses, comma-separated")
    smtp_url = env.get("SMTP_URL") or None
    if smtp_url is not None:
        parts = urlsplit(smtp_url)
        try:
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = urlsplit("")
        # The URL itself stays out of the messages: it holds the mail account's password.
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            problems.append("SMTP_URL must be smtp://user:password@host:port (smtps:// for TLS)")
    if emails and smtp_url is None:
        problems.append("ALERT_EMAIL is set: set SMTP_URL too (smtp://user:password@host:port)")
    sender = env.get("ALERT_EMAIL_FROM") or (emails[0] if emails else None)
    webhook_url = env.get("ALERT_WEBHOOK_URL") or None
    if webhook_url is not None and urlsplit(webhook_url).scheme not in ("http", "https"):
        problems.append("ALERT_WEBHOOK_URL must be an http(s) URL")
    # The hour (Lisbon) from which each day's digest goes out; "off": no digest.
    digest_off = env.get("ALERT_DIGEST_HOUR", "").lower() == "off"
    digest_hour = 8 if digest_off else number("ALERT_DIGEST_HOUR", 8, 0)
    if digest_hour >= 24 or digest_hour != int(digest_hour):
        problems.append("ALERT_DIGEST_HOUR must be an hour of the day, 0 to 23 (Lisbon time), or off")
        digest_hour = 8
    return {
        "ALERT_EMAIL": emails,
        "ALERT_EMAIL_FROM": sender,
        "SMTP_URL": smtp_url,
        "ALERT_WEBHOOK_URL": webhook_url,
        "ALERT_OPEN_AFTER_MINUTES": number("ALERT_OPEN_AFTER_MINUTES", 60, 1),
        "ALERT_QUEUE_DEPTH": int(number("ALERT_QUEUE_DEPTH", 500, 1)),
        "ALERT_DIGEST_HOUR": None if digest_off else int(digest_hour),
    }


def _database_url(url: str, problems: list[str]) -> str:
    # Heroku still hands out postgres://, a scheme SQLAlchemy 1.4+ refuses; we use psycopg 3.
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    if url and not url.startswith(("postgresql+", "sqlite:")):
        problems.append("DATABASE_URL must be a postgres:// or sqlite:// URL")
    return url


def _tax_names(raw: str, setting: str, problems: list[str]) -> dict[Decimal, str]:
    names: dict[Decimal, str] = {}
    for pair in split(raw):
        rate, _, name = pair.partition("=")
        try:
            names[Decimal(rate.strip())] = name.strip()
        except InvalidOperation:
            problems.append(f"{setting}: {pair!r} is not RATE=NAME")
            continue
        if not name.strip():
            problems.append(f"{setting}: {pair!r} has no tax name")
    repeated = sorted({name for name in names.values() if list(names.values()).count(name) > 1})
    if repeated:
        problems.append(f"{setting}: {', '.join(repeated)} is given for more than one rate")
    return names


# Issuing settings: key → (environment variable, default, parser). The environment sets them for every
# store; a store's own value (stores.settings, by key) wins.
ISSUING = {
    "tax_names": ("INVOICEXPRESS_TAX_NAMES", DEFAULT_TAX_NAMES, _tax_names),
    "tax_exemption_reason": ("TAX_EXEMPTION_REASON", "", _exemption),
    "invalid_tax_id": ("INVALID_TAX_ID", "consumer", _choice("consumer", "hold")),
    "document_type": ("DOCUMENT_TYPE", "invoice_receipt", _choice("invoice_receipt", "invoice")),
    "sequence_id": ("INVOICEXPRESS_SEQUENCE_ID", "", _text),
    "issue_test_orders": ("ISSUE_TEST_ORDERS", "false", _boolean),
    # Empty: each platform's own usual keys (its DEFAULT_TAX_ID_KEYS).
    "tax_id_keys": ("TAX_ID_KEYS", "", _lower_list),
    "invoice_currency": ("INVOICE_CURRENCY", "presentment", _choice("presentment", "shop")),
    # The order statuses that mean "paid" on a WooCommerce store (with `date_paid` set).
    "paid_statuses": ("WOOCOMMERCE_PAID_STATUSES", "processing,completed", _lower_list),
    # Stripe: the VAT rate of a session without Stripe's taxes (its prices then include VAT).
    "default_vat_rate": ("DEFAULT_VAT_RATE", "23", _vat_rate),
    # Stripe: a payment outside Checkout gets a one-line invoice with this description (unset: none).
    "payment_intent_line": ("PAYMENT_INTENT_LINE", "", _text),
    "payment_intent_vat_rate": ("PAYMENT_INTENT_VAT_RATE", "", _vat_rate),  # unset: DEFAULT_VAT_RATE
    # Put before the store's order names and customer codes at IX, so that two stores sharing one IX
    # account never meet ("#1001" of each); given to each further store of an account automatically.
    "reference_prefix": ("REFERENCE_PREFIX", "", _text),
}
# An issuing setting may also be named by its environment variable, lower-cased (`invoicexpress_tax_names`).
ISSUING_ALIASES = {var.lower(): key for key, (var, _, _) in ISSUING.items() if var.lower() != key}

# A store's connections, by the environment variable's lower-cased name → the group it belongs to. A store
# that sets any setting of a group has that whole group of its own (what it leaves out takes the built-in
# default, never the environment's value), so that no store's credentials are ever sent to another's URL.
# A store's webhook secret (`<platform>_webhook_secret`) stands alone: its own, else the environment's.
CONNECTION_GROUPS = {
    "invoicexpress": INVOICEXPRESS_SETTINGS + ("invoicexpress_requests_per_minute",),
    "shopify": ("shopify_access_token", "shopify_api_base_url"),
    "woocommerce": ("woocommerce_url", "woocommerce_consumer_key", "woocommerce_consumer_secret"),
    "stripe": ("stripe_api_key", "stripe_api_base_url"),
}
WEBHOOK_SECRET_SETTINGS = {platform: var.lower() for platform, var in PLATFORM_SECRETS.items()}
# Kept encrypted (SECRET_KEY) and never printed.
SECRET_SETTINGS = frozenset({
    "invoicexpress_api_key", "shopify_access_token", "woocommerce_consumer_key", "woocommerce_consumer_secret",
    "stripe_api_key", *WEBHOOK_SECRET_SETTINGS.values(),
})
CONNECTION_SETTINGS = frozenset(name for group in CONNECTION_GROUPS.values() for name in group)


def store_setting(name: str) -> str | None:
    """The name a store keeps a setting under (`stores set NAME=…`), or None when it is no store setting."""
    name = name.strip().lower()
    name = ISSUING_ALIASES.get(name, name)
    if name in ISSUING or name in CONNECTION_SETTINGS or name in WEBHOOK_SECRET_SETTINGS.values():
        return name
    return None


def parse_store_settings(raw: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """A store's own issuing settings (key → text, as kept in stores.settings), parsed; and the problems.
    Its connection settings, kept alongside, are read by `connector.stores`."""
    problems: list[str] = []
    parsed = {}
    for key, value in raw.items():
        if key in ISSUING:
            parsed[key] = ISSUING[key][2](str(value), key, problems)
        elif key not in CONNECTION_SETTINGS:
            problems.append(f"{key} is not a store setting (one of: {', '.join(ISSUING)})")
    return parsed, problems


def store_problems(platform: str, values: Mapping[str, str]) -> list[str]:
    """What is wrong with one store's own settings (every one, its secrets among them, by stored name)."""
    problems: list[str] = []
    for name in values:
        if store_setting(name) != name:
            problems.append(f"{name} is not a store setting")
    problems.extend(parse_store_settings({k: v for k, v in values.items() if k in ISSUING})[1])
    for other, name in WEBHOOK_SECRET_SETTINGS.items():
        if other != platform and values.get(name):
            problems.append(f"{name} is for a {other} store, and this one is a {platform} store")
    own_groups = {group for group, names in CONNECTION_GROUPS.items() if any(values.get(n) for n in names)}
    for group in own_groups - {"invoicexpress", platform}:
        problems.append(f"{', '.join(n for n in CONNECTION_GROUPS[group] if values.get(n))} is for a {group} "
                        f"store, and this one is a {platform} store")
    if platform == "stripe" and values.get("stripe_webhook_secret") and not values.get("stripe_api_key"):
        # Its sessions' lines are read with its own key: another Stripe account's would find none of them.
        problems.append("stripe_webhook_secret is set: set stripe_api_key too (the same Stripe account's "
                        "restricted key)")
    if "invoicexpress" in own_groups:
        invoicexpress_account(values, problems, of_store=True)
        _at_least_one(values.get("invoicexpress_requests_per_minute"), "invoicexpress_requests_per_minute",
                      problems)
    required = {"woocommerce": ("woocommerce_url", "woocommerce_consumer_key", "woocommerce_consumer_secret"),
                "stripe": ("stripe_api_key",), "shopify": ("shopify_access_token",)}
    if platform in own_groups:
        missing = [name for name in required.get(platform, ()) if not values.get(name)]
        if missing:
            problems.append(f"{' and '.join(missing)} must be set too: a store's {platform} API settings are its "
                            "own, all of them, or the environment's")
        for name in CONNECTION_GROUPS[platform]:
            url = values.get(name) if name.endswith("_url") else None
            if url and urlsplit(url).scheme not in ("http", "https"):
                problems.append(f"{name} must be an http(s) URL")
    return problems


def _at_least_one(raw: str | None, name: str, problems: list[str]) -> None:
    if not raw:
        return
    try:
        if float(raw) >= 1:
            return
    except ValueError:
        pass
    problems.append(f"{name} must be a number of at least 1, got {raw!r}")
