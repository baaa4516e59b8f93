"""The bounded pool of threads that call drivers.

Daemon threads, unlike ``concurrent.futures``' workers, which the interpreter
joins at exit: a driver call that hangs must not keep a stopping agent alive
past its ``shutdown_timeout``. Its work message was never acked, so the
broker hands it to another agent.

A call that overruns ``driver_timeout`` cannot be killed (Python threads
cannot be), so the pool starts a replacement thread and retires the wedged
one when its call returns: the pool keeps its size, and each wedged call
costs one thread until it returns.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, size: int, name: str = "driver") -> None:
        self.size = size
        self._name = name
        self._numbers = itertools.count(1)
        self._jobs: queue.SimpleQueue[tuple[Callable[..., None], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._retiring: set[str] = set()
        for _ in range(size):
            self._spawn()

    @property
    def wedged(self) -> int:
        """Threads stuck in a call that overran its timeout."""
        with self._lock:
            return len(self._retiring)

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._jobs.put((fn, args))

    def replace(self, thread_name: str) -> None:
        """The thread ``thread_name`` is wedged: start another in its place and
        let it leave when its call returns."""
        with self._lock:
            self._retiring.add(thread_name)
            wedged = len(self._retiring)
        self._spawn()
        if wedged >= self.size:
            LOG.error(
                "%d driver calls are stuck past driver_timeout, each holding a thread; "
                "the driver is not returning: fix the device or restart the agent",
                wedged,
            )

    def shutdown(self) -> None:
        """Let idle workers leave; busy ones finish or die with the process."""
        for _ in range(self.size + self.wedged):
            self._jobs.put(None)

    def _spawn(self) -> None:
        thread = threading.Thread(target=self._serve, name=f"{self._name}-{next(self._numbers)}", daemon=True)
        thread.start()

    def _serve(self) -> None:
        me = threading.current_thread().name
        while (job := self._jobs.get()) is not None:
            fn, args = job
            try:
                fn(*args)
            except Exception:
                LOG.exception("worker job failed")
            with self._lock:
                if me in self._retiring:
                    self._retiring.discard(me)
                    LOG.info("driver thread %s returned after its timeout and leaves the pool", me)
                    return
