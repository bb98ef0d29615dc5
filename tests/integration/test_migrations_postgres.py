"""On the real PostgreSQL, `flask db upgrade` builds exactly the schema the models describe."""

from __future__ import annotations

import fakeredis
import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from connector import create_app
from connector.extensions import db
from tests.conftest import settings
from tests.test_migrations import current_revision, restore_logging, script_directory, table_names

pytestmark = pytest.mark.usefixtures("restore_logging")
__all__ = ["restore_logging"]  # the fixture, imported so that this module can use it


def schema_differences() -> list:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, db.metadata)


@pytest.fixture
def empty_app(clean_db):
    app = create_app(
        overrides={"REDIS_CONNECTION": fakeredis.FakeStrictRedis()},
        environ=settings(DATABASE_URL=clean_db),
    )
    with app.app_context():
        yield app
        db.session.remove()
        db.engine.dispose()


def test_upgrade_builds_exactly_the_schema_of_the_models(empty_app):
    assert db.engine.dialect.name == "postgresql"
    assert table_names() == set()

    flask_migrate.upgrade()

    assert current_revision() == script_directory().get_current_head()
    assert table_names() == set(db.metadata.tables) | {"alembic_version"}
    assert schema_differences() == []


def test_upgrade_keeps_the_named_constraints(empty_app):
    flask_migrate.upgrade()
    inspector = sa.inspect(db.engine)

    for table in db.metadata.sorted_tables:
        expected_checks = {c.name for c in table.constraints if isinstance(c, sa.CheckConstraint)}
        expected_uniques = {c.name for c in table.constraints if isinstance(c, sa.UniqueConstraint)}
        assert expected_checks <= {c["name"] for c in inspector.get_check_constraints(table.name)}, table.name
        assert expected_uniques == {c["name"] for c in inspector.get_unique_constraints(table.name)}, table.name
        assert inspector.get_pk_constraint(table.name)["name"] == f"pk_{table.name}"


def test_timestamps_keep_their_time_zone(empty_app):
    flask_migrate.upgrade()
    columns = {c["name"]: c["type"] for c in sa.inspect(db.engine).get_columns("documents")}

    for name in ("created_at", "updated_at", "locked_until", "next_attempt_at"):
        assert columns[name].timezone is True, name


def test_downgrade_to_base_then_upgrade_again(empty_app):
    flask_migrate.upgrade()

    flask_migrate.downgrade(revision="base")

    assert table_names() <= {"alembic_version"}
    assert current_revision() is None

    flask_migrate.upgrade()

    assert schema_differences() == []
