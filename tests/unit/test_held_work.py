"""What an agent holds between a delivery and its answer, and lets go of when an attempt ends."""

from __future__ import annotations

import threading
import time
import types
from typing import Any

import pytest

from tests.unit.conftest import sample_work, wait_for
from tether.agent.held import HeldWork
from tether.agent.runner import Pending, Runner
from tether.drivers.operations import InProgress


class _Runner:
    """A driver whose device works on through two polls, and a plugin that
    says the attempt is current ``current`` times, then that it was taken over."""

    driver_timeout = 60.0

    def __init__(self, current: int) -> None:
        self.current = current
        self.polls = 0

    def claim(self, work: Any, redelivered: bool, stopping: threading.Event) -> dict[str, Any]:
        return {"run": True, "attempt": 1, "max_attempts": 3}

    def apply(self, work: Any, attempt: int, most: int | None) -> Pending:
        return Pending(work, attempt, None, InProgress(poll_after=0.01), "now", time.monotonic())

    def poll(self, pending: Pending) -> Pending:
        self.polls += 1
        return self.apply(pending.work, pending.attempt, None)

    def report_progress(self, pending: Pending) -> bool:
        self.current -= 1
        return self.current >= 0


def test_a_long_operation_fenced_off_at_a_later_poll_is_held_no_longer() -> None:
    runner = _Runner(current=2)
    outgoing = types.SimpleNamespace(finished=lambda delivery, result: None, refused=lambda *a: None)
    held = HeldWork(runner, outgoing, 2, 3600.0, threading.Event(), lambda: None)
    work = types.SimpleNamespace(task_id="task-1")
    try:
        held.receive(work, object(), redelivered=False)
        # Polled while current; at the poll after the plugin says another
        # agent took over, the operation is dropped and nothing is held.
        wait_for(lambda: runner.polls >= 2 and held.count == 0)
        polls = runner.polls
        time.sleep(0.2)  # twenty poll intervals
        assert (held.count, runner.polls) == (0, polls)  # and not polled again
    finally:
        held.stop()


def test_a_long_operations_poll_that_overruns_ends_its_progress_reports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runner = Runner({}, object(), "agent-1", "host", 30.0)  # type: ignore[arg-type]
    work = sample_work("fake")
    runner.reports.keep(work.task_id, 1)  # the device works on between polls
    runner.reports.progress("copying", task_id=work.task_id)
    assert not caplog.records
    result = runner.timed_out(work, 1, "started")
    assert result.error is not None and result.error.type == "DriverTimeout"
    # The attempt is over: progress for it is no longer taken.
    runner.reports.progress("still copying", task_id=work.task_id)
    assert "progress 'still copying' dropped" in caplog.text
