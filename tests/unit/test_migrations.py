"""The schema the migrations build is the schema the models describe."""

from __future__ import annotations

import json
import pathlib

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tether.plugin.db import migration
from tether.plugin.db.models import Base, Outbox
from tether.plugin.lbaas import vips


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


def test_upgrading_reserves_what_existing_listeners_serve_the_oldest_first(tmp_path: pathlib.Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    migration.upgrade(engine, "0012")
    rows = [
        ("lb-1", "loadbalancer", None, {"provider": "noop", "vip_address": "10.0.0.5"}),
        ("lb-2", "loadbalancer", None, {"provider": "noop"}),
        ("lb-3", "loadbalancer", None, {"provider": "noop", "vip_address": "10.0.0.5"}),
        ("l-1", "listener", "lb-1", {"protocol": "HTTP", "protocol_port": 80}),
        ("l-2", "listener", "lb-2", {"protocol": "UDP", "protocol_port": 53}),
        ("l-3", "listener", "lb-3", {"protocol": "TCP", "protocol_port": 80}),
    ]
    with engine.begin() as connection:
        for i, (id_, type_, parent, attributes) in enumerate(rows):
            connection.execute(
                sa.text(
                    "INSERT INTO resources (id, type, project_id, parent_id, root_id, provider, attributes, "
                    "provisioning_status, operating_status, generation, applied_generation, created_at, "
                    "updated_at) VALUES (:id, :type, 'p', :parent, :root, 'noop', :attributes, 'ACTIVE', "
                    "'ONLINE', 1, 1, :at, :at)"
                ),
                {
                    "id": id_,
                    "type": type_,
                    "parent": parent,
                    "root": parent or id_,
                    "attributes": json.dumps(attributes),
                    "at": f"2026-01-01 00:00:0{i}",
                },
            )

    migration.upgrade(engine)

    with engine.connect() as connection:
        held = dict(connection.execute(sa.text("SELECT key, resource_id FROM reservations")).all())
    # The younger of the two on 10.0.0.5:80 is left unreserved (and logged).
    assert held == {"vip 10.0.0.5 tcp 80": "l-1", "vip * udp 53": "l-2"}
    assert vips.endpoint_key("10.0.0.5", "HTTP", 80) in held and vips.endpoint_key(None, "UDP", 53) in held
