"""What drivers report between results: the progress of a running task and
the counters of a resource, from whichever thread of the driver reports them.

Progress goes to the plugin by a thread of its own, the latest message of
each task at most every :data:`ProgressSender.EVERY` seconds, so a driver
reporting in a tight loop costs one RPC call per interval, not one per
message, and never waits for the plugin. Counters wait for the agent's next
state report, which carries them with those of ``Driver.status()``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from tether.agent.plugin_api import PluginApi

LOG = logging.getLogger(__name__)

#: the task (id, attempt) whose driver call runs in this context
_current: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("driver_task", default=None)

#: Longest progress message kept (the plugin keeps 1,000 characters).
MAX_PROGRESS = 1000


class Reports:
    """Reports waiting to be sent, shared by the drivers and the agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        #: long operations between calls: (task id, attempt)
        self._kept: set[tuple[str, int]] = set()
        self._progress: dict[str, tuple[int, str]] = {}
        self._stats: dict[str, dict[str, float]] = {}
        self.wake = threading.Event()

    @contextlib.contextmanager
    def running(self, task_id: str, attempt: int) -> Iterator[None]:
        """A driver call of ``attempt`` of ``task_id`` runs in this context."""
        with self._lock:
            self._running[task_id] = attempt
        token = _current.set((task_id, attempt))
        try:
            yield
        finally:
            _current.reset(token)
            with self._lock:
                if self._running.get(task_id) == attempt and (task_id, attempt) not in self._kept:
                    del self._running[task_id]

    def keep(self, task_id: str, attempt: int) -> None:
        """``attempt`` goes on on the device between calls (a long operation):
        its progress is still taken, by task id, until :meth:`drop`."""
        with self._lock:
            self._running[task_id] = attempt
            self._kept.add((task_id, attempt))

    def drop(self, task_id: str, attempt: int) -> None:
        with self._lock:
            self._kept.discard((task_id, attempt))
            if self._running.get(task_id) == attempt:
                del self._running[task_id]

    def progress(self, message: str, task_id: str | None = None) -> None:
        """Keep ``message`` as the latest progress of ``task_id``, or of the
        task whose call runs in this context."""
        current = _current.get()
        with self._lock:
            if task_id is None and current is not None:
                task_id, attempt = current
            elif task_id is not None and task_id in self._running:
                attempt = self._running[task_id]
            else:
                LOG.warning(
                    "progress %r dropped: %s",
                    message[:80],
                    "it names no task and comes from a thread outside any driver call; pass "
                    "callbacks.progress(message, task_id=change.task_id)"
                    if task_id is None
                    else f"task {task_id} runs on no worker of this agent",
                )
                return
            self._progress[task_id] = (attempt, str(message)[:MAX_PROGRESS])
        self.wake.set()

    def stats(self, resource_id: str, counters: Mapping[str, float]) -> None:
        with self._lock:
            self._stats[resource_id] = {str(k): float(v) for k, v in counters.items()}

    def take_progress(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            taken, self._progress = self._progress, {}
            return taken

    def take_stats(self) -> dict[str, dict[str, float]]:
        with self._lock:
            taken, self._stats = self._stats, {}
            return taken


class ProgressSender:
    """Sends the latest progress of each task to the plugin."""

    #: seconds between two sends: the messages reported meanwhile are folded
    EVERY = 0.5

    def __init__(self, reports: Reports, plugin: PluginApi, agent_id: str, expect_within: float) -> None:
        self.reports = reports
        self.plugin = plugin
        self.agent_id = agent_id
        #: the call's own deadline: a progress report moves the task's there
        self.expect_within = expect_within
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.reports.wake.set()
        if self._thread is not None:
            self._thread.join(self.plugin.timeout + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.reports.wake.wait()
            self.reports.wake.clear()
            self.send()
            self._stop.wait(self.EVERY)

    def send(self) -> None:
        for task_id, (attempt, message) in self.reports.take_progress().items():
            try:
                answer: Any = self.plugin.progress(
                    task_id, attempt, self.agent_id, message, self.expect_within
                )
            except Exception as exc:  # noqa: BLE001 - progress is advisory; the result is what counts
                LOG.warning("task %s: progress not sent (%s: %s)", task_id, type(exc).__name__, exc)
                continue
            if not answer.get("current", True):
                LOG.info("task %s: progress of attempt %d dropped: the task moved on", task_id, attempt)
