"""The `flask stores` commands: each store's own settings and secrets, seen, changed, checked and re-keyed."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import click
import sqlalchemy as sa
from cryptography.fernet import InvalidToken
from flask import current_app

from config.settings import (
    CONNECTION_GROUPS,
    CONNECTION_SETTINGS,
    ISSUING,
    SECRET_SETTINGS,
    SUPPORTED_PLATFORMS,
    WEBHOOK_SECRET_SETTINGS,
    store_problems,
    store_setting,
)
from connector import stores
from connector.extensions import db
from connector.invoicexpress.client import InvoiceXpressError
from connector.models import Document, Store, Watermark, WebhookEvent
from connector.platforms.common import PlatformRefused, PlatformUnavailable
from connector.reconcile import polling_client
from connector.stores import STORE_NAME, StoreConfig, UnreadableSecrets

SETTING_NAMES = sorted(set(ISSUING) | CONNECTION_SETTINGS | set(WEBHOOK_SECRET_SETTINGS.values()))
TITLES = {"shopify": "Shopify", "woocommerce": "WooCommerce", "stripe": "Stripe"}
_STATUS = re.compile(r"HTTP (\d{3})")


@click.group("stores")
def stores_command() -> None:
    """See and change each store's own settings and secrets (over the environment's), and check them."""


# --- set, unset -------------------------------------------------------------------------------------------


@stores_command.command("set")
@click.argument("name")
@click.argument("pairs", nargs=-1, required=True, metavar="KEY=VALUE...")
@click.option("--platform", type=click.Choice(SUPPORTED_PLATFORMS),
              help="The store's platform (needed to create a store; a *.myshopify.com name is Shopify's).")
def stores_set(name: str, pairs: tuple[str, ...], platform: str | None) -> None:
    """Give a store settings of its own, e.g. `stores set shop.myshopify.com document_type=invoice`."""
    name = _store_name(name)
    given: dict[str, str] = {}
    problems = []
    for pair in pairs:
        raw_key, equals, value = pair.partition("=")
        key = store_setting(raw_key)
        if not equals:
            problems.append(f"{pair} is not KEY=VALUE")
        elif key is None:
            problems.append(_not_a_setting(raw_key))
        elif not value.strip():
            problems.append(f"{raw_key}= has no value: to go back to the environment's value, "
                            f"`flask --app wsgi stores unset {name} {raw_key}`")
        else:
            given[key] = value.strip()
    if problems:
        raise click.ClickException("; ".join(problems))

    store = _find(name, platform)
    if store is None:
        platform = platform or _platform_of_name(name)
        if platform is None:
            raise click.ClickException(f"there is no store {name} yet: say which platform it is on to create it "
                                       f"(--platform {'|'.join(SUPPORTED_PLATFORMS)})")
    else:
        platform = store.platform
    secrets = _secrets(store)
    settings = dict(store.settings or {}) if store is not None else {}
    for key, value in given.items():
        (secrets if key in SECRET_SETTINGS else settings)[key] = value
    _write(store, platform, name, settings, secrets)


@stores_command.command("unset")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True, metavar="KEY...")
@click.option("--platform", type=click.Choice(SUPPORTED_PLATFORMS), help="The store's platform.")
def stores_unset(name: str, keys: tuple[str, ...], platform: str | None) -> None:
    """Go back to the environment's value for these settings."""
    name = _store_name(name)
    unknown = [_not_a_setting(key) for key in keys if store_setting(key) is None]
    if unknown:
        raise click.ClickException("; ".join(unknown))
    # Never created here: a mistyped name would otherwise become a store of its own.
    store = _existing(name, platform)
    names = {store_setting(key) for key in keys}
    settings = {k: v for k, v in (store.settings or {}).items() if k not in names}
    secrets = {k: v for k, v in _secrets(store).items() if k not in names}
    _write(store, store.platform, name, settings, secrets)


def _write(store: Store | None, platform: str, name: str, settings: dict[str, str],
           secrets: dict[str, str]) -> None:
    """Validate the store's whole own values, then keep them (a new store is created), or change nothing."""
    problems = store_problems(platform, {**settings, **secrets})
    if problems:
        raise click.ClickException(f"nothing changed, store {name} ({platform}): " + "; ".join(problems))
    try:
        token = stores.encrypt(secrets)
    except UnreadableSecrets as error:
        raise click.ClickException(str(error)) from None
    if store is None:
        store = Store(platform=platform, domain=name, settings={})
        db.session.add(store)
    store.settings = settings
    store.secrets = token
    db.session.flush()
    # A store that now issues into an account another store already uses gets references of its own there.
    stores.give_reference_prefix(store)
    db.session.commit()
    _echo(_shown_store(store, full=True))


# --- list, show -------------------------------------------------------------------------------------------


@stores_command.command("list")
def stores_list() -> None:
    """One JSON line per store: its own settings, its secrets' fingerprints, where its connections come from."""
    for store in db.session.scalars(sa.select(Store).order_by(Store.id)):
        click.echo(json.dumps(_shown_store(store), ensure_ascii=False))


@stores_command.command("show")
@click.argument("name")
@click.option("--platform", type=click.Choice(SUPPORTED_PLATFORMS), help="The store's platform.")
def stores_show(name: str, platform: str | None) -> None:
    """One store as JSON: its own values, the issuing settings it uses (own or the environment's), its webhook."""
    _echo(_shown_store(_existing(_store_name(name), platform), full=True))


def _shown_store(store: Store, full: bool = False) -> dict[str, Any]:
    """What `list` (and, `full`, `show`) print of a store. Never a secret: only their fingerprints."""
    shown: dict[str, Any] = {"platform": store.platform, "store": store.domain,
                             "settings": dict(store.settings or {})}
    try:
        secrets = stores.own_secrets(store)
        config = stores.resolve(store)
    except UnreadableSecrets as error:
        return {**shown, "secrets": None, "problem": str(error)}
    shown["secrets"] = {name: stores.fingerprint(value) for name, value in sorted(secrets.items())}
    values = {**shown["settings"], **secrets}
    shown["webhook_secret"] = _source(config.own_webhook_secrets, bool(config.webhook_secrets))
    own_ix = any(values.get(name) for name in CONNECTION_GROUPS["invoicexpress"])
    shown["invoicexpress"] = _source(own_ix, config.invoicexpress is not None)
    shown["invoicexpress_base_url"] = config.invoicexpress.base_url if config.invoicexpress else None
    shown["api"] = _source(config.own_api, polling_client(store, config) is not None)
    if full:
        own = dict(store.settings or {})
        shown["issuing"] = {
            key: {"value": _text(getattr(config.settings, key)), "from": "own" if key in own else "environment"}
            for key in ISSUING
        }
        shown["reference_prefix"] = config.settings.reference_prefix or ""
        shown["webhook_url"] = f"/webhooks/{store.platform}/{store.domain}"
    return shown


def _source(own: bool, environment: bool) -> str:
    return "own" if own else "environment" if environment else "none"


def _text(value: Any) -> str:
    """An issuing setting as `stores set` takes it."""
    if isinstance(value, Mapping):
        return ",".join(f"{_number(rate)}={name}" for rate, name in value.items())
    if isinstance(value, tuple | list):
        return ",".join(str(item) for item in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return _number(value)
    return "" if value is None else str(value)


def _number(value: Any) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return str(number.quantize(Decimal(1))) if number == number.to_integral_value() else str(number.normalize())


def _echo(value: dict[str, Any]) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


# --- remove, rotate-key -----------------------------------------------------------------------------------


@stores_command.command("remove")
@click.argument("name")
@click.option("--platform", type=click.Choice(SUPPORTED_PLATFORMS), help="The store's platform.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def stores_remove(name: str, platform: str | None, yes: bool) -> None:
    """Delete a store that has no events and no documents (a mistyped one, say)."""
    store = _existing(_store_name(name), platform)
    events = db.session.scalar(sa.select(sa.func.count()).where(WebhookEvent.store_id == store.id))
    documents = db.session.scalar(sa.select(sa.func.count()).where(Document.store_id == store.id))
    if events or documents:
        raise click.ClickException(
            f"store {store.domain} ({store.platform}) has {events} events and {documents} documents, and stays: "
            "its records are what keeps an order from being invoiced twice. To stop it receiving orders, "
            "remove its webhook in the shop (or its webhook secret: `flask --app wsgi stores unset "
            f"{store.domain} {WEBHOOK_SECRET_SETTINGS.get(store.platform, 'KEY')}`)")
    if not yes:
        click.confirm(f"Remove store {store.domain} ({store.platform}) and its own settings?", abort=True)
    # Reconciliation's progress for the store is no record of anything issued: it goes with the store.
    db.session.execute(sa.delete(Watermark).where(Watermark.store_id == store.id))
    db.session.delete(store)
    db.session.commit()
    click.echo(f"removed store {store.domain} ({store.platform})")


@stores_command.command("rotate-key")
def stores_rotate_key() -> None:
    """Re-encrypt every store's secrets with the first SECRET_KEY (after putting a new one before the old)."""
    ring = stores.app_keyring()
    if ring is None:
        raise click.ClickException("SECRET_KEY is not set: give the new key first and the old one after it, "
                                   "comma-separated, and run this again")
    rows = list(db.session.scalars(sa.select(Store).where(Store.secrets.is_not(None)).order_by(Store.id)))
    rotated, unreadable = {}, []
    for store in rows:
        try:
            rotated[store.id] = ring.rotate(store.secrets.encode()).decode()
        except InvalidToken:
            unreadable.append(f"{store.domain} ({store.platform})")
    if unreadable:
        raise click.ClickException(
            f"nothing changed: no key of SECRET_KEY reads the secrets of store {', '.join(unreadable)}; put the "
            "key they were encrypted with back into SECRET_KEY (after the new one) and run this again")
    for store in rows:
        store.secrets = rotated[store.id]
    db.session.commit()
    click.echo(f"re-encrypted the secrets of {len(rows)} stores with the first SECRET_KEY; the other keys "
               "can now be taken out of SECRET_KEY")


# --- check ------------------------------------------------------------------------------------------------


@stores_command.command("check")
@click.argument("name")
@click.option("--platform", type=click.Choice(SUPPORTED_PLATFORMS), help="The store's platform.")
def stores_check(name: str, platform: str | None) -> None:
    """Reach the store's InvoiceXpress account and its platform's API with its settings; exit 1 on a problem."""
    store = _existing(_store_name(name), platform)
    try:
        config = stores.resolve(store)
    except UnreadableSecrets as error:
        raise click.ClickException(str(error)) from None
    results = [*_check_invoicexpress(store, config), _check_platform(store, config)]
    for _, line in results:
        click.echo(line)
    if not all(ok for ok, _ in results):
        raise SystemExit(1)


def _check_invoicexpress(store: Store, config: StoreConfig) -> list[tuple[bool, str]]:
    own = any(name in _own_names(store) for name in CONNECTION_GROUPS["invoicexpress"])
    key_name = _setting_name("invoicexpress_api_key", own)
    if config.invoicexpress is None:
        return [(False, "InvoiceXpress: no account: set invoicexpress_account and invoicexpress_api_key for the "
                        "store (`stores set`), or INVOICEXPRESS_ACCOUNT and INVOICEXPRESS_API_KEY")]
    where = config.invoicexpress.base_url
    client = current_app.extensions["invoicexpress"](store)
    try:
        taxes = client.list_taxes()
    except InvoiceXpressError as error:
        if error.status in (401, 403):
            said = f"the account at {where} refused the API key ({error.status}): check {key_name}"
        elif error.status == 404:
            said = f"no account answers at {where} (404): check {_setting_name('invoicexpress_account', own)}"
        else:
            said = f"the account at {where} was not reached: {error}"
        return [(False, f"InvoiceXpress: {said}"), (False, "InvoiceXpress series: not checked (no account)")]
    return [_check_taxes(taxes, config), _check_series(client, config)]


def _check_taxes(taxes: list[dict], config: StoreConfig) -> tuple[bool, str]:
    rates = {}
    for tax in taxes:
        try:
            rates[str(tax.get("name"))] = Decimal(str(tax.get("value")))
        except InvalidOperation:
            rates[str(tax.get("name"))] = None
    said, ok = [], True
    for rate, name in config.settings.tax_names.items():
        if name not in rates:
            ok = False
            said.append(f"{name} (for {_number(rate)} %) is not a tax of the account: add it in InvoiceXpress "
                        "(Settings → Taxes) or change tax_names")
        elif rates[name] != rate:
            ok = False
            shown = "no rate" if rates[name] is None else f"{_number(rates[name])} %"
            said.append(f"{name} is at {shown} in the account, and tax_names gives it for {_number(rate)} %")
        else:
            said.append(f"{name} at {_number(rate)} % ok")
    return ok, f"InvoiceXpress: account reached, {len(taxes)} taxes, " + ", ".join(said)


def _check_series(client, config: StoreConfig) -> tuple[bool, str]:
    try:
        sequences = client.list_sequences()
    except InvoiceXpressError as error:
        return False, f"InvoiceXpress series: could not be read: {error}"
    series = ", ".join(f"{s.get('serie')} (id {s.get('id')})" for s in sequences) or "none"
    wanted = config.settings.sequence_id
    if not wanted:
        default = next((s.get("serie") for s in sequences if str(s.get("default_sequence")) == "1"), None)
        return True, f"InvoiceXpress series: no sequence_id set, the account's default series ({default}) is used"
    for sequence in sequences:
        # A document's sequence_id may be the series' own id or one of its per-type ids.
        ids = {str(sequence.get("id"))} | {str(v) for k, v in sequence.items() if k.endswith("_sequence_id")}
        if str(wanted).strip() in ids:
            return True, f"InvoiceXpress series: sequence_id {wanted} is series {sequence.get('serie')}, ok"
    return False, (f"InvoiceXpress series: sequence_id {wanted} is not a series of the account (its series: "
                   f"{series}); change sequence_id")


def _check_platform(store: Store, config: StoreConfig) -> tuple[bool, str]:
    title = TITLES.get(store.platform, store.platform)
    own = config.own_api
    client = polling_client(store, config)
    names = {"woocommerce": "woocommerce_consumer_key and woocommerce_consumer_secret",
             "stripe": "stripe_api_key", "shopify": "shopify_access_token"}.get(store.platform, "its API key")
    shown_names = names if own else names.upper().replace(" AND ", " and ")
    if client is None:
        if store.platform == "stripe":
            return False, ("Stripe: no API key: a session's lines are read from Stripe, so nothing can be "
                           "invoiced; set stripe_api_key (a restricted key with read access)")
        if store.platform == "woocommerce":
            return True, ("WooCommerce: no REST API key, not checked: sales are invoiced from webhooks, but "
                          "refunds' lines and missed orders need woocommerce_url, woocommerce_consumer_key and "
                          "woocommerce_consumer_secret")
        return True, (f"{title}: no API token, not checked: webhooks are enough to invoice; a token "
                      "(shopify_access_token) lets reconciliation find missed orders")
    since = datetime.now(UTC) - timedelta(days=1)
    try:
        if store.platform == "stripe":
            from connector.platforms.stripe.poll import POLLED_TYPES

            found = client.events(POLLED_TYPES, int(since.timestamp()))
            read = f"{len(found)} events of the last day"
        elif store.platform == "woocommerce":
            next(iter(client.orders_modified_after(since)), None)  # the first page only
            read = "orders readable"
        else:
            next(iter(client.orders_updated_since(since)), None)
            read = "orders readable"
    except PlatformRefused as error:
        status = _STATUS.search(str(error))
        if status and status.group(1) in ("401", "403"):
            what = "the key" if store.platform != "shopify" else "the token"
            return False, (f"{title}: API refused {what} ({status.group(1)}): check {shown_names} "
                           f"({'the store' if own else 'the environment'}'s)")
        return False, f"{title}: API refused the request: {error}"
    except PlatformUnavailable as error:
        return False, f"{title}: API not reached: {error}"
    return True, f"{title}: API reached with {'the store' if own else 'the environment'}'s credentials, {read}"


# --- names ------------------------------------------------------------------------------------------------


def _store_name(name: str) -> str:
    name = name.strip().lower()
    if not STORE_NAME.fullmatch(name):
        raise click.ClickException(f"{name!r} is not a store name: letters, digits, dots, dashes and underscores, "
                                   "starting with a letter or a digit, and may end in :PORT (a WooCommerce site "
                                   "on another port)")
    return name


def _platform_of_name(name: str) -> str | None:
    return "shopify" if name.endswith(".myshopify.com") else None


def _find(name: str, platform: str | None) -> Store | None:
    """The store of that name (on `platform`, or on the one platform it exists on)."""
    if platform:
        return stores.find_store(platform, name)
    found = list(db.session.scalars(sa.select(Store).where(Store.domain == name).order_by(Store.id)))
    if len(found) > 1:
        raise click.ClickException(f"there are stores {name} on {' and '.join(s.platform for s in found)}: say "
                                   "which with --platform")
    return found[0] if found else None


def _existing(name: str, platform: str | None) -> Store:
    store = _find(name, platform)
    if store is None:
        on = platform or _platform_of_name(name)
        raise click.ClickException(f"no {on + ' ' if on else ''}store {name} (`flask --app wsgi stores list` "
                                   "shows them)")
    return store


def _secrets(store: Store | None) -> dict[str, str]:
    if store is None:
        return {}
    try:
        return stores.own_secrets(store)
    except UnreadableSecrets as error:
        raise click.ClickException(str(error)) from None


def _own_names(store: Store) -> set[str]:
    return set(store.settings or {}) | set(_secrets(store))


def _setting_name(name: str, own: bool) -> str:
    return f"the store's {name}" if own else name.upper()


def _not_a_setting(key: str) -> str:
    return f"{key} is not a store setting (one of: {', '.join(SETTING_NAMES)})"
