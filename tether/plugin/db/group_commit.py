"""Group commit: the writes of concurrent requests share one transaction.

An accepted change is durable before its ``202`` (DESIGN.md guarantee 1), so
each used to cost a transaction of its own: its turn at the single SQLite
writer and an fsync. :class:`GroupCommit` gives the write units of many
request threads to one writer thread, which runs all that are waiting in one
transaction, each inside a savepoint, and commits once. A unit that raises
rolls back its savepoint only and its caller gets the exception; the others
commit. No caller is answered before the commit that holds its rows (or a
failed commit, which fails every unit of the batch).

PostgreSQL gets the same: one round of commit and WAL flush for the batch.

A unit that only adds new rows, and cannot collide with anything but its
own fresh primary keys (a new root resource, its task and its outbox row),
may be submitted with ``savepoint=False``: it runs without a savepoint, hands
its rows to :func:`insert` as plain mappings, and they are inserted with one
``executemany`` per table for the whole batch just before the commit, through
the DB-API (:mod:`tether.plugin.db.prepared`). Building, flushing and
expunging a few ORM objects per unit cost more than the rest of an accept,
and Core's processing of each row's parameters a tenth of the API process.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import functools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import orm

from tether.plugin.db import prepared

LOG = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[orm.Session], Any]
#: a unit, its caller's future, and whether it runs in a savepoint
Item = tuple[Unit, "concurrent.futures.Future[Any]", bool]

#: ``session.info`` key: rows of savepoint-less units, inserted at commit
DEFERRED = "tether.deferred-inserts"


def insert(session: orm.Session, table: sa.Table, row: dict[str, Any]) -> None:
    """Insert ``row`` into ``table`` with the batch's bulk insert; for units
    submitted with ``savepoint=False``. Give every row of a table the same
    keys (None for NULL): rows with other keys take a statement of their own.

    On SQLite, a row of a table whose key ``AUTOINCREMENT`` assigns is given
    its ``id`` by the insert."""
    session.info.setdefault(DEFERRED, []).append((table, row))


_STOP = object()


class GroupCommit:
    """Runs write units from any thread in shared transactions, at most
    ``max_batch`` units to one commit."""

    def __init__(
        self, sessionmaker: orm.sessionmaker[orm.Session], max_batch: int = 64, wait: float = 0.0
    ) -> None:
        """:param wait: seconds a unit that arrives alone waits for a second
        one before they are committed: two accepts for the price of one
        transaction under moderate load, at most ``wait`` later."""
        self.sessionmaker = sessionmaker
        self.max_batch = max_batch
        self.wait = wait
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(
        self, unit: Callable[[orm.Session], T], savepoint: bool = True
    ) -> concurrent.futures.Future[T]:
        """Run ``unit(session)`` in a transaction.

        :param savepoint: False for a unit that only adds rows with fresh
            primary keys, through :func:`insert`: they are inserted in bulk
            at the commit, and the unit must not write in any other way.

        :returns: a future of what ``unit`` returned, done once it is
            committed; or of what ``unit`` raised (nothing of it is
            committed), or of what the commit raised (nothing of the batch is
            committed).
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # The unit runs in the caller's context: its log lines carry the request id.
        context = contextvars.copy_context()
        self._ensure_started()
        self._queue.put((lambda session: context.run(unit, session), future, savepoint))
        return future

    def run(self, unit: Callable[[orm.Session], T]) -> T:
        """:meth:`submit` and wait."""
        return self.submit(unit).result()

    def stop(self) -> None:
        """Finish the units already handed in, then end the writer thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()

    def _ensure_started(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="group-commit", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            batch = [item]
            if self.wait > 0 and self._queue.empty():
                # A unit alone waits a moment for company.
                batch += self._queued(1, self.wait)
            # Whatever queued while the last batch committed goes in this one.
            batch += self._queued(self.max_batch - len(batch))
            self._commit(batch)

    def _queued(self, room: int, wait: float = 0.0) -> list[Item]:
        """Units waiting, up to ``room``; ``wait`` seconds for the first of them."""
        taken: list[Item] = []
        while len(taken) < room:
            try:
                item = self._queue.get(timeout=wait) if wait and not taken else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                # Behind the units handed in before it: they are committed first.
                self._queue.put(_STOP)
                break
            taken.append(item)
        return taken

    def _commit(self, batch: list[Item]) -> None:
        # A caller that gave up before its unit ran (an API client that went
        # away) cancelled it; once running, a unit commits or fails with its batch.
        batch = _running(batch)
        if not batch:
            return
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            with self.sessionmaker.begin() as session:
                # Units without a savepoint write nothing yet: they run before
                # the write turn is taken, the others take it.
                outcomes += _run_units(session, batch)
                session.connection()
                # Taking the turn may have waited for another writer: what
                # queued meanwhile rides along.
                late = _running(self._queued(self.max_batch - len(batch)))
                batch += late
                outcomes += _run_units(session, late)
                _insert_deferred(session)
        except BaseException as exc:  # noqa: BLE001 - the writer thread must outlive any batch
            if not isinstance(exc, Exception):
                LOG.error("group commit of %d unit(s) interrupted: %r", len(batch), exc)
            for _unit, future, _savepoint in batch:
                future.set_exception(exc)
            return
        for future, result, error in outcomes:
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)


def _run_units(
    session: orm.Session, batch: list[Item]
) -> list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]]:
    return [
        (future, *(_run_unit if savepoint else _run_deferred)(session, unit))
        for unit, future, savepoint in batch
    ]


def _running(batch: list[Item]) -> list[Item]:
    return [item for item in batch if item[1].set_running_or_notify_cancel()]


def _run_unit(session: orm.Session, unit: Unit) -> tuple[Any, BaseException | None]:
    """Run one unit in a savepoint; its failure undoes its own work only.

    Post-commit work (waiters to wake, notifications, metrics) is queued in
    ``session.info`` lists; what a failed unit appended there is dropped with
    its savepoint. A failure that leaves the transaction unusable (the
    savepoint cannot be rolled back) propagates and fails the batch.
    """
    marks = _marks(session)
    savepoint = session.begin_nested()
    try:
        result = unit(session)
        savepoint.commit()
    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
        # Also after a failed flush, which leaves the savepoint inactive:
        # the session is usable again only once it is rolled back.
        savepoint.rollback()
        _drop_since(session, marks)
        return None, exc
    return result, None


def _run_deferred(session: orm.Session, unit: Unit) -> tuple[Any, BaseException | None]:
    """Run one unit that only adds rows through :func:`insert`: they wait in
    ``session.info`` for the commit, so a failure has nothing to undo in
    the database."""
    marks = _marks(session)
    try:
        with session.no_autoflush:
            result = unit(session)
    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
        _drop_since(session, marks)
        return None, exc
    return result, None


def _insert_deferred(session: orm.Session) -> None:
    """One ``executemany`` per table and set of columns, parents first."""
    rows = session.info.pop(DEFERRED, [])
    if not rows:
        return
    groups: dict[tuple[sa.Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    for table, values in rows:
        groups.setdefault((table, tuple(values)), []).append(values)
    order = _table_order(next(iter(groups))[0].metadata)
    connection = session.connection()
    for (table, _columns), params in sorted(groups.items(), key=lambda group: order[group[0][0]]):
        prepared.insert(connection, table, params)
        if connection.dialect.name == "sqlite" and table.kwargs.get("sqlite_autoincrement"):
            _number(connection, table, params)


def _number(connection: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """Write the ids SQLite gave ``rows`` into them. The writer holds the
    database's only write turn and ``AUTOINCREMENT`` counts up from the
    largest id it ever gave, so the rows of one statement got the last ones."""
    (key,) = table.primary_key.columns
    if key.name in rows[0]:
        return
    last = connection.exec_driver_sql(
        "SELECT seq FROM sqlite_sequence WHERE name = ?", (table.name,)
    ).scalar_one()
    first = last - len(rows) + 1
    for offset, row in enumerate(rows):
        row[key.name] = first + offset


@functools.cache
def _table_order(metadata: sa.MetaData) -> dict[sa.Table, int]:
    """Tables by their place in ``metadata``'s dependency order (parents first)."""
    return {table: i for i, table in enumerate(metadata.sorted_tables)}


def _marks(session: orm.Session) -> dict[str, int]:
    return {key: len(value) for key, value in session.info.items() if isinstance(value, list)}


def _drop_since(session: orm.Session, marks: dict[str, int]) -> None:
    """Forget what a failed unit queued for after the commit."""
    for key in [k for k, v in session.info.items() if isinstance(v, list)]:
        if key in marks:
            del session.info[key][marks[key] :]
        else:
            del session.info[key]
