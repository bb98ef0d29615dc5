"""Settings come from the environment, once; a bad environment stops start-up with every problem listed."""

from __future__ import annotations

import ssl
from decimal import Decimal

import click
import pytest
from redis.connection import SSLConnection

from config import ConfigError, from_env
from config.settings import planning_from_env
from connector import create_app
from connector.extensions import redis_from_url

COMPLETE = {
    "DATABASE_URL": "postgres://user:pw@db.example.com:5432/connector",
    "REDIS_URL": "redis://redis.example.com:6379/0",
    "SHOPIFY_WEBHOOK_SECRET": "shpss_one",
    "INVOICEXPRESS_API_KEY": "ix-key",
    "INVOICEXPRESS_ACCOUNT": "minhaloja",
}


def env(**changes: str | None) -> dict[str, str]:
    """The complete environment with some names changed (None removes one)."""
    result = dict(COMPLETE)
    for name, value in changes.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def problems(environ: dict[str, str]) -> list[str]:
    """The problem lines of the ConfigError the environment raises."""
    with pytest.raises(ConfigError) as raised:
        from_env(environ)
    return str(raised.value).splitlines()[1:]


def test_a_complete_environment_parses():
    config = from_env(COMPLETE)

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://user:pw@db.example.com:5432/connector"
    assert config["REDIS_URL"] == "redis://redis.example.com:6379/0"
    assert config["WEBHOOK_SECRETS"] == {"shopify": ["shpss_one"]}
    assert config["INVOICEXPRESS_API_KEY"] == "ix-key"
    assert config["INVOICEXPRESS_BASE_URL"] == "https://minhaloja.app.invoicexpress.com"
    assert config["ISSUING"]["tax_names"][Decimal("23")] == "IVA23"
    assert config["ISSUING"]["tax_names"][Decimal("6")] == "IVA6"
    assert config["DOCUMENT_LEASE_SECONDS"] == 90
    assert config["LOG_LEVEL"] == "INFO"


def test_an_empty_environment_lists_every_problem_one_per_line():
    with pytest.raises(ConfigError) as raised:
        from_env({})
    lines = str(raised.value).splitlines()

    assert len(lines) == 6  # a heading, then one line per problem
    body = lines[1:]
    assert any("DATABASE_URL" in line for line in body)
    assert any("REDIS_URL" in line for line in body)
    assert any("SHOPIFY_WEBHOOK_SECRET" in line and "no shop platform" in line for line in body)
    assert any("INVOICEXPRESS_API_KEY" in line for line in body)
    assert any("INVOICEXPRESS_ACCOUNT" in line for line in body)
    # Each problem on its own line: no line names two of the settings.
    for name in ("DATABASE_URL", "REDIS_URL", "INVOICEXPRESS_API_KEY", "INVOICEXPRESS_ACCOUNT"):
        assert sum(name in line for line in body) == 1, name


def test_blank_values_count_as_missing():
    assert any("INVOICEXPRESS_API_KEY" in line for line in problems(env(INVOICEXPRESS_API_KEY="   ")))


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@host:5432/db",
        "postgresql://u:p@host:5432/db",
        "postgresql+psycopg://u:p@host:5432/db",
    ],
)
def test_heroku_database_urls_use_psycopg3(url):
    config = from_env(env(DATABASE_URL=url))

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u:p@host:5432/db"


def test_a_database_url_of_another_kind_is_refused():
    lines = problems(env(DATABASE_URL="mysql://u:p@host/db"))

    assert len(lines) == 1 and "DATABASE_URL" in lines[0]


def test_rediss_is_accepted():
    config = from_env(env(REDIS_URL="rediss://:pw@ec2.example.com:6380"))

    assert config["REDIS_URL"] == "rediss://:pw@ec2.example.com:6380"


def test_a_redis_url_of_another_kind_is_refused():
    lines = problems(env(REDIS_URL="http://redis.example.com"))

    assert len(lines) == 1 and "REDIS_URL" in lines[0]


def test_the_account_name_builds_the_invoicexpress_address():
    assert from_env(env(INVOICEXPRESS_ACCOUNT="acme"))["INVOICEXPRESS_BASE_URL"] == (
        "https://acme.app.invoicexpress.com"
    )


def test_base_url_overrides_the_account_and_drops_the_trailing_slash():
    config = from_env(env(INVOICEXPRESS_BASE_URL="http://127.0.0.1:8900/"))

    assert config["INVOICEXPRESS_BASE_URL"] == "http://127.0.0.1:8900"


def test_base_url_alone_is_enough_without_an_account():
    config = from_env(env(INVOICEXPRESS_ACCOUNT=None, INVOICEXPRESS_BASE_URL="https://sandbox.example.com/"))

    assert config["INVOICEXPRESS_BASE_URL"] == "https://sandbox.example.com"


def test_a_base_url_that_is_not_http_is_refused():
    lines = problems(env(INVOICEXPRESS_BASE_URL="ftp://example.com"))

    assert len(lines) == 1 and "INVOICEXPRESS_BASE_URL" in lines[0]


def test_comma_separated_secrets_are_all_accepted_for_rotation():
    config = from_env(env(SHOPIFY_WEBHOOK_SECRET=" new-secret , , old-secret ,"))

    assert config["WEBHOOK_SECRETS"] == {"shopify": ["new-secret", "old-secret"]}


def test_a_secret_of_only_commas_enables_no_platform():
    lines = problems(env(SHOPIFY_WEBHOOK_SECRET=" , ,"))

    assert len(lines) == 1 and "no shop platform" in lines[0]


def test_stripe_needs_its_api_key_since_its_session_events_carry_no_lines():
    lines = problems(env(SHOPIFY_WEBHOOK_SECRET=None, STRIPE_WEBHOOK_SECRET="whsec_a"))

    assert len(lines) == 1 and "STRIPE_API_KEY" in lines[0]


def test_stripe_alone_is_a_platform_enabled_with_its_api_settings():
    config = from_env(env(SHOPIFY_WEBHOOK_SECRET=None, STRIPE_WEBHOOK_SECRET="whsec_new, whsec_old",
                          STRIPE_API_KEY="rk_live_x", STRIPE_READ_TIMEOUT="7"))

    assert config["WEBHOOK_SECRETS"] == {"stripe": ["whsec_new", "whsec_old"]}
    assert config["STRIPE_API_KEY"] == "rk_live_x" and config["STRIPE_READ_TIMEOUT"] == 7
    assert config["STRIPE_API_BASE_URL"] == "https://api.stripe.com"
    assert problems(env(STRIPE_API_BASE_URL="ftp://x")) == ["- STRIPE_API_BASE_URL must be an http(s) URL"]


def test_vat_rates_of_stripe_sessions_and_one_line_payments_are_percentages():
    issuing = from_env(env(DEFAULT_VAT_RATE="13", PAYMENT_INTENT_LINE=" Consultoria ",
                           PAYMENT_INTENT_VAT_RATE="0"))["ISSUING"]

    assert (issuing["default_vat_rate"], issuing["payment_intent_line"], issuing["payment_intent_vat_rate"]) == (
        Decimal(13), "Consultoria", Decimal(0))
    defaults = from_env(COMPLETE)["ISSUING"]
    keys = ("default_vat_rate", "payment_intent_line", "payment_intent_vat_rate")
    assert tuple(defaults[key] for key in keys) == (Decimal(23), None, None)
    for bad in ("23%", "100", "-1", "NaN"):
        assert "DEFAULT_VAT_RATE must be a VAT percentage" in problems(env(DEFAULT_VAT_RATE=bad))[0]


def test_woocommerce_alone_is_a_platform_enabled():
    config = from_env(env(SHOPIFY_WEBHOOK_SECRET=None, WOOCOMMERCE_WEBHOOK_SECRET="new, old"))

    assert config["WEBHOOK_SECRETS"] == {"woocommerce": ["new", "old"]}


def test_woocommerce_rest_credentials_come_whole():
    lines = problems(env(WOOCOMMERCE_URL="https://shop.example", WOOCOMMERCE_CONSUMER_KEY="ck_x"))

    assert len(lines) == 1 and "WOOCOMMERCE_CONSUMER_SECRET" in lines[0]
    assert "ck_x" not in lines[0]


def test_woocommerce_rest_credentials_and_reconciliation_reach_the_app():
    config = from_env(env(WOOCOMMERCE_URL="https://shop.example/", WOOCOMMERCE_CONSUMER_KEY="ck_x",
                          WOOCOMMERCE_CONSUMER_SECRET="cs_y", RECONCILE_INTERVAL_SECONDS="120"))

    assert config["WOOCOMMERCE_URL"] == "https://shop.example"
    assert (config["WOOCOMMERCE_CONSUMER_KEY"], config["WOOCOMMERCE_CONSUMER_SECRET"]) == ("ck_x", "cs_y")
    assert config["RECONCILE_INTERVAL_SECONDS"] == 120
    assert from_env(env())["RECONCILE_INTERVAL_SECONDS"] == 600
    assert from_env(env())["WOOCOMMERCE_READ_TIMEOUT"] == 20


def test_a_woocommerce_url_that_is_no_web_address_is_refused():
    lines = problems(env(WOOCOMMERCE_URL="shop.example", WOOCOMMERCE_CONSUMER_KEY="k",
                         WOOCOMMERCE_CONSUMER_SECRET="s"))

    assert len(lines) == 1 and "WOOCOMMERCE_URL" in lines[0]


@pytest.mark.parametrize(
    "name",
    [
        "DOCUMENT_LEASE_SECONDS",
        "SWEEP_INTERVAL_SECONDS",
        "INVOICEXPRESS_CONNECT_TIMEOUT",
        "INVOICEXPRESS_READ_TIMEOUT",
        "MAX_WEBHOOK_BYTES",
    ],
)
def test_a_malformed_number_is_reported(name):
    lines = problems(env(**{name: "abc"}))

    assert len(lines) == 1
    assert name in lines[0] and "'abc'" in lines[0]


def test_a_number_below_its_minimum_is_reported():
    lines = problems(env(DOCUMENT_LEASE_SECONDS="0"))

    assert len(lines) == 1 and "DOCUMENT_LEASE_SECONDS" in lines[0]


def test_numbers_are_read():
    config = from_env(
        env(DOCUMENT_LEASE_SECONDS="120", MAX_WEBHOOK_BYTES="4096", INVOICEXPRESS_READ_TIMEOUT="2.5")
    )

    assert config["DOCUMENT_LEASE_SECONDS"] == 120
    assert config["MAX_CONTENT_LENGTH"] == 4096
    assert config["INVOICEXPRESS_READ_TIMEOUT"] == 2.5


@pytest.mark.parametrize(
    ("name", "value"),
    [("DOCUMENT_LEASE_SECONDS", "nan"), ("SWEEP_INTERVAL_SECONDS", "inf"), ("MAX_WEBHOOK_BYTES", "inf")],
)
def test_not_a_number_and_infinity_are_reported(name, value):
    lines = problems(env(**{name: value}))

    assert len(lines) == 1 and name in lines[0]


def test_tax_names_are_read_as_rate_name_pairs():
    config = from_env(env(INVOICEXPRESS_TAX_NAMES="23=IVA Normal, 6.0=IVA Reduzida"))

    assert config["ISSUING"]["tax_names"] == {Decimal("23"): "IVA Normal", Decimal("6"): "IVA Reduzida"}


def test_malformed_tax_name_pairs_are_each_reported():
    lines = problems(env(INVOICEXPRESS_TAX_NAMES="23=IVA23,abc=IVA6,13="))

    assert len(lines) == 2
    assert any("INVOICEXPRESS_TAX_NAMES" in line and "abc=IVA6" in line for line in lines)
    assert any("INVOICEXPRESS_TAX_NAMES" in line and "13=" in line and "no tax name" in line for line in lines)


def test_an_unknown_log_level_is_reported():
    lines = problems(env(LOG_LEVEL="chatty"))

    assert len(lines) == 1 and "LOG_LEVEL" in lines[0]


def test_problems_of_different_settings_are_reported_together():
    lines = problems(env(REDIS_URL=None, DOCUMENT_LEASE_SECONDS="abc", STRIPE_WEBHOOK_SECRET="x"))

    assert len(lines) == 3


def test_create_app_stops_on_a_bad_environment():
    with pytest.raises(ConfigError):
        create_app(environ={})


def test_rediss_connections_do_not_verify_the_certificate():
    # Heroku Redis presents a self-signed certificate.
    client = redis_from_url("rediss://:pw@ec2.example.com:6380/0")
    pool = client.connection_pool

    assert pool.connection_class is SSLConnection or issubclass(pool.connection_class, SSLConnection)
    assert "ssl_cert_reqs" in pool.connection_kwargs
    assert pool.connection_kwargs["ssl_cert_reqs"] in (None, ssl.CERT_NONE, "none")
    connection = pool.connection_class(**pool.connection_kwargs)  # built, not connected
    assert connection.cert_reqs == ssl.CERT_NONE


def test_plain_redis_connections_set_no_certificate_option():
    client = redis_from_url("redis://127.0.0.1:6379/0")
    pool = client.connection_pool

    assert "ssl_cert_reqs" not in pool.connection_kwargs
    assert not issubclass(pool.connection_class, SSLConnection)


def test_an_account_that_is_not_a_bare_name_is_reported():
    lines = problems(env(INVOICEXPRESS_ACCOUNT="https://acme.app.invoicexpress.com"))
    assert len(lines) == 1 and "INVOICEXPRESS_ACCOUNT" in lines[0]


def test_one_tax_name_for_two_rates_is_reported():
    lines = problems(env(INVOICEXPRESS_TAX_NAMES="23=IVA23,13=IVA23"))
    assert len(lines) == 1 and "IVA23 is given for more than one rate" in lines[0]


def test_planning_settings_need_nothing_but_themselves():
    config = planning_from_env({"DOCUMENT_TYPE": "invoice", "INVALID_TAX_ID": "hold"})

    assert config["ISSUING"]["document_type"] == "invoice"
    assert config["ISSUING"]["invalid_tax_id"] == "hold"
    assert config["ISSUING"] == {**from_env(COMPLETE)["ISSUING"], "document_type": "invoice",
                                 "invalid_tax_id": "hold"}


def test_planning_settings_report_their_own_problems_only():
    with pytest.raises(ConfigError) as raised:
        planning_from_env({"DOCUMENT_TYPE": "receipt", "LOG_LEVEL": "loud"})

    message = str(raised.value)
    assert "DOCUMENT_TYPE" in message and "LOG_LEVEL" in message
    assert "DATABASE_URL" not in message


def test_a_command_line_app_without_its_settings_previews_but_serves_nothing():
    with click.Context(click.Command("flask")):  # as the flask command line loads it
        app = create_app(environ={"DOCUMENT_TYPE": "invoice"})

    assert app.config["ISSUING"]["document_type"] == "invoice"
    app.testing = False  # answer as a deployed app would, rather than raising into the test
    assert app.test_client().get("/healthz").status_code == 500
