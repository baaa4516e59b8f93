"""Waking API requests that wait for a task to finish.

``GET /v1/tasks/{id}?wait=N`` must return the moment the task is terminal
without a thread or a database poll per waiter. Each waiter is a future on
the API's event loop, registered by task id; whenever a transaction that
finished tasks commits (SQLAlchemy's ``after_commit``), those tasks' waiters
are woken from whatever thread committed it. Finished tasks are collected by
:mod:`tether.plugin.lifecycle` in ``session.info``.

The wake-up is in-process: the results recorder, the reaper and the API of
one plugin process share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import orm

from tether.common import metrics
from tether.plugin.db.session import after_commit
from tether.plugin.lifecycle import FINISHED, FINISHED_METRICS


class Waiters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]] = {}

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

    async def wait(self, task_id: str, timeout: float, done: Callable[[], Awaitable[bool]]) -> None:
        """Return when ``task_id`` finishes or after ``timeout`` seconds.

        :param done: re-reads the task; checked after registering, so a task
            that finishes in between is not missed.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        entry = (loop, future)
        with self._lock:
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
        for task_id, _resource_id in session.info.pop(FINISHED, []):
            self.notify(task_id)
        for provider, operation, state, seconds in session.info.pop(FINISHED_METRICS, []):
            metrics.TASKS_FINISHED.labels(provider, operation, state).inc()
            metrics.TASK_SECONDS.labels(provider, state).observe(seconds)


def _resolve(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
