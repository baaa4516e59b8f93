"""The agent's side of steps, against a plugin that answers as told."""

from __future__ import annotations

from typing import Any

import oslo_messaging
import pytest

from tether.agent import steps
from tether.drivers.base import DeviceUnreachable, DriverError, Step, Steps


class Plugin:
    """Answers plan_steps and step as a test says; remembers every report."""

    def __init__(self, done: list[str] | None = None, fenced_at: int | None = None) -> None:
        self.done = done or []
        self.fenced_at = fenced_at
        self.reports: list[tuple[int, str]] = []
        self.failing: Exception | None = None

    def plan_steps(self, task_id: str, attempt: int, agent_id: str, names: list[str]) -> dict[str, Any]:
        return {"current": True, "done": self.done}

    def step(self, task_id: str, attempt: int, agent_id: str, position: int, state: str, *error: Any) -> Any:
        if self.failing is not None:
            raise self.failing
        if position == self.fenced_at:
            return {"current": False}
        self.reports.append((position, state))
        return {"current": True}


def _steps(applied: list[str], fail: dict[str, Exception] | None = None) -> Steps:
    fail = fail or {}

    def step(name: str) -> Step:
        def apply() -> None:
            if name in fail:
                raise fail[name]
            applied.append(name)

        return Step(name, apply, lambda: applied.append(f"undo {name}"))

    return Steps(step(name) for name in "abc")


def _run(plugin: Any, operation: Steps, last_attempt: bool = False) -> None:
    reporter = steps.Reporter(plugin, "t", 2, "agent-1")
    steps.run(operation, reporter, last_attempt, lambda exc: DriverError(f"bug: {exc}"))


def test_the_steps_an_earlier_attempt_finished_are_skipped() -> None:
    applied: list[str] = []
    plugin = Plugin(done=["a"])
    _run(plugin, _steps(applied))
    assert applied == ["b", "c"]
    assert plugin.reports == [(1, "RUNNING"), (1, "DONE"), (2, "RUNNING"), (2, "DONE")]


def test_an_attempt_fenced_off_stops_before_the_next_step() -> None:
    applied: list[str] = []
    with pytest.raises(steps.FencedOff, match="attempt 2 of task t was fenced off at step 2"):
        _run(Plugin(fenced_at=1), _steps(applied))
    assert applied == ["a"]


def test_a_step_the_plugin_cannot_record_is_not_applied_and_the_attempt_is_retried() -> None:
    applied: list[str] = []
    plugin = Plugin()
    plugin.failing = oslo_messaging.MessagingTimeout("no reply")
    with pytest.raises(steps.StepNotRecorded) as raised:
        _run(plugin, _steps(applied))
    assert raised.value.retryable
    assert applied == []


def test_a_plugin_older_than_steps_runs_them_unrecorded() -> None:
    class OldPlugin(Plugin):
        def plan_steps(self, *args: Any) -> dict[str, Any]:
            raise oslo_messaging.RemoteError(
                "UnsupportedVersion", "Endpoint does not support RPC version 1.4"
            )

    applied: list[str] = []
    plugin = OldPlugin()
    _run(plugin, _steps(applied))
    assert applied == ["a", "b", "c"]
    assert plugin.reports == []


def test_a_retryable_failure_is_raised_as_it_is_and_nothing_is_undone() -> None:
    applied: list[str] = []
    with pytest.raises(DeviceUnreachable):
        _run(Plugin(), _steps(applied, {"b": DeviceUnreachable("timeout")}))
    assert applied == ["a"]


def test_on_the_last_attempt_a_retryable_failure_is_undone() -> None:
    applied: list[str] = []
    with pytest.raises(steps.StepsFailed) as raised:
        _run(Plugin(), _steps(applied, {"c": DeviceUnreachable("timeout")}), last_attempt=True)
    assert applied == ["a", "b", "undo b", "undo a"]
    assert (raised.value.type, raised.value.undone, raised.value.retryable) == (
        "DeviceUnreachable",
        True,
        False,
    )


def test_a_driver_bug_in_a_step_fails_the_operation_for_good() -> None:
    applied: list[str] = []
    plugin = Plugin()
    with pytest.raises(steps.StepsFailed, match="bug: 'boom'"):
        _run(plugin, _steps(applied, {"b": KeyError("boom")}))
    assert applied == ["a", "undo a"]
    # Each undo is recorded as under way first, then undone.
    assert plugin.reports[-3:] == [(1, "FAILED"), (0, "RUNNING"), (0, "UNDONE")]


def test_an_attempt_fenced_off_while_undoing_stops_before_the_next_undo() -> None:
    class FencedWhileUndoing(Plugin):
        def step(
            self, task_id: str, attempt: int, agent_id: str, position: int, state: str, *error: Any
        ) -> Any:
            self.reports.append((position, state))
            # Taken over once the failure is recorded: the undo of step 2 is refused.
            return {"current": not any(s == "FAILED" for _, s in self.reports[:-1])}

    applied: list[str] = []
    with pytest.raises(steps.FencedOff, match="fenced off at step 2"):
        _run(FencedWhileUndoing(), _steps(applied, {"c": DriverError("no")}))
    assert applied == ["a", "b"]  # nothing undone by an attempt that no longer owns the task


def test_a_step_the_plugin_refuses_as_malformed_fails_for_good_naming_the_driver() -> None:
    class Refusing(Plugin):
        def plan_steps(self, *args: Any) -> dict[str, Any]:
            raise oslo_messaging.RemoteError(
                "MalformedMessage", "names[] must be a string of 1 to 255 characters"
            )

    with pytest.raises(steps.StepRefused, match="a bug in the driver") as raised:
        _run(Refusing(), _steps([]))
    assert not raised.value.retryable


def test_a_step_that_returns_something_is_a_driver_bug() -> None:
    operation = Steps([Step("a", lambda: "in progress")])
    with pytest.raises(steps.StepsFailed, match="a step's apply returns None"):
        _run(Plugin(), operation)


@pytest.mark.parametrize(
    ("names", "expected"),
    [([], "1 to 1000 steps"), (["a", "a"], "repeated: a"), (["", "b"], "1 to 255 characters")],
)
def test_steps_refuse_what_the_plugin_could_not_record(names: list[str], expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Steps(Step(name, lambda: None) for name in names)
