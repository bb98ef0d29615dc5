"""Start-up refuses, in words, a deployment whose stores cannot be served; it never waits for the first webhook."""

from __future__ import annotations

import click
import pytest

from config.settings import ConfigError
from connector import create_app, stores
from connector.extensions import db
from connector.models import Store
from tests.conftest import settings, tables_of

OLD_KEY = "the-old-secret-key-0123456789"
NEW_KEY = "the-new-secret-key-9876543210"
SHOP_SECRET = "alpha-own-webhook-secret"


def a_store_encrypted_under(path, key: str) -> None:
    """A database holding one store whose secrets were encrypted with `key`."""
    app = create_app(environ=settings(DATABASE_URL=f"sqlite:///{path}", SECRET_KEY=key))
    with tables_of(app, drop=False):
        db.session.add(Store(platform="shopify", domain="alpha.myshopify.com", settings={},
                             secrets=stores.encrypt({"shopify_webhook_secret": SHOP_SECRET})))
        db.session.commit()


def test_the_worker_refuses_to_start_naming_the_store_whose_secrets_the_key_cannot_read(tmp_path):
    path = tmp_path / "connector.db"
    a_store_encrypted_under(path, OLD_KEY)
    with click.Context(click.Command("flask")):  # as `flask --app wsgi worker` makes it: the web's check is off
        app = create_app(environ=settings(DATABASE_URL=f"sqlite:///{path}", SECRET_KEY=NEW_KEY))

    with app.app_context():
        result = app.test_cli_runner().invoke(args=["worker", "--burst"])

    assert result.exit_code == 1
    assert "alpha.myshopify.com" in result.output and "SECRET_KEY" in result.output
    assert "Traceback" not in result.output and SHOP_SECRET not in result.output


def test_the_web_refuses_to_start_without_the_key_and_starts_with_old_and_new(tmp_path):
    path = tmp_path / "connector.db"
    a_store_encrypted_under(path, OLD_KEY)

    with pytest.raises(ConfigError, match="alpha.myshopify.com"):
        create_app(environ=settings(DATABASE_URL=f"sqlite:///{path}"))  # no SECRET_KEY at all
    app = create_app(environ=settings(DATABASE_URL=f"sqlite:///{path}", SECRET_KEY=f"{NEW_KEY},{OLD_KEY}"))
    with app.app_context():
        store = db.session.query(Store).one()
        assert stores.webhook_secrets(store, "shopify") == (SHOP_SECRET,)


def test_without_any_webhook_secret_a_store_of_its_own_is_what_lets_it_start(tmp_path):
    path = tmp_path / "connector.db"
    environ = settings(DATABASE_URL=f"sqlite:///{path}", SECRET_KEY=OLD_KEY, SHOPIFY_WEBHOOK_SECRET="")

    with pytest.raises(ConfigError, match="no shop platform is enabled"):
        create_app(environ=environ)
    a_store_encrypted_under(path, OLD_KEY)
    assert create_app(environ=environ) is not None
