"""Driver calls that overrun ``driver_timeout``.

A driver may block for ever; its worker cannot be interrupted. The watchdog
keeps the calls running now, and the connection thread asks it each tick
for those past their deadline: each is marked timed out, so whatever it
returns later is void, while the agent answers for it with a retryable
failure and replaces its worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import Iterator

from tether.common import messages


@dataclasses.dataclass
class DriverCall:
    """A driver call in progress."""

    work: messages.Work
    attempt: int
    #: the name of the worker thread making it, to replace if it overruns
    thread: str
    started: float
    started_at: str
    timed_out: bool = False


class Watchdog:
    def __init__(self) -> None:
        self._calls: dict[str, DriverCall] = {}
        # Marking a call overdue and its end are decided under it: exactly one wins.
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def watching(self, work: messages.Work, attempt: int, started_at: str) -> Iterator[DriverCall]:
        """Watch the driver call made inside; once it ends, ``timed_out`` says whether it counts."""
        call = DriverCall(work, attempt, threading.current_thread().name, time.monotonic(), started_at)
        with self._lock:
            self._calls[work.task_id] = call
        try:
            yield call
        finally:
            with self._lock:
                self._calls.pop(work.task_id, None)

    def overdue(self, timeout: float) -> list[DriverCall]:
        """The calls running longer than ``timeout`` seconds, each now marked timed out."""
        now = time.monotonic()
        with self._lock:
            late = [c for c in self._calls.values() if not c.timed_out and now - c.started > timeout]
            for call in late:
                call.timed_out = True
        return late
