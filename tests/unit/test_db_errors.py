"""Database errors are tether's own from the engine up, and say nothing of the database to clients."""

from __future__ import annotations

import pathlib
import socket
import sqlite3

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import make_plugin
from tether.common.exceptions import Conflict, ServiceUnavailable
from tether.plugin.db import session as db_session
from tether.plugin.db.exceptions import DatabaseError, DatabaseUnavailable, DuplicateEntry
from tether.plugin.service import Plugin


@pytest.fixture
def engine(conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> sa.Engine:
    conf.set_override("connection", f"sqlite:///{tmp_path / 'db.sqlite'}", group="database")
    conf.set_override("busy_timeout", 0.1, group="database")
    engine = db_session.make_engine(conf)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (text TEXT UNIQUE)")
    return engine


def test_a_unique_violation_is_a_conflict(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO notes VALUES ('a')")
    with pytest.raises(DuplicateEntry) as raised, engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO notes VALUES ('a')")
    assert isinstance(raised.value, Conflict) and raised.value.status == 409
    assert raised.value.detail == "UNIQUE constraint failed: notes.text"
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)


def test_a_database_locked_by_another_process_is_unavailable_for_now(
    engine: sa.Engine, tmp_path: pathlib.Path
) -> None:
    other = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process's writer, outside tether's write turn
    try:
        with pytest.raises(DatabaseUnavailable) as raised, engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO notes VALUES ('b')")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert isinstance(raised.value, ServiceUnavailable) and raised.value.status == 503
    assert raised.value.kwargs["retry_after"] == 1
    assert raised.value.detail == "database is locked"
    # Once it is free, the same write goes through.
    with engine.begin() as connection:
        connection.exec_driver_sql("INSERT INTO notes VALUES ('b')")


def test_an_unreachable_postgresql_is_unavailable(conf: cfg.ConfigOpts) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf.set_override(
        "connection", f"postgresql+psycopg://tether:pw@127.0.0.1:{port}/tether", group="database"
    )
    engine = db_session.make_engine(conf)
    with pytest.raises(DatabaseUnavailable) as raised, engine.connect():
        pass
    assert "127.0.0.1" not in raised.value.msg and "pw" not in raised.value.msg
    assert "127.0.0.1" in raised.value.detail


def test_a_statement_the_database_refuses_is_a_database_error(engine: sa.Engine) -> None:
    with pytest.raises(DatabaseError) as raised, engine.begin() as connection:
        connection.exec_driver_sql("SELECT * FROM no_such_table")
    assert type(raised.value) is DatabaseError and raised.value.status == 500
    assert raised.value.detail == "no such table: no_such_table"
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)  # as SQLite says of a lock too


def test_a_write_the_locked_database_refuses_answers_503_with_retry_after_and_no_detail(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path
) -> None:
    conf.set_override("busy_timeout", 0.1, group="database")
    client = TestClient(make_plugin(conf).app)
    other = sqlite3.connect(tmp_path / "tether.sqlite", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        response = client.post("/v1/loadbalancers", json={"provider": "noop"})
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "1"
    error = response.json()["error"]
    assert (error["type"], error["message"]) == (
        "DatabaseUnavailable",
        "The database is busy or unreachable; retry in a moment.",
    )
    assert client.post("/v1/loadbalancers", json={"provider": "noop"}).status_code == 202


def test_a_plugin_starts_while_another_writer_holds_the_database(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path
) -> None:
    conf.set_override("busy_timeout", 0.1, group="database")
    make_plugin(conf).stop()  # the schema, migrated
    other = sqlite3.connect(tmp_path / "tether.sqlite", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # a long migration, or an administrator's session
    try:
        plugin = Plugin(conf)  # the schema check reads; it must not wait for the writer
    finally:
        other.execute("ROLLBACK")
        other.close()
    plugin.stop()
