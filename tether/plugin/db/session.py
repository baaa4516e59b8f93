"""Engines and sessions.

SQLite is the embedded default, used with WAL (readers never wait for the
writer), full fsync on commit (an accepted request survives power loss) and
foreign keys on. Writers begin with ``BEGIN IMMEDIATE``, so two of them queue
on the busy timeout instead of failing with "database is locked" when one
upgrades a read lock; readers use a second engine with plain deferred
transactions, so a GET never waits for a write.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import event, orm

GROUP = "database"
OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "connection",
        secret=True,
        default="sqlite:///$state_path/tether.sqlite",
        help="SQLAlchemy URL of the plugin's database: sqlite:///PATH on one "
        "machine, postgresql+psycopg://USER:PASS@HOST/DB to scale out.",
    ),
    cfg.IntOpt("pool_size", default=10, min=1, help="Connections kept open (not SQLite)."),
    cfg.FloatOpt(
        "busy_timeout",
        default=30.0,
        min=0,
        help="Seconds an SQLite writer waits for another to finish before failing.",
    ),
]


def make_engine(conf: cfg.ConfigOpts, readonly: bool = False) -> sa.Engine:
    """An engine on ``[database] connection``.

    :param readonly: for SQLite, an engine whose transactions take no write
        lock; elsewhere the same kind of engine.
    """
    url = sa.make_url(conf.database.connection)
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, conf.database.busy_timeout, immediate=not readonly)
    return sa.create_engine(url, pool_size=conf.database.pool_size, pool_pre_ping=True)


def make_sessionmaker(engine: sa.Engine) -> orm.sessionmaker[orm.Session]:
    return orm.sessionmaker(engine, expire_on_commit=False)


def _sqlite_engine(url: sa.URL, busy_timeout: float, immediate: bool) -> sa.Engine:
    if url.database and url.database != ":memory:":
        # $state_path may start with ~ (the all-in-one's does); SQLite would
        # take it as a directory called "~" under the working directory.
        path = os.path.expanduser(url.database)
        url = url.set(database=path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": busy_timeout},
        poolclass=sa.pool.StaticPool if url.database in (None, "", ":memory:") else None,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine
