"""Written faster, written the same: the DB-API batches of
``tether.plugin.db.prepared`` against Core, msgspec's answers against
Starlette's."""

from __future__ import annotations

import pathlib
from typing import Any

import sqlalchemy as sa
from fastapi.responses import JSONResponse

from tether.plugin.api import views
from tether.plugin.db import prepared
from tether.plugin.db.models import Base
from tether.plugin.db.session import _sqlite_engine
from tether.plugin.tasks.lifecycle import roots
from tether.plugin.tasks.lifecycle.retries import Policy


def _engine(path: pathlib.Path) -> sa.Engine:
    engine = _sqlite_engine(sa.make_url(f"sqlite:///{path}"), busy_timeout=5.0, immediate=True)
    Base.metadata.create_all(engine)
    return engine


def _contents(engine: sa.Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as connection:
        return {
            table.name: sorted(connection.execute(sa.select(table)).all(), key=repr)
            for table in Base.metadata.sorted_tables
        }


def test_a_batch_insert_writes_the_rows_core_writes_defaults_included(tmp_path: pathlib.Path) -> None:
    attributes = {"provider": "noop", "admin_state_up": True, "description": None, "tags": ["a", "é"]}
    built = [roots.build(Policy(), "loadbalancer", "p", attributes | {"name": f"lb-{i}"}) for i in range(3)]
    # Left out, so that both take the column's Python-side default.
    defaulted = {"resources": "generation", "tasks": "attempt"}
    tables: dict[sa.Table, list[dict[str, Any]]] = {}
    for accepted in built:
        for table, row in accepted.inserts:
            left_out = defaulted.get(table.name)
            tables.setdefault(table, []).append({k: v for k, v in row.items() if k != left_out})
    by_core, by_driver = _engine(tmp_path / "core.sqlite"), _engine(tmp_path / "driver.sqlite")
    try:
        with by_core.begin() as connection:
            for table, rows in tables.items():
                connection.execute(table.insert(), [dict(row) for row in rows])
        with by_driver.begin() as connection:
            for table, rows in tables.items():
                prepared.insert(connection, table, rows)
        assert _contents(by_driver) == _contents(by_core)
        contents = _contents(by_driver)
        assert len(contents["resources"]) == len(contents["tasks"]) == len(contents["outbox"]) == 3
        assert {row.generation for row in contents["resources"]} == {1}  # type: ignore[attr-defined]
    finally:
        by_core.dispose()
        by_driver.dispose()


def test_an_answer_is_the_text_starlette_writes() -> None:
    view = {"id": "x", "name": "é ☃", "n": 1, "f": 0.5, "ok": True, "none": None, "tags": ["a", {"b": []}]}
    assert views.Answer(view, status_code=202).body == JSONResponse(view, status_code=202).body
