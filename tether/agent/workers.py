"""The bounded pool of threads that call drivers.

Daemon threads, unlike ``concurrent.futures``' workers, which the interpreter
joins at exit: a driver call that hangs must not keep a stopping agent alive
past its ``shutdown_timeout``. Its work message was never acked, so the
broker hands it to another agent.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, name: str = "driver") -> None:
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._jobs.put((fn, args))

    def shutdown(self) -> None:
        """Let idle workers leave; busy ones finish or die with the process."""
        for _ in self._threads:
            self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, args = job
            try:
                fn(*args)
            except Exception:
                LOG.exception("worker job failed")
