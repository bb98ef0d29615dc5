"""The connector's Flask application factory: a short list of register steps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from config.settings import ConfigError, from_env, planning_from_env


def create_app(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from the environment (or `environ`), then apply `overrides` (tests)."""
    environ = os.environ if environ is None else environ
    try:
        config = from_env(environ)
    except ConfigError as error:
        # The web server refuses to start; a command line may still preview an order.
        if click.get_current_context(silent=True) is None:
            raise
        return create_planning_app(error, environ)
    app = Flask(__name__)
    app.config.from_mapping(config)
    if overrides:
        app.config.update(overrides)
    configure_logging(app)
    register_extensions(app)
    register_blueprints(app)
    register_commands(app)
    register_observability(app)
    if click.get_current_context(silent=True) is None:
        check_stores(app)  # the web server; the worker checks when its command starts
    return app


def check_stores(app: Flask) -> None:
    """Refuse to start when a store cannot be served (its secrets unreadable, no IX account, nothing enabled)."""
    from connector.extensions import db
    from connector.stores import startup_problems

    with app.app_context():
        problems = startup_problems()
        db.engine.dispose()  # no connection of the check's outlives it (a server may fork after)
    if problems:
        raise ConfigError("The connector cannot start:\n" + "\n".join(f"- {p}" for p in problems))


def configure_logging(app: Flask) -> None:
    from connector.logs import configure

    configure(app.config["LOG_LEVEL"], app.config.get("LOG_FORMAT", "text"))


def register_extensions(app: Flask) -> None:
    from connector import models  # noqa: F401  (models must be known before migrations run)
    from connector.extensions import db, init_queue, migrate
    from connector.issuing import init_invoicexpress

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


def register_observability(app: Flask) -> None:
    """/metrics and its counters; error reports to Sentry (web and worker) when SENTRY_DSN is set."""
    from connector import error_reports, metrics

    metrics.init_app(app)
    error_reports.init_app(app)


def create_planning_app(error: ConfigError, environ: Mapping[str, str]) -> Flask:
    """The app `flask preview` needs when the environment cannot run the connector: planning settings
    only. Every other command fails with what the environment lacks."""
    from connector import cli

    app = Flask(__name__)
    app.config.from_mapping(planning_from_env(environ))
    configure_logging(app)
    app.cli = PlanningCommands(error, {"preview": cli.preview_command})

    @app.before_request
    def refuse():  # `flask run` loads this app too; it must not serve without its settings
        raise error

    return app


class PlanningCommands(AppGroup):
    """The commands of an app without its full settings: those given, and an error for any other."""

    def __init__(self, error: ConfigError, commands: dict[str, click.Command]) -> None:
        super().__init__(commands=commands)
        self.error = error

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            raise click.ClickException(str(self.error))
        return command
