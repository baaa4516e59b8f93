"""Progress, operating status and counters drivers report between results,
from any thread, and how the agent sends them."""

from __future__ import annotations

import math
import threading
from typing import Any

import oslo_messaging
import pytest

from tether.agent.driver_manager import AgentCallbacks
from tether.agent.reports import Reports, ReportSender
from tether.common.states import OperatingStatus


def _in_thread(call: Any, *args: Any) -> None:
    thread = threading.Thread(target=call, args=args)
    thread.start()
    thread.join()


class Plugin:
    timeout = 1.0
    status_reports = True

    def __init__(self, answer: dict[str, Any] | Exception | None = None) -> None:
        self.sent: list[tuple[str, int, str, float]] = []
        self.reported: list[dict[str, Any]] = []
        self.answer = answer

    def progress(self, task_id: str, attempt: int, agent_id: str, message: str, within: float) -> Any:
        self.sent.append((task_id, attempt, message, within))
        return {"current": True}

    def report_status(self, agent_id: str, reports: dict[str, Any]) -> Any:
        self.reported.append(reports)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer or {}


def test_progress_from_the_calls_thread_is_the_tasks_and_only_the_latest_is_sent() -> None:
    reports, plugin = Reports(), Plugin()
    with reports.running("t1", 2):
        reports.progress("copying 10 %")
        reports.progress("copying 60 %")
    ReportSender(reports, plugin, "agent-1", 300.0).send()  # type: ignore[arg-type]
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


def test_statuses_and_counters_from_any_thread_go_in_one_call_the_latest_of_each_resource() -> None:
    reports, plugin = Reports(), Plugin()
    _in_thread(reports.stats, "fake", "lb-1", {"sessions": 3})
    _in_thread(reports.stats, "fake", "lb-1", {"sessions": 5, "ratio": math.nan})
    _in_thread(reports.status, "fake", "lb-1", "DEGRADED")
    _in_thread(reports.status, "fake", "lb-1", OperatingStatus.OFFLINE)
    _in_thread(reports.status, "noop", "lb-2", "ONLINE")
    ReportSender(reports, plugin, "agent-1", 300.0).send()  # type: ignore[arg-type]
    assert plugin.reported == [
        {
            # Not a finite number: JSON cannot carry it.
            "fake": {"stats": {"lb-1": {"sessions": 5.0}}, "statuses": {"lb-1": "OFFLINE"}},
            "noop": {"statuses": {"lb-2": "ONLINE"}},
        }
    ]
    assert reports.take_device() == {}


def test_a_chatty_driver_costs_one_call_per_send_however_much_it_reports() -> None:
    reports, plugin = Reports(), Plugin()
    sender = ReportSender(reports, plugin, "agent-1", 300.0)  # type: ignore[arg-type]
    sender.MOST = 10
    for i in range(1000):
        reports.stats("fake", f"lb-{i % 25}", {"sessions": i})
    sender.send()
    sender.send()
    sender.send()
    sent = [len(call["fake"]["stats"]) for call in plugin.reported]
    assert sent == [10, 10, 5]
    # The latest value of each of the 25 resources, once each.
    assert plugin.reported[2]["fake"]["stats"]["lb-24"] == {"sessions": 999.0}


def test_what_the_plugin_could_not_take_waits_for_the_next_send_unless_newer_came() -> None:
    reports = Reports()
    reports.status("fake", "lb-1", "DEGRADED")
    reports.status("fake", "lb-2", "DEGRADED")
    sender = ReportSender(reports, Plugin(oslo_messaging.MessagingTimeout("no answer")), "a", 300.0)  # type: ignore[arg-type]
    sender.send()
    reports.status("fake", "lb-1", "ONLINE")  # newer than what failed
    sender.plugin = Plugin({"busy": {"fake": ["lb-2"]}})  # type: ignore[assignment]
    sender.send()
    assert sender.plugin.reported == [{"fake": {"statuses": {"lb-1": "ONLINE", "lb-2": "DEGRADED"}}}]  # type: ignore[attr-defined]
    # lb-2's tree was busy: sent again.
    assert reports.take_device() == {("statuses", "fake", "lb-2"): "DEGRADED"}


def test_a_report_the_plugin_refuses_as_malformed_is_dropped_not_sent_for_ever() -> None:
    reports = Reports()
    reports.status("fake", "lb-1", "DEGRADED")
    refused = oslo_messaging.RemoteError("MalformedMessage", "RPC call report_status: …")
    ReportSender(reports, Plugin(refused), "a", 300.0).send()  # type: ignore[arg-type]
    assert reports.take_device() == {}
    # The plugin's database is away: that is no answer.
    reports.status("fake", "lb-1", "DEGRADED")
    unavailable = oslo_messaging.RemoteError("ServiceUnavailable", "the database is unavailable")
    ReportSender(reports, Plugin(unavailable), "a", 300.0).send()  # type: ignore[arg-type]
    assert reports.take_device() == {("statuses", "fake", "lb-1"): "DEGRADED"}


def test_a_resource_the_plugin_refuses_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    reports = Reports()
    sender = ReportSender(reports, Plugin({"refused": {"fake": {"nope": "no such resource"}}}), "a", 1.0)  # type: ignore[arg-type]
    for _ in range(3):
        reports.status("fake", "nope", "ONLINE")
        sender.send()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals == [
        "the fake driver reported on nope, which the plugin refused: no such resource (logged once)"
    ]


def test_a_plugin_of_an_earlier_release_gets_them_with_the_state_report() -> None:
    reports, plugin = Reports(), Plugin()
    plugin.status_reports = False
    reports.status("fake", "lb-1", "DEGRADED")
    reports.stats("fake", "lb-1", {"sessions": 1})
    ReportSender(reports, plugin, "a", 1.0).send()  # type: ignore[arg-type]
    assert plugin.reported == []
    assert reports.take_flat() == ({"lb-1": "DEGRADED"}, {"lb-1": {"sessions": 1.0}})


def test_what_the_plugin_would_refuse_is_refused_to_the_driver_at_once() -> None:
    reports = Reports()
    with pytest.raises(ValueError):
        reports.status("fake", "lb-1", "SLEEPY")
    with pytest.raises(ValueError, match="at most 100"):
        reports.stats("fake", "lb-1", {f"c{i}": i for i in range(101)})
    with pytest.raises(ValueError):
        reports.stats("fake", "lb-1", {"sessions": "many"})  # type: ignore[dict-item]
    # Not an id the plugin takes: it would refuse the whole call, so it never leaves.
    for resource_id in ("", "x" * 256, "lb\n1"):
        reports.status("fake", resource_id, "ONLINE")
    reports.status("", "lb-1", "ONLINE")
    assert reports.take_device() == {}


def test_a_status_reported_in_a_call_goes_with_its_result_and_from_elsewhere_on_its_own() -> None:
    reports = Reports()
    callbacks = AgentCallbacks(reports).for_provider("fake")
    with AgentCallbacks.collect() as with_result:
        callbacks.operating_status("lb-1", OperatingStatus.ONLINE)
        _in_thread(callbacks.operating_status, "lb-1", OperatingStatus.DEGRADED)  # a device event
    assert with_result == {"lb-1": "ONLINE"}
    assert reports.take_device() == {("statuses", "fake", "lb-1"): "DEGRADED"}
