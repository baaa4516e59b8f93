"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

import pathlib

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tether.plugin.db import migration
from tether.plugin.db.models import Base, Outbox


def _migrated(tmp_path: pathlib.Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    migration.upgrade(engine)
    return engine


def test_migrations_build_exactly_what_the_models_describe(tmp_path: pathlib.Path) -> None:
    engine = _migrated(tmp_path)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
    assert migration.is_current(engine)


def test_outbox_ids_are_never_reused_after_a_delete(tmp_path: pathlib.Path) -> None:
    # The relay deletes what it published by id; had a claim deleted that row
    # first, a reused id would make the relay delete a newer, unsent row.
    engine = _migrated(tmp_path)
    row = {"task_id": "t", "exchange": "x", "routing_key": "r", "payload": "{}"}
    with engine.begin() as connection:
        first = connection.execute(sa.insert(Outbox).values(**row)).inserted_primary_key[0]
        connection.execute(sa.delete(Outbox))
        second = connection.execute(sa.insert(Outbox).values(**row)).inserted_primary_key[0]
    assert second > first
