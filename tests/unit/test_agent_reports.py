"""Progress and counters drivers report between results, from any thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from tether.agent.reports import ProgressSender, Reports


def _in_thread(call: Any, *args: Any) -> None:
    thread = threading.Thread(target=call, args=args)
    thread.start()
    thread.join()


class Plugin:
    timeout = 1.0

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, str, float]] = []

    def progress(self, task_id: str, attempt: int, agent_id: str, message: str, within: float) -> Any:
        self.sent.append((task_id, attempt, message, within))
        return {"current": True}


def test_progress_from_the_calls_thread_is_the_tasks_and_only_the_latest_is_sent() -> None:
    reports, plugin = Reports(), Plugin()
    with reports.running("t1", 2):
        reports.progress("copying 10 %")
        reports.progress("copying 60 %")
    ProgressSender(reports, plugin, "agent-1", 300.0).send()  # type: ignore[arg-type]
    assert plugin.sent == [("t1", 2, "copying 60 %", 300.0)]


def test_progress_from_a_drivers_own_thread_names_its_task(caplog: pytest.LogCaptureFixture) -> None:
    reports = Reports()
    with reports.running("t1", 3):
        _in_thread(reports.progress, "polled the device")  # no task named: dropped, and said why
        _in_thread(reports.progress, "rebooting", "t1")
        _in_thread(reports.progress, "elsewhere", "t9")  # not running here
    assert reports.take_progress() == {"t1": (3, "rebooting")}
    reasons = [r.getMessage() for r in caplog.records]
    assert any("pass callbacks.progress(message, task_id=change.task_id)" in r for r in reasons)
    assert any("task t9 runs on no worker of this agent" in r for r in reasons)


def test_counters_wait_for_the_next_state_report_latest_per_resource() -> None:
    reports = Reports()
    _in_thread(reports.stats, "lb-1", {"sessions": 3})
    _in_thread(reports.stats, "lb-1", {"sessions": 5})
    assert reports.take_stats() == {"lb-1": {"sessions": 5.0}}
    assert reports.take_stats() == {}
