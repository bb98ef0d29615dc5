"""The `stores` commands: set, unset, list, show, remove, rotate-key and check, as an operator runs them."""

from __future__ import annotations

import json

import click
import pytest
import sqlalchemy as sa

from connector import create_app
from connector.extensions import db
from devtools import stripe_fake, woocommerce_fake
from tests.conftest import API_KEY, STORE, fixture_body, settings, tables_of

SECRET_KEY = "first-secret-key-0123456789"
NEW_KEY = "second-secret-key-9876543210"
STRIPE_SECRET = "whsec_store_own_0123456789"
STRIPE_KEY = "rk_test_store_own_0123456789"
CONSUMER_KEY = "ck_store_own_0123456789"
CONSUMER_SECRET = "cs_store_own_0123456789"
OTHER_IX_KEY = "other-ix-api-key-0123456789"


def make_app(redis, tmp_path, **extra: str):
    """The app as `flask --app wsgi stores …` builds it (a command line: no start-up check of the stores)."""
    with click.Context(click.Command("flask")):
        return create_app(overrides={"REDIS_CONNECTION": redis},
                          environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'connector.db'}", **extra))


@pytest.fixture
def app(redis, tmp_path):
    """The conftest app, with SECRET_KEY set so that stores may keep secrets of their own."""
    app = make_app(redis, tmp_path, SECRET_KEY=SECRET_KEY)
    with tables_of(app):
        yield app


def run(app, *args: str, input: str | None = None):
    return app.test_cli_runner().invoke(args=list(args), input=input)


def shown(result) -> dict:
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.output)


def listed(app) -> list[dict]:
    result = run(app, "stores", "list")
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines()]


def raw_secrets() -> list[str | None]:
    return list(db.session.execute(sa.text("SELECT secrets FROM stores ORDER BY id")).scalars())


def stripe_store(app, *extra: str):
    return run(app, "stores", "set", "loja", "--platform", "stripe", f"stripe_webhook_secret={STRIPE_SECRET}",
               f"stripe_api_key={STRIPE_KEY}", *extra)


# --- set --------------------------------------------------------------------------------------------------


def test_set_creates_a_store_whose_secrets_are_encrypted_and_never_printed(app):
    result = stripe_store(app, "DEFAULT_VAT_RATE=6")

    store = shown(result)
    assert store["platform"] == "stripe" and store["store"] == "loja"
    assert store["settings"] == {"default_vat_rate": "6"}
    assert set(store["secrets"]) == {"stripe_webhook_secret", "stripe_api_key"}
    assert all(value.startswith("sha256:") for value in store["secrets"].values())
    assert store["webhook_secret"] == "own" and store["api"] == "own"
    assert store["webhook_url"] == "/webhooks/stripe/loja"
    [raw] = raw_secrets()
    assert STRIPE_SECRET not in raw and STRIPE_KEY not in raw
    for output in (result.output, run(app, "stores", "list").output, run(app, "stores", "show", "loja").output):
        assert STRIPE_SECRET not in output and STRIPE_KEY not in output


def test_set_merges_a_new_secret_with_the_stores_others(app):
    stripe_store(app)
    before = listed(app)[0]["secrets"]

    result = run(app, "stores", "set", "LOJA", "stripe_webhook_secret=whsec_rolled_0123456789")

    after = shown(result)["secrets"]
    assert after["stripe_api_key"] == before["stripe_api_key"]
    assert after["stripe_webhook_secret"] != before["stripe_webhook_secret"]


def test_an_issuing_setting_may_be_named_by_its_environment_variable(app):
    result = run(app, "stores", "set", STORE, "invoicexpress_tax_names=23=IVA23,6=IVA6")

    store = shown(result)
    assert store["settings"] == {"tax_names": "23=IVA23,6=IVA6"}
    assert store["issuing"]["tax_names"] == {"value": "23=IVA23,6=IVA6", "from": "own"}
    assert store["issuing"]["document_type"] == {"value": "invoice_receipt", "from": "environment"}


def test_set_refuses_an_unknown_key_listing_the_valid_ones(app):
    result = run(app, "stores", "set", STORE, "colour=blue")

    assert result.exit_code != 0
    assert "colour is not a store setting" in result.output
    assert "document_type" in result.output and "stripe_api_key" in result.output
    assert listed(app) == []


def test_set_refuses_an_empty_value_and_points_to_unset(app):
    result = run(app, "stores", "set", STORE, "document_type=")

    assert result.exit_code != 0
    assert "stores unset" in result.output
    assert listed(app) == []


def test_a_new_store_needs_its_platform_unless_its_name_is_shopifys(app):
    result = run(app, "stores", "set", "loja", "document_type=invoice")

    assert result.exit_code != 0
    assert "--platform" in result.output
    assert listed(app) == []
    created = shown(run(app, "stores", "set", "Other.myshopify.com", "document_type=invoice"))
    assert created["platform"] == "shopify"


def test_set_refuses_every_problem_of_the_stores_values_and_changes_nothing(app):
    stripe_store(app)
    before = raw_secrets()

    result = run(app, "stores", "set", "loja", "woocommerce_url=ftp://x", "invalid_tax_id=maybe",
                 "shopify_webhook_secret=abc")

    assert result.exit_code != 0
    assert "nothing changed" in result.output
    assert "invalid_tax_id must be one of consumer, hold" in result.output
    assert "woocommerce_url is for a woocommerce store" in result.output
    assert "shopify_webhook_secret is for a shopify store" in result.output
    assert raw_secrets() == before
    assert listed(app)[0]["settings"] == {}


def test_a_woocommerce_store_needs_its_whole_api_key(app):
    result = run(app, "stores", "set", "loja.example.pt", "--platform", "woocommerce",
                 "woocommerce_url=https://loja.example.pt")

    assert result.exit_code != 0
    assert "woocommerce_consumer_key and woocommerce_consumer_secret must be set too" in result.output
    assert listed(app) == []


def test_a_secret_without_secret_key_is_a_clear_error(redis, tmp_path):
    with tables_of(make_app(redis, tmp_path)) as app:
        result = stripe_store(app)

        assert result.exit_code != 0
        assert "SECRET_KEY is not set" in result.output
        assert STRIPE_SECRET not in result.output
        assert listed(app) == []


def test_a_name_on_two_platforms_needs_its_platform(app):
    run(app, "stores", "set", "loja", "--platform", "stripe", "document_type=invoice")
    run(app, "stores", "set", "loja", "--platform", "woocommerce", "document_type=invoice")

    result = run(app, "stores", "set", "loja", "invalid_tax_id=hold")

    assert result.exit_code != 0
    assert "on stripe and woocommerce" in result.output and "--platform" in result.output
    woo = shown(run(app, "stores", "set", "loja", "--platform", "woocommerce", "invalid_tax_id=hold"))
    assert woo["platform"] == "woocommerce" and woo["settings"]["invalid_tax_id"] == "hold"
    assert "invalid_tax_id" not in shown(run(app, "stores", "show", "loja", "--platform", "stripe"))["settings"]


def test_a_store_name_that_cannot_be_a_url_part_is_refused(app):
    result = run(app, "stores", "set", "my shop/1", "--platform", "stripe", "document_type=invoice")

    assert result.exit_code != 0
    assert "is not a store name" in result.output
    assert listed(app) == []


def test_a_second_store_on_the_same_ix_account_gets_a_reference_prefix(app, post_order):
    post_order(fixture_body("paid_b2c_tax_included.json"))  # the first store of the environment's account

    store = shown(run(app, "stores", "set", "other.myshopify.com", "document_type=invoice"))

    assert store["reference_prefix"] == "OTHER-"
    assert shown(run(app, "stores", "show", STORE))["reference_prefix"] == ""


# --- unset ------------------------------------------------------------------------------------------------


def test_unset_removes_a_secret_and_is_validated_like_set(app):
    stripe_store(app)

    refused = run(app, "stores", "unset", "loja", "stripe_api_key")
    assert refused.exit_code != 0
    assert "set stripe_api_key too" in refused.output
    assert set(listed(app)[0]["secrets"]) == {"stripe_webhook_secret", "stripe_api_key"}

    store = shown(run(app, "stores", "unset", "loja", "stripe_webhook_secret", "stripe_api_key"))
    assert store["secrets"] == {} and store["webhook_secret"] == "none"
    assert raw_secrets() == [None]


# --- list, show -------------------------------------------------------------------------------------------


def test_list_says_where_each_stores_connections_come_from(app):
    stripe_store(app, "invoicexpress_account=outra", f"invoicexpress_api_key={OTHER_IX_KEY}")
    run(app, "stores", "set", "other.myshopify.com", "document_type=invoice")

    result = run(app, "stores", "list")

    loja, other = listed(app)
    assert (loja["webhook_secret"], loja["invoicexpress"], loja["api"]) == ("own", "own", "own")
    assert loja["invoicexpress_base_url"] == "https://outra.app.invoicexpress.com"
    assert (other["webhook_secret"], other["invoicexpress"], other["api"]) == (
        "environment", "environment", "none")
    assert OTHER_IX_KEY not in result.output and API_KEY not in result.output


def test_show_of_an_unknown_store_says_so(app):
    result = run(app, "stores", "show", "nothere")

    assert result.exit_code != 0
    assert "no store nothere" in result.output


# --- remove -----------------------------------------------------------------------------------------------


def test_remove_deletes_a_store_without_records_after_asking(app):
    run(app, "stores", "set", "typo.myshopify.com", "document_type=invoice")

    kept = run(app, "stores", "remove", "typo.myshopify.com", input="n\n")
    assert kept.exit_code != 0
    assert len(listed(app)) == 1

    removed = run(app, "stores", "remove", "typo.myshopify.com", "--yes")
    assert removed.exit_code == 0, removed.output
    assert listed(app) == []


def test_remove_refuses_a_store_with_records_and_says_why(app, post_order):
    post_order(fixture_body("paid_b2c_tax_included.json"))

    result = run(app, "stores", "remove", STORE, "--yes")

    assert result.exit_code != 0
    assert "1 events" in result.output and "invoiced twice" in result.output
    assert [store["store"] for store in listed(app)] == [STORE]


# --- rotate-key -------------------------------------------------------------------------------------------


def test_rotate_key_moves_every_store_to_the_new_key(redis, tmp_path):
    with tables_of(make_app(redis, tmp_path, SECRET_KEY=SECRET_KEY), drop=False) as app:
        stripe_store(app)
        run(app, "stores", "set", "loja.example.pt", "--platform", "woocommerce",
            "woocommerce_webhook_secret=woo-own-secret-0123456789")
        fingerprints = [store["secrets"] for store in listed(app)]

    with tables_of(make_app(redis, tmp_path, SECRET_KEY=f"{NEW_KEY},{SECRET_KEY}"), drop=False) as app:
        result = run(app, "stores", "rotate-key")
        assert result.exit_code == 0, result.output
        assert "2 stores" in result.output

    with tables_of(make_app(redis, tmp_path, SECRET_KEY=NEW_KEY)) as app:
        stores = listed(app)
        assert [store["secrets"] for store in stores] == fingerprints
        assert all("problem" not in store for store in stores)


def test_rotate_key_with_a_key_that_reads_no_secrets_names_the_store_and_changes_nothing(redis, tmp_path):
    with tables_of(make_app(redis, tmp_path, SECRET_KEY=SECRET_KEY), drop=False) as app:
        stripe_store(app)
        before = raw_secrets()

    with tables_of(make_app(redis, tmp_path, SECRET_KEY=NEW_KEY)) as app:
        result = run(app, "stores", "rotate-key")

        assert result.exit_code != 0
        assert "loja (stripe)" in result.output and "nothing changed" in result.output
        assert raw_secrets() == before
        [store] = listed(app)
        assert "cannot be read with SECRET_KEY" in store["problem"]


# --- check: InvoiceXpress ---------------------------------------------------------------------------------


def ix_store(app, sandbox, api_key: str = API_KEY, *extra: str):
    return run(app, "stores", "set", "loja", "--platform", "stripe", f"invoicexpress_base_url={sandbox.url}",
               f"invoicexpress_api_key={api_key}", *extra)


def test_check_reaches_the_stores_own_ix_account_and_finds_its_taxes_and_series(app, sandbox):
    ix_store(app, sandbox, API_KEY, "sequence_id=9000", "tax_names=23=IVA23,6=IVA6")

    result = run(app, "stores", "check", "loja")

    lines = result.output.splitlines()
    assert lines[0] == "InvoiceXpress: account reached, 10 taxes, IVA23 at 23 % ok, IVA6 at 6 % ok"
    assert lines[1].startswith("InvoiceXpress series: sequence_id 9000 is series SBX")
    # The store has no Stripe key: nothing could be invoiced, so the check fails.
    assert lines[2].startswith("Stripe: no API key")
    assert result.exit_code == 1
    assert API_KEY not in result.output


def test_check_of_a_shopify_store_on_the_environments_account_passes(app, sandbox):
    run(app, "stores", "set", STORE, "document_type=invoice")

    result = run(app, "stores", "check", STORE)

    assert result.exit_code == 0, result.output
    assert "InvoiceXpress: account reached, 10 taxes, IVA23 at 23 % ok" in result.output
    assert "no sequence_id set, the account's default series (SBX) is used" in result.output
    assert "Shopify: no API token, not checked" in result.output


def test_check_with_a_wrong_ix_key_fails_without_printing_it(app, sandbox):
    ix_store(app, sandbox, OTHER_IX_KEY)

    result = run(app, "stores", "check", "loja")

    assert result.exit_code == 1
    assert "refused the API key (401): check the store's invoicexpress_api_key" in result.output
    assert OTHER_IX_KEY not in result.output


def test_check_names_a_tax_or_series_the_account_lacks(app, sandbox):
    run(app, "stores", "set", STORE, "tax_names=23=IVA23,24=IVA24,6=IVA13", "sequence_id=123")

    result = run(app, "stores", "check", STORE)

    assert result.exit_code == 1
    assert "IVA24 (for 24 %) is not a tax of the account" in result.output
    assert "IVA13 is at 13 % in the account, and tax_names gives it for 6 %" in result.output
    assert "sequence_id 123 is not a series of the account (its series: SBX (id 9000))" in result.output


# --- check: the platforms' APIs ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def woo_url():
    with woocommerce_fake.running(CONSUMER_KEY, CONSUMER_SECRET) as url:
        yield url


@pytest.fixture(scope="module")
def stripe_url():
    with stripe_fake.running(STRIPE_KEY) as url:
        yield url


def test_check_reads_woocommerce_orders_with_the_stores_key(app, sandbox, woo_url):
    run(app, "stores", "set", "loja.example.pt", "--platform", "woocommerce", f"woocommerce_url={woo_url}",
        f"woocommerce_consumer_key={CONSUMER_KEY}", f"woocommerce_consumer_secret={CONSUMER_SECRET}")

    result = run(app, "stores", "check", "loja.example.pt")

    assert result.exit_code == 0, result.output
    assert "WooCommerce: API reached with the store's credentials, orders readable" in result.output
    assert CONSUMER_KEY not in result.output and CONSUMER_SECRET not in result.output


def test_check_with_a_wrong_woocommerce_secret_fails_naming_the_settings(app, sandbox, woo_url):
    run(app, "stores", "set", "loja.example.pt", "--platform", "woocommerce", f"woocommerce_url={woo_url}",
        f"woocommerce_consumer_key={CONSUMER_KEY}", "woocommerce_consumer_secret=cs_wrong_0123456789")

    result = run(app, "stores", "check", "loja.example.pt")

    assert result.exit_code == 1
    assert "WooCommerce: API refused the key (401): check woocommerce_consumer_key and " \
           "woocommerce_consumer_secret" in result.output
    assert "cs_wrong_0123456789" not in result.output and CONSUMER_KEY not in result.output


def test_check_lists_stripe_events_with_the_stores_key(app, sandbox, stripe_url):
    stripe_store(app, f"stripe_api_base_url={stripe_url}")

    result = run(app, "stores", "check", "loja")

    assert result.exit_code == 0, result.output
    assert "Stripe: API reached with the store's credentials, 0 events of the last day" in result.output
    assert STRIPE_KEY not in result.output and STRIPE_SECRET not in result.output


def test_check_with_a_wrong_stripe_key_fails(app, sandbox, stripe_url):
    run(app, "stores", "set", "loja", "--platform", "stripe", f"stripe_webhook_secret={STRIPE_SECRET}",
        "stripe_api_key=rk_test_wrong_0123456789", f"stripe_api_base_url={stripe_url}")

    result = run(app, "stores", "check", "loja")

    assert result.exit_code == 1
    assert "Stripe: API refused the key (401): check stripe_api_key" in result.output
    assert "rk_test_wrong_0123456789" not in result.output
