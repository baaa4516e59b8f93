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
may be submitted with ``savepoint=False``: it runs without a savepoint and
without flushing, and the rows it added are inserted with one Core
``executemany`` per table for the whole batch just before the commit. The
ORM's flush of a few objects per unit cost more than the rest of an accept.
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

LOG = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[orm.Session], Any]
#: a unit, its caller's future, and whether it runs in a savepoint
Item = tuple[Unit, "concurrent.futures.Future[Any]", bool]

#: ``session.info`` key: rows of savepoint-less units, inserted at commit
DEFERRED = "tether.deferred-inserts"

_STOP = object()


class GroupCommit:
    """Runs write units from any thread in shared transactions, at most
    ``max_batch`` units to one commit."""

    def __init__(self, sessionmaker: orm.sessionmaker[orm.Session], max_batch: int = 64) -> None:
        self.sessionmaker = sessionmaker
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(
        self, unit: Callable[[orm.Session], T], savepoint: bool = True
    ) -> concurrent.futures.Future[T]:
        """Run ``unit(session)`` in a transaction.

        :param savepoint: False for a unit that only adds rows with fresh
            primary keys: they are inserted in bulk at the commit, and the
            unit must not flush or write in any other way.

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
            batch: list[Item] = []
            stopping = item is _STOP
            if not stopping:
                batch.append(item)
            # Whatever queued while the last batch committed goes in this one.
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    continue
                batch.append(item)
            if batch:
                self._commit(batch)
            if stopping and self._queue.empty():
                return

    def _commit(self, batch: list[Item]) -> None:
        # A caller that gave up before its unit ran (an API client that went
        # away) cancelled it; once running, a unit commits or fails with its batch.
        batch = [item for item in batch if item[1].set_running_or_notify_cancel()]
        if not batch:
            return
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            with self.sessionmaker.begin() as session:
                for unit, future, savepoint in batch:
                    run = _run_unit if savepoint else _run_deferred
                    outcomes.append((future, *run(session, unit)))
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
    """Run one unit that only adds rows: they leave the session as plain
    rows for :func:`_insert_deferred`, so a failure has nothing to undo in
    the database."""
    marks = _marks(session)
    before = set(session.new)
    try:
        with session.no_autoflush:
            result = unit(session)
    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
        for obj in [o for o in session.new if o not in before]:
            session.expunge(obj)
        _drop_since(session, marks)
        return None, exc
    rows = session.info.setdefault(DEFERRED, [])
    for obj in [o for o in session.new if o not in before]:
        state = sa.inspect(obj)
        columns = _columns(state.mapper)
        given = state.dict
        # Unset and None alike become NULL (or the column's default), as
        # the ORM's insert makes them.
        values = {column: given[key] for key, column in columns if given.get(key) is not None}
        rows.append((state.mapper.local_table, values))
        session.expunge(obj)
    return result, None


@functools.cache
def _columns(mapper: orm.Mapper[Any]) -> tuple[tuple[str, str], ...]:
    """(attribute, column) names of ``mapper``'s columns."""
    return tuple((prop.key, prop.columns[0].key) for prop in mapper.column_attrs)


def _insert_deferred(session: orm.Session) -> None:
    """One ``executemany`` per table and set of columns, parents first."""
    rows = session.info.pop(DEFERRED, [])
    if not rows:
        return
    groups: dict[tuple[sa.Table, tuple[str, ...]], list[dict[str, Any]]] = {}
    for table, values in rows:
        groups.setdefault((table, tuple(values)), []).append(values)
    order = {table: i for i, table in enumerate(next(iter(groups))[0].metadata.sorted_tables)}
    for (table, _columns), params in sorted(groups.items(), key=lambda group: order[group[0][0]]):
        session.execute(sa.insert(table), params)


def _marks(session: orm.Session) -> dict[str, int]:
    return {key: len(value) for key, value in session.info.items() if isinstance(value, list)}


def _drop_since(session: orm.Session, marks: dict[str, int]) -> None:
    """Forget what a failed unit queued for after the commit."""
    for key in [k for k, v in session.info.items() if isinstance(v, list)]:
        if key in marks:
            del session.info[key][marks[key] :]
        else:
            del session.info[key]
