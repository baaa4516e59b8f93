"""Engines and sessions.

SQLite is the embedded default, used with WAL (readers never wait for the
writer), the write-ahead log synced after every write transaction's commit
(an accepted request survives power loss) and foreign keys on. Writers
begin with ``BEGIN IMMEDIATE``, so two of them queue on the busy timeout
instead of failing with "database is locked" when one upgrades a read lock;
readers use a second engine with plain deferred transactions, so a GET never
waits for a write.

The write turn is taken before ``BEGIN IMMEDIATE``, first among this
process's threads (a Python lock) and then among processes (a ``flock`` on a
file beside the database), so that a plugin's API and pipeline processes
hand it over as soon as it is free rather than when SQLite's busy handler
next looks.

SQLite's ``synchronous=FULL`` syncs the write-ahead log inside the commit,
while the writer holds the only write turn: at half load a quarter of each
turn went to waiting for the disk. Writers run with ``synchronous=NORMAL``
instead (the log is written, not synced, at commit; checkpoints still sync)
and sync the log themselves once they have handed the turn on, before the
commit returns: before a ``202``, a claim's answer or a result's ack. The
log is appended to in order, so a sync makes every commit before it durable
too.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import event, orm

from tether.common import log, metrics
from tether.plugin.db import checkpoints
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
        connect_args["factory"] = _serialized_writes(
            busy_timeout,
            FileTurn(f"{url.database}.write-turn") if on_file else None,
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
        # A writer syncs the log itself, after its turn (see above).
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


def _serialized_writes(
    busy_timeout: float, across: FileTurn | None, log_path: str | None
) -> type[sqlite3.Connection]:
    """A connection class whose write transactions take turns, and sync the
    write-ahead log at ``log_path`` once they have committed and handed the
    turn on.

    SQLite admits one writer at a time and makes the others wait in its busy
    handler, which sleeps 1, 2, 5, 10... ms between looks: under concurrent
    writers most of their time goes to sleeping after the lock is free. A
    Python lock hands the turn over as the last writer of this process
    commits, and ``across`` as the last writer of another process does.
    """
    turn = threading.Lock()

    class Connection(sqlite3.Connection):
        _has_turn = False

        def take_write_turn(self) -> None:
            # Bounded like SQLite's own wait, and failing as it does.
            deadline = time.monotonic() + busy_timeout
            if not turn.acquire(timeout=busy_timeout):
                raise sqlite3.OperationalError("database is locked")
            if across is not None and not across.acquire(max(deadline - time.monotonic(), 0.0)):
                turn.release()
                raise sqlite3.OperationalError("database is locked")
            self._has_turn = True

        def end_write_turn(self) -> None:
            if self._has_turn:
                self._has_turn = False
                if across is not None:
                    across.release()
                turn.release()

        def commit(self) -> None:
            writing = self._has_turn
            try:
                super().commit()
            finally:
                self.end_write_turn()
            # Every write transaction, as no change count shows DDL; with
            # nothing new in the log the sync costs a system call.
            if writing and log_path is not None:
                sync_log(log_path)

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.end_write_turn()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.end_write_turn()

    return Connection


def sync_log(path: str) -> None:
    """Make what has been written to the write-ahead log at ``path`` durable.

    The file is opened anew each time: SQLite deletes the log when the last
    connection closes, and a descriptor kept open would sync the deleted one.
    A log that is gone was checkpointed into the database first, and a
    checkpoint syncs the database.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class FileTurn:
    """An exclusive ``flock`` on ``path``, taken with a timeout.

    The lock belongs to this process (its open file), so the thread that
    takes it need not be the one that blocks for it: a free lock is taken at
    once; a held one is waited for by a helper thread, blocked in the kernel
    until the holder lets go (no polling), while the caller waits at most
    its timeout. A turn the helper gets for a caller that gave up is handed
    to the next caller, or let go at once if there is none. The kernel
    releases the lock of a process that dies holding it.

    Callers take turns among themselves first (one at a time per process).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._cond = threading.Condition()
        self._held = False
        self._callers = 0
        self._fetching = False
        self._helper: threading.Thread | None = None

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._fetching:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._fetching = True
                    if self._helper is None:
                        self._helper = threading.Thread(
                            target=self._fetch, name="sqlite-write-turn", daemon=True
                        )
                        self._helper.start()
                    self._cond.notify_all()
                else:
                    self._held = True
                    return True
            self._callers += 1
            try:
                return self._cond.wait_for(lambda: self._held, timeout)
            finally:
                self._callers -= 1

    def release(self) -> None:
        with self._cond:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _fetch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._fetching)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._cond:
                self._fetching = False
                if self._callers:
                    self._held = True
                    self._cond.notify_all()
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
