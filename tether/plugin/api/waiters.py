"""Waking API requests that wait for a task to finish.

``GET /v1/tasks/{id}?wait=N`` must return the moment the task is terminal
without a thread or a database poll per waiter. Each waiter is a future on
the API's event loop, registered by task id; whenever a transaction that
finished tasks commits (SQLAlchemy's ``after_commit``), those tasks' waiters
are woken from whatever thread committed it. Finished tasks are collected by
:mod:`tether.plugin.tasks.lifecycle` in ``session.info``.

The results recorder, the reaper and the API of one plugin process share
that wake-up; a pipeline in a process of its own forwards it to the API's
(:mod:`tether.plugin.link`). Plugin replicas on PostgreSQL also hear each other's: the
transaction that finishes tasks sends their ids with ``NOTIFY``, which
PostgreSQL delivers to every listening session when, and only if, it
commits, and each plugin listens on a connection of its own
(:class:`FinishedListener`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, orm

from tether.common import backoff, metrics
from tether.plugin.db.session import after_commit
from tether.plugin.tasks.lifecycle import FINISHED, FINISHED_METRICS

LOG = logging.getLogger(__name__)

#: the PostgreSQL channel finished task ids are sent on
CHANNEL = "tether_finished"
# NOTIFY payloads must stay under 8000 bytes; task ids are 36 characters.
_IDS_PER_NOTIFY = 200


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}
        #: also told the ids of the tasks this process finishes: the API
        #: process, when the pipeline runs in a process of its own
        self.forward: Callable[[list[str]], None] | None = None
        #: called whenever a task finished here or elsewhere (the console's live pages)
        self.observers: list[Callable[[], None]] = []
        self._closing = False

    def install(self, sessionmaker: orm.sessionmaker[orm.Session]) -> None:
        after_commit(sessionmaker, [FINISHED, FINISHED_METRICS], self._after_commit)

    @property
    def count(self) -> int:
        with self._lock:
            return sum(len(w) for w in self._waiting.values())

    def notify(self, task_id: str) -> None:
        with self._lock:
            woken = self._waiting.pop(task_id, set())
        for loop, future in woken:
            loop.call_soon_threadsafe(_resolve, future)
        for observe in self.observers:
            observe()

    def wake_all(self) -> None:
        """Wake every waiter to read its task again (wake-ups may have been missed)."""
        with self._lock:
            woken = [entry for entries in self._waiting.values() for entry in entries]
            self._waiting.clear()
        for loop, future in woken:
            loop.call_soon_threadsafe(_resolve, future)
        for observe in self.observers:
            observe()

    def close(self) -> None:
        """Answer every waiter now, and every later one at once: the process
        is stopping, and its server waits for every answer before it exits.
        A client told the task as it stands asks again, of another replica."""
        with self._lock:
            self._closing = True
        self.wake_all()

    async def wait(self, task_id: str, timeout: float, done: Callable[[], Awaitable[bool]]) -> None:
        """Return when ``task_id`` finishes or after ``timeout`` seconds, or
        at once once the process is stopping.

        :param done: re-reads the task; checked after registering, so a task
            that finishes in between is not missed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
            # Under the lock: a waiter either sees the flag or is woken by close().
            if self._closing:
                return
            self._waiting.setdefault(task_id, set()).add(entry)
        try:
            if await done():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, timeout)
        finally:
            with self._lock:
                entries = self._waiting.get(task_id)
                if entries is not None:
                    entries.discard(entry)
                    if not entries:
                        del self._waiting[task_id]

    def _after_commit(self, session: orm.Session) -> None:
        finished = [task_id for task_id, _resource_id in session.info.pop(FINISHED, [])]
        for task_id in finished:
            self.notify(task_id)
        if finished and self.forward is not None:
            self.forward(finished)
        for provider, operation, state, seconds in session.info.pop(FINISHED_METRICS, []):
            metrics.TASKS_FINISHED.labels(provider, operation, state).inc()
            metrics.TASK_SECONDS.labels(provider, state).observe(seconds)


def send_finished(sessionmaker: orm.sessionmaker[orm.Session]) -> None:
    """Have every transaction of ``sessionmaker`` that finishes tasks NOTIFY
    their ids to the other plugin processes (PostgreSQL only)."""

    @event.listens_for(sessionmaker, "before_commit")
    def _before_commit(session: orm.Session) -> None:
        if session.in_nested_transaction():
            return
        ids = [task_id for task_id, _resource_id in session.info.get(FINISHED, [])]
        for start in range(0, len(ids), _IDS_PER_NOTIFY):
            payload = ",".join(ids[start : start + _IDS_PER_NOTIFY])
            session.execute(sa.select(sa.func.pg_notify(CHANNEL, payload)))


class FinishedListener(threading.Thread):
    """Wakes this process's waiters for tasks other plugin processes finished."""

    def __init__(self, engine: sa.Engine, waiters: Waiters) -> None:
        super().__init__(name="finished-listener", daemon=True)
        self.engine = engine
        self.waiters = waiters
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.join(5)

    def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._listen()
            except Exception as exc:  # noqa: BLE001 - the database is away; waiters fall back on their timeout
                failures += 1
                delay = backoff.DATABASE.delay(failures)
                LOG.warning("not hearing other plugins' finished tasks (%s); retrying in %.1f s", exc, delay)
                self._stopping.wait(delay)
            else:
                failures = 0

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        connection: Any = raw.driver_connection
        # Its own connection for good: a pooled one would carry the LISTEN
        # to whoever borrows it next.
        raw.detach()
        try:
            connection.autocommit = True
            connection.execute(f"LISTEN {CHANNEL}")
            # What finished while nobody listened is only in the database.
            self.waiters.wake_all()
            while not self._stopping.is_set():
                for notification in connection.notifies(timeout=1.0):
                    for task_id in notification.payload.split(","):
                        self.waiters.notify(task_id)
        finally:
            raw.close()


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
