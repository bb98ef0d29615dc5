"""The connector's Flask application factory: a short list of register steps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from config import from_env


def create_app(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment (or `environ`), then apply `overrides` (tests)."""
    app = Flask(__name__)
    app.config.from_mapping(from_env(os.environ if environ is None else environ))
    if overrides:
        app.config.update(overrides)
    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_commands(app)
    return app


def configure_logging(app: Flask) -> None:
    from connector.logs import configure

    configure(app.config["LOG_LEVEL"])


def register_extensions(app: Flask) -> None:
    from connector import models  # noqa: F401  (models must be known before migrations run)
    from connector.extensions import db, init_queue, migrate
    from connector.invoicing import init_invoicexpress

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
    init_queue(app)
    init_invoicexpress(app)


def register_blueprints(app: Flask) -> None:
    from connector import admin, health, webhooks

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(admin.bp)


def register_commands(app: Flask) -> None:
    from connector import cli

    cli.init_app(app)
