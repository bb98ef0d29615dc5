"""The extension objects (database, migrations) and the Redis queue, created here and bound in create_app."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, current_app
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from redis import Redis
from rq import Queue
from sqlalchemy.orm import DeclarativeBase

QUEUE_NAME = "connector"


class Base(DeclarativeBase):
    # Predictable constraint names, so Alembic migrations can name what they alter.
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


def redis_from_url(url: str, **options) -> Redis:
    """A Redis client for `url`. Heroku's rediss:// uses a self-signed certificate, hence no verification."""
    options = {"socket_connect_timeout": 2, "health_check_interval": 30, **options}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = None
    return Redis.from_url(url, **options)


def init_queue(app: Flask) -> None:
    """Attach the Redis connection and the job queue to the app (no connection is opened yet)."""
    connection = app.config.get("REDIS_CONNECTION") or redis_from_url(app.config["REDIS_URL"])
    app.extensions["queue"] = Queue(QUEUE_NAME, connection=connection)


def get_queue() -> Queue:
    """The job queue of the current app."""
    return current_app.extensions["queue"]
