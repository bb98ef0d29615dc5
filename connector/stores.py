"""Stores: each shop's own settings and secrets over the environment's, resolved into what its webhooks, its
documents and its polls need; its secrets encrypted at rest with SECRET_KEY."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
from collections import ChainMap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app
from sqlalchemy.exc import SQLAlchemyError

from config.settings import (
    CONNECTION_GROUPS,
    WEBHOOK_SECRET_SETTINGS,
    invoicexpress_account,
    parse_store_settings,
    split,
)
from connector.extensions import db
from connector.invoicexpress.ratelimit import account_key
from connector.models import Store
from connector.plans import Settings

logger = logging.getLogger(__name__)

# The store of a delivery that names none (Stripe's at /webhooks/stripe): the environment's settings are its own.
DEFAULT_STORE = "default"
# A store's name, as `stores` commands, webhook URLs and the admin pages write it.
# A WooCommerce site on another port is named with it, as its webhooks' source header gives it ("shop:8443").
STORE_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}(:[0-9]{1,5})?")
# Fernet wants 32 random bytes; SECRET_KEY is any long text, stretched to a key per value.
KEY_CONTEXT = b"connector: stores' secrets"


class UnreadableSecrets(Exception):
    """A store's secrets cannot be decrypted with SECRET_KEY (unset, or none of its keys is the one used)."""


# --- Secrets at rest ----------------------------------------------------------------------------------------


def keyring(secret_keys: Sequence[str]) -> MultiFernet | None:
    """The keys SECRET_KEY's values make: the first encrypts, every one decrypts (None: no SECRET_KEY)."""
    if not secret_keys:
        return None
    return MultiFernet([Fernet(_fernet_key(secret)) for secret in secret_keys])


def _fernet_key(secret: str) -> bytes:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=KEY_CONTEXT).derive(secret.encode())
    return base64.urlsafe_b64encode(derived)


def app_keyring() -> MultiFernet | None:
    """The current app's keyring, made once."""
    extensions = current_app.extensions
    if "store_keyring" not in extensions:
        extensions["store_keyring"] = keyring(current_app.config.get("SECRET_KEYS") or ())
    return extensions["store_keyring"]


def encrypt(values: Mapping[str, str], ring: MultiFernet | None = None) -> str | None:
    """One token holding a store's secrets (None when it has none)."""
    if not values:
        return None
    ring = ring or app_keyring()
    if ring is None:
        raise UnreadableSecrets("SECRET_KEY is not set: a store's own secrets are kept encrypted with it; set it "
                                "(a long random text) and run the command again")
    return ring.encrypt(json.dumps(dict(values), sort_keys=True).encode()).decode()


def own_secrets(store: Store, ring: MultiFernet | None = None) -> dict[str, str]:
    """The store's own secrets (name → value), decrypted; raises UnreadableSecrets."""
    if not store.secrets:
        return {}
    ring = ring or app_keyring()
    if ring is None:
        raise UnreadableSecrets(f"store {store.domain} ({store.platform}) has secrets of its own, and SECRET_KEY "
                                "is not set")
    try:
        return json.loads(ring.decrypt(store.secrets.encode()))
    except (InvalidToken, ValueError):
        raise UnreadableSecrets(f"the secrets of store {store.domain} ({store.platform}) cannot be read with "
                                "SECRET_KEY: it was changed without keeping the old key (give both, new first, "
                                "comma-separated, then run `flask --app wsgi stores rotate-key`)") from None


def own_values(store: Store) -> dict[str, str]:
    """Every setting the store has of its own, its secrets among them (raises UnreadableSecrets)."""
    return {**(store.settings or {}), **own_secrets(store)}


def fingerprint(secret: str) -> str:
    """What `stores list` shows of a secret: enough to tell two apart, nothing to use."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


def startup_problems() -> list[str]:
    """What keeps the stores from being served, one problem each: secrets SECRET_KEY cannot read, no store that
    can receive a webhook, a store with no IX account. The web and the worker refuse to start on any.

    A database that is away or not migrated yet has no stores to read: the web and the worker then say so
    by their own checks (503, health) rather than refusing to start."""
    try:
        stores = list(db.session.scalars(sa.select(Store).order_by(Store.id)))
    except SQLAlchemyError:
        db.session.rollback()
        stores = []
    problems = []
    receiving = bool(current_app.config.get("WEBHOOK_SECRETS"))
    for store in stores:
        try:
            config = resolve(store)
        except UnreadableSecrets as error:
            problems.append(str(error))
            receiving = True  # it has secrets of its own: what is wrong is the key, said just above
            continue
        receiving |= config.own_webhook_secrets
        if config.own_webhook_secrets and config.invoicexpress is None:
            problems.append(f"store {store.domain} ({store.platform}) has no InvoiceXpress account: give it one "
                            f"(`flask --app wsgi stores set {store.domain} invoicexpress_account=… "
                            "invoicexpress_api_key=…`) or set INVOICEXPRESS_ACCOUNT and INVOICEXPRESS_API_KEY")
    if not receiving:
        problems.append("no shop platform is enabled: set SHOPIFY_WEBHOOK_SECRET, WOOCOMMERCE_WEBHOOK_SECRET or "
                        "STRIPE_WEBHOOK_SECRET, or give a store its own (`flask --app wsgi stores set`)")
    return problems


# --- What a store is configured with ------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceXpressAccount:
    """One IX account, as a store reaches it."""

    base_url: str
    api_key: str = field(repr=False)
    requests_per_minute: int = 600

    @property
    def key(self) -> str:
        """The account's name in Redis (rate limit, taxes cache): its URL's hash."""
        return account_key(self.base_url)


@dataclass(frozen=True)
class StoreConfig:
    """Everything one store is served with: its own settings, the environment's where it has none."""

    name: str
    platform: str
    settings: Settings
    webhook_secrets: tuple[str, ...] = field(repr=False)
    own_webhook_secrets: bool
    invoicexpress: InvoiceXpressAccount | None
    # The app's settings with the store's platform API credentials over them (its own, or the environment's
    # where they are the store's), for the platform's `api_client`.
    api: Mapping[str, Any] = field(repr=False)
    own_api: bool = False  # the store's own credentials, not the environment's


def settings_for(store: Store | None) -> Settings:
    """The environment's issuing settings with the store's own over them."""
    values = dict(current_app.config["ISSUING"])
    if store is not None and store.settings:
        own, problems = parse_store_settings(store.settings)
        if problems:  # `flask stores set` refuses bad values; this guards values edited by hand
            logger.warning("store %s has unreadable settings, using the defaults for them", store.id)
        values.update(own)
    return Settings(**values)


def environment_account(config: Mapping[str, Any]) -> InvoiceXpressAccount | None:
    """The environment's IX account (the default store's), or None when it names none."""
    if not config.get("INVOICEXPRESS_API_KEY"):
        return None
    return InvoiceXpressAccount(config["INVOICEXPRESS_BASE_URL"], config["INVOICEXPRESS_API_KEY"],
                                int(config["INVOICEXPRESS_REQUESTS_PER_MINUTE"]))


def resolve(store: Store | None, platform: str | None = None) -> StoreConfig:
    """The store's configuration (None: the environment's default store of `platform`); raises
    UnreadableSecrets."""
    config = current_app.config
    values = own_values(store) if store is not None else {}
    platform = store.platform if store is not None else platform or ""
    own_secret = _own_webhook_secrets(values, platform)
    api, own_api = _api(platform, values, bool(own_secret), config)
    return StoreConfig(
        name=store.domain if store is not None else DEFAULT_STORE, platform=platform,
        settings=settings_for(store), webhook_secrets=own_secret or _environment_secrets(platform),
        own_webhook_secrets=bool(own_secret), invoicexpress=_invoicexpress(values, config),
        api=api, own_api=own_api,
    )


def webhook_secrets(store: Store | None, platform: str) -> tuple[str, ...]:
    """The secrets a webhook of the store must be signed with: its own, else the environment's (raises
    UnreadableSecrets). The webhook's own lookup, kept to what it needs."""
    own = _own_webhook_secrets(own_secrets(store), platform) if store is not None else ()
    return own or _environment_secrets(platform)


def _own_webhook_secrets(values: Mapping[str, str], platform: str) -> tuple[str, ...]:
    return tuple(split(values.get(WEBHOOK_SECRET_SETTINGS.get(platform, ""), "")))


def _environment_secrets(platform: str) -> tuple[str, ...]:
    return tuple(current_app.config.get("WEBHOOK_SECRETS", {}).get(platform) or ())


def _invoicexpress(values: Mapping[str, str], config: Mapping[str, Any]) -> InvoiceXpressAccount | None:
    if not any(values.get(name) for name in CONNECTION_GROUPS["invoicexpress"]):
        return environment_account(config)
    base_url, api_key = invoicexpress_account(values, [], of_store=True)
    if not base_url or not api_key:  # `stores set` refuses this; a row edited by hand reaches no account
        return None
    # Another account, another plan: what the store leaves out is the built-in default, not the environment's.
    per_minute = values.get("invoicexpress_requests_per_minute") or InvoiceXpressAccount.requests_per_minute
    return InvoiceXpressAccount(base_url, api_key, int(float(per_minute)))


def _api(platform: str, values: Mapping[str, str], own_secret: bool,
         config: Mapping[str, Any]) -> tuple[Mapping[str, Any], bool]:
    """The settings the store's platform API is reached with, and whether they are the store's own."""
    group = CONNECTION_GROUPS.get(platform, ())
    if any(values.get(name) for name in group):
        return ChainMap({name.upper(): values.get(name, "") for name in group}, config), True
    if not own_secret:
        # Signed with the environment's secret, it is the environment's shop: its credentials are the store's.
        return config, False
    # A store with a webhook secret of its own is another shop, never reached with the environment's.
    return ChainMap({name.upper(): "" for name in group}, config), False


def find_store(platform: str, name: str) -> Store | None:
    """The store row of (platform, name), if there is one."""
    return db.session.scalar(sa.select(Store).where(Store.platform == platform, Store.domain == name))


def stores_on_account(account: InvoiceXpressAccount | None, *, besides: Store | None = None) -> list[Store]:
    """The stores that issue into `account` (other than `besides`)."""
    found = []
    for store in db.session.scalars(sa.select(Store).order_by(Store.id)):
        if besides is not None and store.id == besides.id:
            continue
        try:
            theirs = resolve(store).invoicexpress
        except UnreadableSecrets:
            continue
        if theirs is not None and account is not None and theirs.key == account.key:
            found.append(store)
    return found


def give_reference_prefix(store: Store) -> str | None:
    """Give the store a reference prefix of its own when another store already issues into its IX account, so
    that two stores' "#1001" (and their customers' codes) never meet there. The first store of an account
    keeps bare references: a one-shop deployment's documents read as they always have. Returns the prefix."""
    settings = store.settings or {}
    if settings.get("reference_prefix"):
        return settings["reference_prefix"]
    others = stores_on_account(resolve(store).invoicexpress, besides=store)
    if not others:
        return None
    taken = {settings_for(other).reference_prefix for other in others}
    stem = re.sub(r"[^A-Z0-9]", "", store.domain.split(".")[0].upper())[:8] or "STORE"
    prefix, n = f"{stem}-", 2
    while prefix in taken:
        prefix, n = f"{stem}{n}-", n + 1
    store.settings = {**settings, "reference_prefix": prefix}
    return prefix

