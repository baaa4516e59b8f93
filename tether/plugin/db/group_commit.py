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
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import orm

LOG = logging.getLogger(__name__)

T = TypeVar("T")
Unit = Callable[[orm.Session], Any]

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

    def submit(self, unit: Callable[[orm.Session], T]) -> concurrent.futures.Future[T]:
        """Run ``unit(session)`` in a transaction.

        :returns: a future of what ``unit`` returned, done once it is
            committed; or of what ``unit`` raised (nothing of it is
            committed), or of what the commit raised (nothing of the batch is
            committed).
        """
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        # The unit runs in the caller's context: its log lines carry the request id.
        context = contextvars.copy_context()
        self._ensure_started()
        self._queue.put((lambda session: context.run(unit, session), future))
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
            batch: list[tuple[Unit, concurrent.futures.Future[Any]]] = []
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

    def _commit(self, batch: list[tuple[Unit, concurrent.futures.Future[Any]]]) -> None:
        # A caller that gave up before its unit ran (an API client that went
        # away) cancelled it; once running, a unit commits or fails with its batch.
        batch = [(unit, future) for unit, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        outcomes: list[tuple[concurrent.futures.Future[Any], Any, BaseException | None]] = []
        try:
            with self.sessionmaker.begin() as session:
                for unit, future in batch:
                    outcomes.append((future, *_run_unit(session, unit)))
        except BaseException as exc:  # noqa: BLE001 - the writer thread must outlive any batch
            if not isinstance(exc, Exception):
                LOG.error("group commit of %d unit(s) interrupted: %r", len(batch), exc)
            for _unit, future in batch:
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
    marks = {key: len(value) for key, value in session.info.items() if isinstance(value, list)}
    savepoint = session.begin_nested()
    try:
        result = unit(session)
        savepoint.commit()
    except Exception as exc:  # noqa: BLE001 - handed to the unit's caller
        # Also after a failed flush, which leaves the savepoint inactive:
        # the session is usable again only once it is rolled back.
        savepoint.rollback()
        for key in [k for k, v in session.info.items() if isinstance(v, list)]:
            if key in marks:
                del session.info[key][marks[key] :]
            else:
                del session.info[key]
        return None, exc
    return result, None
