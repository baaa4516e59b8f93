"""Work an agent holds, from its message's delivery to its answer.

Each delivery goes to a worker of a bounded pool, which claims the task
from the plugin and calls the driver. A redelivery of a task still running
here (after a reconnect) joins the running call instead of starting a
second one on the device. A long device operation frees its worker and is
polled later. Every answer (a result, a skip, a refusal) goes to
:class:`~tether.agent.outgoing.Outgoing` for the connection thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tether.agent.outgoing import Delivery, Outgoing
from tether.agent.plugin_api import ClaimFailed, Stopping
from tether.agent.runner import Pending, Runner
from tether.agent.scheduler import Scheduler
from tether.agent.watchdog import Watchdog
from tether.agent.workers import WorkerPool
from tether.common import messages

LOG = logging.getLogger(__name__)


class HeldWork:
    def __init__(
        self,
        runner: Runner,
        outgoing: Outgoing,
        workers: int,
        operation_timeout: float,
        stopping: threading.Event,
        wake: Callable[[], None],
    ) -> None:
        """:param wake: wakes the connection thread to send what ``outgoing`` was handed."""
        self.runner = runner
        self.outgoing = outgoing
        self.operation_timeout = operation_timeout
        self._stopping = stopping
        self._wake = wake
        self._pool = WorkerPool(workers)
        self._scheduler = Scheduler()
        self._watchdog = Watchdog()
        # task id -> the deliveries waiting for the driver call running it.
        self._running: dict[str, list[Delivery]] = {}
        # Long device operations whose work message is acked, polled from here.
        self._long: dict[str, Pending] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """Tasks held: driver calls running or waiting for a worker, and long operations."""
        with self._lock:
            return len(self._running) + len(self._long)

    def receive(self, work: messages.Work, delivery: Delivery, redelivered: bool) -> None:
        with self._lock:
            waiting = self._running.get(work.task_id)
            if waiting is not None:
                LOG.info("task %s is already running here; its redelivery waits for that call", work.task_id)
                waiting.append(delivery)
                return
            self._running[work.task_id] = [delivery]
        self._pool.submit(self._work, work, redelivered)

    def expire_overdue(self) -> None:
        """Answer for the driver calls past ``driver_timeout``, and replace their workers."""
        for call in self._watchdog.overdue(self.runner.driver_timeout):
            with self._lock:
                deliveries = self._running.pop(call.work.task_id, [])
            result = self.runner.timed_out(call.work, call.attempt, call.started_at)
            self._deliver(call.work.task_id, deliveries, result)
            self._pool.replace(call.thread)

    def stop(self) -> None:
        self._pool.shutdown()
        self._scheduler.stop()

    def _work(self, work: messages.Work, redelivered: bool) -> None:
        try:
            claim = self.runner.claim(work, redelivered, self._stopping)
        except Stopping:
            with self._lock:
                self._running.pop(work.task_id, None)
            return  # unacked: the broker hands the message to another agent
        except ClaimFailed as exc:
            # Dead-lettered like work for an unknown task: held here, the
            # message would only get the same answer again.
            self._refuse(work.task_id, _claim_failed_reason(exc))
            return
        if not claim.get("run"):
            if claim.get("unknown"):
                self._refuse(work.task_id, _unknown_task_reason(work, claim))
            else:
                self._answer(work.task_id, None)
            return
        attempt = int(claim["attempt"])
        most = claim.get("max_attempts")
        self._step(work, attempt, messages.now(), lambda: self.runner.apply(work, attempt, most))

    def _poll(self, pending: Pending) -> None:
        if time.monotonic() - pending.started > self.operation_timeout:
            self._answer(pending.task_id, self.runner.operation_timed_out(pending, self.operation_timeout))
            return
        self._step(pending.work, pending.attempt, pending.started_at, lambda: self.runner.poll(pending))

    def _step(
        self,
        work: messages.Work,
        attempt: int,
        started_at: str,
        call_driver: Callable[[], messages.Result | Pending],
    ) -> None:
        with self._watchdog.watching(work, attempt, started_at) as call:
            outcome = call_driver()
        if call.timed_out:
            return  # answered by the watchdog; this late outcome is void
        if isinstance(outcome, Pending):
            self._go_long(outcome)
        else:
            self._answer(work.task_id, outcome)

    def _go_long(self, pending: Pending) -> None:
        """The device works on: ack the message (the broker would take it back
        after its consumer_timeout), free the worker, poll later."""
        current = self.runner.report_progress(pending)
        with self._lock:
            deliveries = self._running.pop(pending.task_id, [])
            if current:
                self._long[pending.task_id] = pending
            else:
                # Fenced off at a later poll: held no longer, or the agent
                # would count it in flight for good.
                self._long.pop(pending.task_id, None)
        for delivery in deliveries:
            self.outgoing.finished(delivery, None)
        if current:
            self._scheduler.call_later(pending.operation.poll_after, self._pool.submit, self._poll, pending)

    def _refuse(self, task_id: str, reason: str) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
        for delivery in deliveries:
            self.outgoing.refused(delivery, reason)
        self._wake()

    def _answer(self, task_id: str, result: messages.Result | None) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
        self._deliver(task_id, deliveries, result)

    def _deliver(self, task_id: str, deliveries: list[Delivery], result: messages.Result | None) -> None:
        with self._lock:
            long_running = self._long.pop(task_id, None) is not None
        for delivery in deliveries:
            self.outgoing.finished(delivery, result)
        if long_running and not deliveries and result is not None:
            self.outgoing.finished(None, result)
        self._wake()


def _unknown_task_reason(work: messages.Work, claim: dict[str, Any]) -> str:
    return (
        f"the plugin has no task {work.task_id!r} ({claim.get('reason')}); the work message "
        "was not published by this deployment's plugin"
    )


def _claim_failed_reason(exc: ClaimFailed) -> str:
    return (
        f"{exc.msg}; dead-lettered rather than claimed again and again (the plugin's reaper "
        "publishes the task again, or fails it, once its deadline passes)"
    )
