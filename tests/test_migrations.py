"""The migrations are the schema: one head, and `flask db upgrade` builds exactly what the models describe."""

from __future__ import annotations

import logging
from pathlib import Path

import fakeredis
import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from connector import create_app
from connector.extensions import db
from tests.conftest import settings

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"


def script_directory() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config)


def schema_differences() -> list:
    """What autogenerate would write to make the database match the models (empty when they match)."""
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, db.metadata)


def current_revision() -> str | None:
    with db.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def table_names() -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


@pytest.fixture
def restore_logging():
    """migrations/env.py may run logging.fileConfig, which would silence other tests' loggers: put them back."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {
        name: (logger.disabled, logger.level, list(logger.handlers), logger.propagate)
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, logger in logging.Logger.manager.loggerDict.items():
        if not isinstance(logger, logging.Logger):
            continue
        if name in saved:
            logger.disabled, logger.level, handlers, logger.propagate = saved[name]
            logger.handlers[:] = handlers
        else:
            logger.disabled = False


@pytest.fixture
def empty_app(tmp_path, restore_logging):
    """The app on an empty SQLite file (no create_all: only migrations build the schema)."""
    app = create_app(
        overrides={"REDIS_CONNECTION": fakeredis.FakeStrictRedis()},
        environ=settings(DATABASE_URL=f"sqlite:///{tmp_path / 'migrated.db'}"),
    )
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_there_is_exactly_one_head():
    heads = script_directory().get_heads()

    assert len(heads) == 1, heads


def test_every_revision_has_a_message_and_a_single_line_of_history():
    scripts = script_directory()
    revisions = list(scripts.walk_revisions())

    assert revisions
    assert [r for r in revisions if r.down_revision is None] == [revisions[-1]]  # one base
    for revision in revisions:
        assert (revision.doc or "").strip(), f"revision {revision.revision} has no message"


def test_the_app_uses_the_migrations_of_the_repository(empty_app):
    assert Path(empty_app.extensions["migrate"].directory).resolve() == MIGRATIONS


def test_upgrade_builds_exactly_the_schema_of_the_models(empty_app):
    assert table_names() == set()

    flask_migrate.upgrade()

    assert current_revision() == script_directory().get_current_head()
    assert table_names() == set(db.metadata.tables) | {"alembic_version"}
    assert schema_differences() == []


def test_upgrade_keeps_the_named_check_constraints(empty_app):
    flask_migrate.upgrade()
    inspector = sa.inspect(db.engine)

    for table in db.metadata.sorted_tables:
        expected = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        found = {c["name"] for c in inspector.get_check_constraints(table.name)}
        assert expected <= found, table.name


def test_downgrade_to_base_then_upgrade_again(empty_app):
    flask_migrate.upgrade()

    flask_migrate.downgrade(revision="base")

    assert table_names() <= {"alembic_version"}
    assert current_revision() is None

    flask_migrate.upgrade()

    assert current_revision() == script_directory().get_current_head()
    assert schema_differences() == []


def test_upgrade_twice_changes_nothing(empty_app):
    flask_migrate.upgrade()
    flask_migrate.upgrade()

    assert schema_differences() == []
