"""Engines and sessions.

SQLite is the embedded default, used with WAL (readers never wait for the
writer), the write-ahead log synced after every write transaction's commit
(an accepted request survives power loss) and foreign keys on. Writers
begin with ``BEGIN IMMEDIATE``, so two of them queue on the busy timeout
instead of failing with "database is locked" when one upgrades a read lock,
and take SQLite's one write turn in order (:mod:`tether.plugin.db.write_turn`);
readers use a second engine with plain deferred transactions, so a GET never
waits for a write.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import event, orm

from tether.common import log, metrics
from tether.plugin.db import checkpoints, write_turn
from tether.plugin.db import exceptions as db_exceptions
from tether.plugin.db.models import json_serializer

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
        help="Seconds a statement waits for a lock another transaction holds before "
        "failing (the API answers 503 with Retry-After): SQLite's busy timeout, "
        "PostgreSQL's lock_timeout.",
    ),
]


def make_engine(conf: cfg.ConfigOpts, readonly: bool = False) -> sa.Engine:
    """An engine on ``[database] connection``.

    :param readonly: for SQLite, an engine whose transactions take no write
        lock; elsewhere the same kind of engine.
    """
    url = sa.make_url(conf.database.connection)
    if url.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, conf.database.busy_timeout, immediate=not readonly)
    else:
        connect_args = {}
        if url.get_backend_name() == "postgresql":
            connect_args["options"] = f"-c lock_timeout={int(conf.database.busy_timeout * 1000)}"
        engine = sa.create_engine(
            url,
            pool_size=conf.database.pool_size,
            pool_pre_ping=True,
            connect_args=connect_args,
            json_serializer=json_serializer,
        )
    # Statements per task is what a change to the hot paths must not raise.
    statements = metrics.DB_STATEMENTS.labels("reader" if readonly else "writer")
    event.listen(engine, "before_cursor_execute", lambda *_: statements.inc())
    db_exceptions.install(engine)
    return engine


T = TypeVar("T")

#: ``session.info`` key: log lines written once the transaction commits
LOG_LINES = "tether.log-lines"


def make_sessionmaker(engine: sa.Engine) -> orm.sessionmaker[orm.Session]:
    maker = orm.sessionmaker(engine, expire_on_commit=False)
    after_commit(maker, [LOG_LINES], _write_log_lines)
    return maker


def with_arrived(session: orm.Session, items: Sequence[T], more: Callable[[], Sequence[T]] | None) -> list[T]:
    """``items``, and what ``more`` says arrived while ``session`` waited for
    the write turn, which beginning takes (it may wait for another writer):
    work that came meanwhile rides along instead of waiting for the next turn."""
    if more is None:
        return list(items)
    session.connection()
    return [*items, *more()]


def log_after_commit(
    session: orm.Session, logger: logging.Logger, message: str, *args: Any, request_id: str | None = None
) -> None:
    """Log ``message % args`` at INFO once ``session``'s transaction commits,
    under ``request_id`` (the current one by default); never if it rolls back.

    A line that says a task was claimed or finished is true only once that
    is durable, and writing it inside the transaction would hold SQLite's
    single write turn for a write to the log.
    """
    request_id = request_id or log.current_request_id()
    session.info.setdefault(LOG_LINES, []).append((logger, message, args, request_id))


def _write_log_lines(session: orm.Session) -> None:
    for logger, message, args, request_id in session.info.pop(LOG_LINES, []):
        with log.request_context(request_id):
            logger.info(message, *args)


def after_commit(
    sessionmaker: orm.sessionmaker[orm.Session], keys: Sequence[str], committed: Callable[[orm.Session], None]
) -> None:
    """Call ``committed`` once a transaction of ``sessionmaker`` is durable;
    on rollback, drop the ``session.info`` lists under ``keys`` it would have read.

    Only the outermost transaction counts: a savepoint's release is not a
    commit (the group commit runs each change in one, and drops what a
    failed one added to the lists itself).
    """

    def on_commit(session: orm.Session) -> None:
        if not session.in_nested_transaction():
            committed(session)

    def on_rollback(session: orm.Session) -> None:
        if not session.in_nested_transaction():
            for key in keys:
                session.info.pop(key, None)

    event.listen(sessionmaker, "after_commit", on_commit)
    event.listen(sessionmaker, "after_rollback", on_rollback)


def _sqlite_engine(url: sa.URL, busy_timeout: float, immediate: bool) -> sa.Engine:
    if url.database and url.database != ":memory:":
        # $state_path may start with ~ (the all-in-one's does); SQLite would
        # take it as a directory called "~" under the working directory.
        path = os.path.expanduser(url.database)
        url = url.set(database=path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout}
    on_file = url.database not in (None, "", ":memory:")
    if immediate:
        connect_args["factory"] = write_turn.connection_class(
            busy_timeout,
            write_turn.FileTurn(f"{url.database}.write-turn") if on_file else None,
            f"{url.database}-wal" if on_file else None,
        )
    engine = sa.create_engine(
        url,
        connect_args=connect_args,
        poolclass=sa.pool.StaticPool if url.database in (None, "", ":memory:") else None,
        json_serializer=json_serializer,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # A writer syncs the log itself, after its turn (see write_turn).
        cursor.execute(f"PRAGMA synchronous={'NORMAL' if immediate and on_file else 'FULL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if immediate:
            # The pipeline's checkpointer does this beside the writers.
            cursor.execute(f"PRAGMA wal_autocheckpoint={checkpoints.BACKSTOP}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        if not immediate:
            connection.exec_driver_sql("BEGIN")
            return
        dbapi_connection = connection.connection.dbapi_connection
        try:
            dbapi_connection.take_write_turn()  # type: ignore[union-attr]
        except sqlite3.OperationalError as exc:
            # As SQLite's own "locked" is translated, so callers see one error.
            raise db_exceptions.DatabaseUnavailable(detail=str(exc), retry_after=1) from exc
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except BaseException:
            dbapi_connection.end_write_turn()  # type: ignore[union-attr]
            raise

    return engine
