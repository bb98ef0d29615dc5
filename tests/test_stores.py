"""Stores of their own: which store a delivery is for and which secret verifies it, secrets kept encrypted,
each store issuing into its own IX account (key, taxes, rate limit), and reference prefixes on a shared one."""

from __future__ import annotations

import json
import re

import click
import pytest
import requests
import responses
import sqlalchemy as sa

from config.settings import ConfigError
from connector import create_app, issuing, stores
from connector.extensions import db
from connector.invoicexpress.ratelimit import KEY_PREFIX, account_key
from connector.models import Document, DocumentState, EventStatus, Store, WebhookEvent
from devtools.invoicexpress_sandbox import TAXES, serve_in_thread
from tests.conftest import SHOPIFY_SECRET, Sandbox, drain, fixture_body, settings, shopify_headers, tables_of
from tests.test_webhooks_stripe import event, session, signature
from tests.test_webhooks_woocommerce import woo_headers, woo_order

SECRET_KEY = "stores-test-secret-key-0123456789"
OTHER_KEY = "some-other-secret-key-9876543210"
ALPHA, BETA = "alpha.myshopify.com", "beta.myshopify.com"
ALPHA_SECRET, BETA_SECRET = "alpha-own-shopify-secret", "beta-own-shopify-secret"
ALPHA_IX_KEY, BETA_IX_KEY = "alpha-ix-api-key-0123456789", "beta-ix-api-key-9876543210"
ORDER = "paid_b2c_tax_included.json"


@pytest.fixture
def app(redis, tmp_path):
    """The conftest app with SECRET_KEY set, so that stores may keep secrets of their own."""
    database = f"sqlite:///{tmp_path / 'connector.db'}"
    app = create_app(overrides={"REDIS_CONNECTION": redis},
                     environ=settings(DATABASE_URL=database, SECRET_KEY=SECRET_KEY))
    with tables_of(app):
        yield app


@pytest.fixture(scope="module")
def ix_urls():
    """Two IX accounts, each taking only its own API key."""
    alpha_url, alpha = serve_in_thread(api_key=ALPHA_IX_KEY)
    beta_url, beta = serve_in_thread(api_key=BETA_IX_KEY)
    yield alpha_url, beta_url
    alpha.shutdown()
    beta.shutdown()


@pytest.fixture
def accounts(app, ix_urls) -> tuple[Sandbox, Sandbox]:
    """Both IX accounts, emptied. The environment's account stays one nobody answers at."""
    for url in ix_urls:
        requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()
    app.config.update(INVOICEXPRESS_READ_TIMEOUT=2)
    return Sandbox(ix_urls[0]), Sandbox(ix_urls[1])


def add_store(platform: str, domain: str, settings: dict | None = None, **secrets: str) -> Store:
    """A store row as `flask stores set` keeps it: plain settings, secrets in one token."""
    store = Store(platform=platform, domain=domain, settings=settings or {}, secrets=stores.encrypt(secrets))
    db.session.add(store)
    db.session.commit()
    return store


def add_shop(domain: str, webhook_secret: str, ix: Sandbox | None = None, ix_key: str = "") -> Store:
    """A Shopify store with its own webhook secret and (given `ix`) its own IX account."""
    own = {"invoicexpress_base_url": ix.url} if ix else {}
    keys = {"invoicexpress_api_key": ix_key} if ix else {}
    return add_store("shopify", domain, own, shopify_webhook_secret=webhook_secret, **keys)


def post_shopify(client, shop: str, secret: str, body: bytes | None = None, url: str = "/webhooks/shopify",
                 event_id: str | None = None):
    body = fixture_body(ORDER) if body is None else body
    headers = shopify_headers(body, secret=secret, event_id=event_id)
    headers["X-Shopify-Shop-Domain"] = shop
    return client.post(url, data=body, headers=headers)


def events() -> list[tuple[str, str]]:
    """Each stored event's (platform, store name)."""
    stored = db.session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.id))
    return [(event.platform, event.store.domain) for event in stored]


def store_names() -> list[str]:
    return list(db.session.scalars(sa.select(Store.domain).order_by(Store.id)))


def document_of(domain: str) -> Document:
    [document] = db.session.scalars(sa.select(Document).join(Store).where(Store.domain == domain)).all()
    return document


# --- 1. Which store, verified with whose secret ---------------------------------------------------------


def test_shopify_deliveries_go_to_the_store_their_shop_domain_names(client, queue):
    add_shop(ALPHA, ALPHA_SECRET)
    add_shop(BETA, BETA_SECRET)

    assert post_shopify(client, BETA, BETA_SECRET).status_code == 200
    assert post_shopify(client, ALPHA, ALPHA_SECRET).status_code == 200

    assert events() == [("shopify", BETA), ("shopify", ALPHA)]
    assert len(queue.job_ids) == 2


def test_a_woocommerce_delivery_goes_to_the_store_of_its_source_host(client):
    secret = "shop-b-own-woocommerce-secret"
    add_store("woocommerce", "shop-b.example.pt", woocommerce_webhook_secret=secret)
    body = json.dumps(woo_order()).encode()

    answer = client.post("/webhooks/woocommerce", data=body,
                         headers=woo_headers(body, secret=secret, source="https://shop-b.example.pt/"))

    assert answer.status_code == 200
    assert events() == [("woocommerce", "shop-b.example.pt")]


def test_a_woocommerce_site_on_another_port_is_a_store_named_with_its_port(client):
    secret = "shop-c-own-woocommerce-secret"
    add_store("woocommerce", "shop-c.example.pt:8443", woocommerce_webhook_secret=secret)
    body = json.dumps(woo_order()).encode()
    headers = woo_headers(body, secret=secret, source="https://shop-c.example.pt:8443/")

    by_header = client.post("/webhooks/woocommerce", data=body, headers=headers)
    by_url = client.post("/webhooks/woocommerce/shop-c.example.pt:8443", data=body, headers=headers)

    assert (by_header.status_code, by_url.status_code) == (200, 200)
    assert by_url.json["status"] == "duplicate"
    assert events() == [("woocommerce", "shop-c.example.pt:8443")]


def test_the_url_names_the_store_on_any_platform(client):
    add_shop(ALPHA, ALPHA_SECRET)
    add_shop(BETA, BETA_SECRET)
    stripe_secret = "whsec_beta_shop_own_secret"
    add_store("stripe", "beta-shop", stripe_webhook_secret=stripe_secret)

    # The URL wins over the shop domain header.
    answer = post_shopify(client, ALPHA, BETA_SECRET, url=f"/webhooks/shopify/{BETA}")
    assert answer.status_code == 200
    body = json.dumps(event("checkout.session.completed", session())).encode()
    answer = client.post("/webhooks/stripe/beta-shop", data=body,
                         headers={"Content-Type": "application/json",
                                  "Stripe-Signature": signature(body, stripe_secret)})
    assert answer.status_code == 200

    assert events() == [("shopify", BETA), ("stripe", "beta-shop")]


@pytest.mark.parametrize("url", ["/webhooks/shopify", f"/webhooks/shopify/{BETA}"])
def test_a_store_with_its_own_secret_is_verified_with_it_only(client, queue, url):
    add_shop(ALPHA, ALPHA_SECRET)
    add_shop(BETA, BETA_SECRET)

    for secret in (SHOPIFY_SECRET, ALPHA_SECRET):  # the environment's, another store's
        assert post_shopify(client, BETA, secret, url=url).status_code == 401

    assert events() == []
    assert queue.job_ids == []


def test_an_unknown_store_with_no_environment_secret_is_404_and_nothing_is_stored(app, client, queue):
    app.config["WEBHOOK_SECRETS"] = {}  # no SHOPIFY_WEBHOOK_SECRET: only stores of their own receive
    add_shop(ALPHA, ALPHA_SECRET)

    for secret in (SHOPIFY_SECRET, ALPHA_SECRET):
        answer = post_shopify(client, "gamma.myshopify.com", secret)
        assert (answer.status_code, answer.json["status"]) == (404, "unknown store")

    assert events() == []
    assert store_names() == [ALPHA]
    assert queue.job_ids == []


def test_an_unknown_store_signed_with_the_environment_secret_is_accepted(client):
    add_shop(ALPHA, ALPHA_SECRET)

    answer = post_shopify(client, "gamma.myshopify.com", SHOPIFY_SECRET)

    assert answer.status_code == 200
    assert events() == [("shopify", "gamma.myshopify.com")]
    assert store_names() == [ALPHA, "gamma.myshopify.com"]


# --- 2. Secrets at rest -------------------------------------------------------------------------------


def test_the_secrets_column_never_holds_a_secret_in_clear(client):
    add_shop(ALPHA, ALPHA_SECRET, Sandbox("https://alpha.app.invoicexpress.com"), ALPHA_IX_KEY)

    [(raw_secrets, raw_settings)] = db.session.execute(sa.text("SELECT secrets, settings FROM stores")).all()

    assert raw_secrets
    for secret in (ALPHA_SECRET, ALPHA_IX_KEY):
        assert secret not in raw_secrets and secret not in raw_settings
    # And they still verify and reach IX.
    assert post_shopify(client, ALPHA, ALPHA_SECRET).status_code == 200
    assert stores.resolve(stores.find_store("shopify", ALPHA)).invoicexpress.api_key == ALPHA_IX_KEY


def test_a_row_encrypted_under_the_old_key_is_read_with_new_and_old(redis, tmp_path):
    app = create_app(overrides={"REDIS_CONNECTION": redis},
                     environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'c.db'}",
                                      SECRET_KEY=f"{SECRET_KEY},{OTHER_KEY}"))
    with tables_of(app):
        db.session.add(Store(platform="shopify", domain=BETA, settings={},
                             secrets=stores.encrypt({"shopify_webhook_secret": BETA_SECRET},
                                                    stores.keyring([OTHER_KEY]))))
        db.session.commit()

        assert post_shopify(app.test_client(), BETA, BETA_SECRET).status_code == 200
        assert post_shopify(app.test_client(), BETA, SHOPIFY_SECRET).status_code == 401
        assert events() == [("shopify", BETA)]


def test_with_a_wrong_key_the_store_answers_503_and_the_connector_refuses_to_start(app, client, queue,
                                                                                    tmp_path):
    db.session.add(Store(platform="shopify", domain=BETA, settings={},
                         secrets=stores.encrypt({"shopify_webhook_secret": BETA_SECRET},
                                                stores.keyring([OTHER_KEY]))))
    db.session.commit()

    for secret in (BETA_SECRET, SHOPIFY_SECRET):
        answer = post_shopify(client, BETA, secret)
        assert (answer.status_code, answer.json["status"]) == (503, "store unavailable")
    assert events() == []
    assert queue.job_ids == []

    [problem] = stores.startup_problems()
    assert BETA in problem and "SECRET_KEY" in problem
    with pytest.raises(ConfigError, match=re.escape(BETA)) as refused:
        create_app(environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}", SECRET_KEY=SECRET_KEY))
    assert BETA_SECRET not in str(refused.value) and SECRET_KEY not in str(refused.value)


def test_stores_whose_secrets_the_key_cannot_read_are_the_only_start_up_problem(redis, tmp_path):
    # No platform secret in the environment: the stores' own are what receive, and the key is what is wrong.
    database = f"sqlite:///{tmp_path / 'stores.db'}"
    environ = settings(DATABASE_URL=database, SECRET_KEY=SECRET_KEY, SHOPIFY_WEBHOOK_SECRET="")
    with click.Context(click.Command("flask")):
        app = create_app(overrides={"REDIS_CONNECTION": redis}, environ=environ)
    with tables_of(app):
        db.session.add(Store(platform="shopify", domain=BETA, settings={},
                             secrets=stores.encrypt({"shopify_webhook_secret": BETA_SECRET},
                                                    stores.keyring([OTHER_KEY]))))
        db.session.commit()

        [problem] = stores.startup_problems()
    assert BETA in problem and "cannot be read with SECRET_KEY" in problem


# --- 3. Each store its own IX account -----------------------------------------------------------------


@pytest.fixture
def limiter_keys(monkeypatch) -> list[str]:
    """The Redis keys of the rate limiters the IX clients are made with."""
    keys = []

    class Recording(issuing.RateLimiter):
        def __init__(self, redis, key, **kwargs):
            keys.append(key)
            super().__init__(redis, key, **kwargs)

    monkeypatch.setattr(issuing, "RateLimiter", Recording)
    return keys


def test_two_stores_on_two_accounts_each_issue_into_their_own_with_their_own_key(client, queue, accounts,
                                                                                  limiter_keys):
    alpha_ix, beta_ix = accounts
    add_shop(ALPHA, ALPHA_SECRET, alpha_ix, ALPHA_IX_KEY)
    add_shop(BETA, BETA_SECRET, beta_ix, BETA_IX_KEY)

    post_shopify(client, ALPHA, ALPHA_SECRET)
    post_shopify(client, BETA, BETA_SECRET)
    drain(queue)

    # Each sandbox refuses any key but its own: a document there was sent to its URL with its key.
    assert document_of(ALPHA).state == document_of(BETA).state == DocumentState.DONE
    [alpha_doc], [beta_doc] = alpha_ix.documents(), beta_ix.documents()
    assert alpha_doc["id"] == document_of(ALPHA).ix_id and beta_doc["id"] == document_of(BETA).ix_id
    # Both stores keep their bare "#1001": their accounts are not shared.
    assert alpha_doc["reference"] == beta_doc["reference"] == "#1001"
    assert set(limiter_keys) == {account_key(alpha_ix.url), account_key(beta_ix.url)}


def test_each_store_is_checked_against_its_own_accounts_taxes(client, queue, accounts):
    alpha_ix, beta_ix = accounts
    add_shop(ALPHA, ALPHA_SECRET, alpha_ix, ALPHA_IX_KEY)
    add_shop(BETA, BETA_SECRET, beta_ix, BETA_IX_KEY)
    post_shopify(client, BETA, BETA_SECRET)
    post_shopify(client, ALPHA, ALPHA_SECRET)

    with responses.RequestsMock(assert_all_requests_are_fired=True) as ix:
        # B's account lacks IVA23 (asked first, so a shared cache would give A's account B's taxes).
        ix.get(f"{beta_ix.url}/taxes.json",
               json={"taxes": [t for t in TAXES if t["name"] != "IVA23"]})
        ix.add_passthru(alpha_ix.url)
        ix.add_passthru(beta_ix.url)
        drain(queue)

    beta, alpha = document_of(BETA), document_of(ALPHA)
    assert beta.state == DocumentState.HELD
    assert "no tax named IVA23" in beta.last_error
    assert beta_ix.documents() == []
    assert alpha.state == DocumentState.DONE
    assert len(alpha_ix.documents()) == 1
    redis = queue.connection
    assert redis.exists(f"{issuing.TAXES_CACHE_KEY}:{account_key(alpha_ix.url)}")
    assert redis.exists(f"{issuing.TAXES_CACHE_KEY}:{account_key(beta_ix.url)}")


def test_the_ix_clients_of_two_accounts_share_no_rate_limit(app, accounts):
    alpha_ix, beta_ix = accounts
    alpha = add_shop(ALPHA, ALPHA_SECRET, alpha_ix, ALPHA_IX_KEY)
    beta = add_shop(BETA, BETA_SECRET, beta_ix, BETA_IX_KEY)
    gamma = add_shop("gamma.myshopify.com", "gamma-own-secret", beta_ix, BETA_IX_KEY)
    make_client = app.extensions["invoicexpress"]

    keys = {store.domain: make_client(store)._limiter.key for store in (alpha, beta, gamma)}

    assert keys[ALPHA] != keys[BETA] == keys["gamma.myshopify.com"]
    assert keys[ALPHA] == KEY_PREFIX + account_key(alpha_ix.url)



def test_a_store_of_its_own_account_takes_the_built_in_rate_not_the_environments(app, accounts):
    alpha_ix, beta_ix = accounts
    app.config["INVOICEXPRESS_REQUESTS_PER_MINUTE"] = 60  # the environment's account is on a small plan
    alpha = add_shop(ALPHA, ALPHA_SECRET, alpha_ix, ALPHA_IX_KEY)
    beta = add_store("shopify", BETA, {"invoicexpress_base_url": beta_ix.url,
                                       "invoicexpress_requests_per_minute": "120"},
                     shopify_webhook_secret=BETA_SECRET, invoicexpress_api_key=BETA_IX_KEY)
    gamma = add_store("shopify", "gamma.myshopify.com")  # the environment's shop, on its account
    make_client = app.extensions["invoicexpress"]

    per_minute = {store.domain: make_client(store)._limiter.per_minute for store in (alpha, beta, gamma)}

    assert per_minute == {ALPHA: 600, BETA: 120, "gamma.myshopify.com": 60}

# --- 4. Reference prefixes ----------------------------------------------------------------------------


def test_the_second_store_on_a_shared_account_gets_a_prefix_on_references_and_customer_codes(
        app, client, queue, sandbox):
    # Two shops signing with the environment's secret: both issue into the environment's IX account.
    assert post_shopify(client, ALPHA, SHOPIFY_SECRET).status_code == 200
    assert post_shopify(client, BETA, SHOPIFY_SECRET).status_code == 200
    drain(queue)

    assert stores.settings_for(stores.find_store("shopify", ALPHA)).reference_prefix is None
    prefix = stores.settings_for(stores.find_store("shopify", BETA)).reference_prefix
    assert prefix == "BETA-"
    issued = {doc["id"]: doc for doc in sandbox.documents()}
    alpha, beta = issued[document_of(ALPHA).ix_id], issued[document_of(BETA).ix_id]
    assert alpha["reference"] == "#1001"
    assert beta["reference"] == "BETA-#1001"
    alpha_code, beta_code = alpha["document"]["client"]["code"], beta["document"]["client"]["code"]
    assert not alpha_code.startswith("BETA-")
    assert beta_code == f"BETA-{alpha_code}"


def test_a_new_store_on_another_account_than_the_first_keeps_bare_references(app, client, queue, accounts):
    alpha_ix, beta_ix = accounts
    add_shop(ALPHA, ALPHA_SECRET, alpha_ix, ALPHA_IX_KEY)
    app.config.update(INVOICEXPRESS_BASE_URL=beta_ix.url, INVOICEXPRESS_API_KEY=BETA_IX_KEY)

    post_shopify(client, ALPHA, ALPHA_SECRET)
    post_shopify(client, BETA, SHOPIFY_SECRET)  # created now, on the environment's account
    drain(queue)

    assert stores.settings_for(stores.find_store("shopify", BETA)).reference_prefix is None
    assert [d["reference"] for d in alpha_ix.documents()] == ["#1001"]
    assert [d["reference"] for d in beta_ix.documents()] == ["#1001"]


# --- 5. No IX account at all ---------------------------------------------------------------------------


def test_a_store_without_an_ix_account_is_held_saying_so_and_nothing_is_sent(app, client, queue, sandbox):
    app.config["INVOICEXPRESS_API_KEY"] = ""  # the environment names no IX account either
    add_shop(BETA, BETA_SECRET)

    assert post_shopify(client, BETA, BETA_SECRET).status_code == 200
    drain(queue)

    document = document_of(BETA)
    assert document.state == DocumentState.HELD
    assert document.last_error == str(issuing.NoInvoiceXpressAccount(document.store))
    assert f"No InvoiceXpress account is set for store {BETA}" in document.last_error
    [event] = db.session.scalars(sa.select(WebhookEvent)).all()
    assert event.status == EventStatus.PROCESSED
    assert sandbox.documents() == []
    assert sandbox.calls() == {}
