"""What drivers report between results: the progress of a running task, and
the operating status and counters of a resource, from whichever thread of
the driver reports them (a device event), or from its polled ``status()``.

A thread of its own sends them to the plugin, the latest of each task or
resource at most every :data:`ReportSender.EVERY` seconds, so a driver
reporting in a tight loop costs one RPC call per interval, not one per
report, and never waits for the plugin. A plugin of an earlier release
takes statuses and counters only with the agent's state reports, which then
carry them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import threading
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from tether.agent.plugin_api import PluginApi
from tether.common import rpc
from tether.common.exceptions import ServiceUnavailable
from tether.common.states import MAX_COUNTER_NAME, MAX_COUNTERS, OperatingStatus

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

#: the task (id, attempt) whose driver call runs in this context
_current: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("driver_task", default=None)

#: Longest progress message kept (the plugin keeps 1,000 characters).
MAX_PROGRESS = 1000

#: Statuses and counters waiting to be sent at most: a driver reporting on
#: ever new ids while the plugin is away must not take all memory.
MAX_WAITING = 100_000

#: Longest resource id the plugin takes.
MAX_ID = 255

#: (kind, provider, resource id): kind is "statuses" or "stats", as the plugin takes them
_Key = tuple[str, str, str]


class Reports:
    """Reports waiting to be sent, shared by the drivers and the agent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}
        #: long operations between calls: (task id, attempt)
        self._kept: set[tuple[str, int]] = set()
        self._progress: dict[str, tuple[int, str]] = {}
        #: the latest status or counters of each resource, oldest report first
        self._device: dict[_Key, Any] = {}
        self._full = False
        #: ids that cannot be a resource's, logged once each (the first hundred)
        self._dropped: set[str] = set()
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

    def status(self, provider: str, resource_id: str, status: OperatingStatus | str) -> None:
        """Keep ``status`` as the latest operating status of ``resource_id``.

        :raises ValueError: for a value that is not an operating status.
        """
        self._keep(("statuses", provider, str(resource_id)), OperatingStatus(status).value)

    def stats(self, provider: str, resource_id: str, counters: Mapping[str, float]) -> None:
        """Keep ``counters`` as the latest of ``resource_id``; those that are
        not finite are left out (JSON cannot carry them).

        :raises ValueError: for counters the plugin would refuse.
        """
        kept = {str(k): float(v) for k, v in counters.items()}
        if len(kept) > MAX_COUNTERS or not all(0 < len(k) <= MAX_COUNTER_NAME for k in kept):
            raise ValueError(
                f"counters of {resource_id}: at most {MAX_COUNTERS}, each named by 1 to "
                f"{MAX_COUNTER_NAME} characters, not {sorted(kept)[:5]}…"
            )
        self._keep(("stats", provider, str(resource_id)), {k: v for k, v in kept.items() if math.isfinite(v)})

    def _keep(self, key: _Key, value: Any) -> None:
        _, provider, resource_id = key
        if not provider or not 0 < len(resource_id) <= MAX_ID or any(ord(c) < 0x20 for c in resource_id):
            # The plugin would refuse the whole call that carried it.
            if len(self._dropped) < 100 and resource_id not in self._dropped:
                self._dropped.add(resource_id)
                LOG.warning("a report on %r dropped: not a resource id of a provider", resource_id[:80])
            return
        with self._lock:
            if key not in self._device and len(self._device) >= MAX_WAITING:
                if not self._full:
                    LOG.warning(
                        "%d statuses and counters wait to be sent to the plugin; dropping new ones",
                        len(self._device),
                    )
                self._full = True
                return
            self._device[key] = value
        self.wake.set()

    def take_progress(self) -> dict[str, tuple[int, str]]:
        with self._lock:
            taken, self._progress = self._progress, {}
            return taken

    def take_device(self, most: int = MAX_WAITING) -> dict[_Key, Any]:
        """At most ``most`` of the statuses and counters waiting, oldest first."""
        with self._lock:
            keys = list(self._device)[:most]
            taken = {key: self._device.pop(key) for key in keys}
            self._full = False
            return taken

    def take_flat(self) -> tuple[dict[str, str], dict[str, Any]]:
        """Everything waiting, as a state report to a plugin of an earlier release carries it."""
        statuses: dict[str, str] = {}
        stats: dict[str, Any] = {}
        for (kind, _, resource_id), value in self.take_device().items():
            (statuses if kind == "statuses" else stats)[resource_id] = value
        return statuses, stats

    def restore(self, taken: Mapping[_Key, Any]) -> None:
        """Wait again with what could not be sent, unless newer reports came."""
        with self._lock:
            for key, value in taken.items():
                self._device.setdefault(key, value)


class ReportSender:
    """Sends the latest progress of each task, and the latest status and
    counters of each resource, to the plugin."""

    #: seconds between two sends: the reports made meanwhile are folded
    EVERY = 0.5
    #: statuses and counters one call carries at most (the plugin takes 5,000)
    MOST = 2000
    #: resources the plugin refused that are remembered, to log each once
    REMEMBERED = 10_000

    def __init__(self, reports: Reports, plugin: PluginApi, agent_id: str, expect_within: float) -> None:
        self.reports = reports
        self.plugin = plugin
        self.agent_id = agent_id
        #: the call's own deadline: a progress report moves the task's there
        self.expect_within = expect_within
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refused: set[tuple[str, str]] = set()
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="reports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.reports.wake.set()
        if self._thread is not None:
            self._thread.join(self.plugin.timeout + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            # Not woken when the plugin's first answer says it takes statuses.
            self.reports.wake.wait(self.EVERY * 4)
            self.reports.wake.clear()
            self.send()
            self._stop.wait(self.EVERY)

    def send(self) -> None:
        self.send_progress()
        if self.plugin.status_reports:
            self.send_status()

    def send_progress(self) -> None:
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

    def send_status(self) -> None:
        """The oldest :data:`MOST` statuses and counters waiting; those the
        plugin could not take now wait for a later send, unless newer ones came."""
        taken = self.reports.take_device(self.MOST)
        if not taken:
            return
        wire: dict[str, dict[str, dict[str, Any]]] = {}
        for (kind, provider, resource_id), value in taken.items():
            wire.setdefault(provider, {}).setdefault(kind, {})[resource_id] = value
        try:
            answer: dict[str, Any] = self.plugin.report_status(self.agent_id, wire)
        except Exception as exc:  # noqa: BLE001 - statuses are advisory; the agent serves on
            if _answered(exc):
                # Refused as malformed: sending it again would not help.
                LOG.error("the plugin refused %d statuses and counters (%s); dropped", len(taken), exc)
                return
            self.reports.restore(taken)
            if not self._failing:
                LOG.warning("statuses not sent to the plugin (%s: %s); trying again", type(exc).__name__, exc)
            self._failing = True
            return
        if self._failing:
            LOG.info("statuses reach the plugin again")
        self._failing = False
        busy = answer.get("busy") or {}
        self.reports.restore({key: value for key, value in taken.items() if key[2] in busy.get(key[1], ())})
        self._log_refused(answer.get("refused") or {})
        if len(taken) == self.MOST:
            self.reports.wake.set()  # more wait: the next send, not a burst now

    def _log_refused(self, refused: Mapping[str, Mapping[str, str]]) -> None:
        for provider, reasons in refused.items():
            for resource_id, why in reasons.items():
                if (provider, resource_id) in self._refused:
                    continue
                if len(self._refused) >= self.REMEMBERED:
                    self._refused.clear()
                self._refused.add((provider, resource_id))
                LOG.warning(
                    "the %s driver reported on %s, which the plugin refused: %s (logged once)",
                    provider,
                    resource_id,
                    why,
                )


def _answered(exc: Exception) -> bool:
    """Did the plugin answer the call with an error? Not when it could not
    be reached, its database was away, or the call reached a replica of an
    earlier release (mixed replicas during an upgrade): another try may do."""
    if isinstance(exc, oslo_messaging.RemoteError):
        return exc.exc_type not in (ServiceUnavailable.__name__, "UnsupportedVersion")
    return not isinstance(exc, (*rpc.RECOVERABLE, ServiceUnavailable))
