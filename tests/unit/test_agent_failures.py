"""Where each part of a driver's error goes when the agent builds the task's
result: the user message into what the plugin records, the operator message
into the agent's log line only."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.unit.conftest import sample_work
from tether.agent.runner import Runner
from tether.common import messages
from tether.drivers import raising
from tether.drivers.base import Change, DeviceBusy, Driver, DriverError, InvalidConfiguration, Step, Steps


class RaisingDriver(Driver):
    """Raises what a test gives it, from the call or from a step."""

    resource_types = frozenset({"loadbalancer"})

    def __init__(self, raise_it: Any, in_step: bool = False, undo_raises: Any = None) -> None:
        self.raise_it = raise_it
        self.in_step = in_step
        self.undo_raises = undo_raises

    def create(self, change: Change) -> Steps | None:
        if not self.in_step:
            self.raise_it()
            return None
        return Steps([Step("reserve the port", lambda: None, self.undo_raises), Step("push", self.raise_it)])

    update = delete = create


class StepsPlugin:
    """Takes the steps' reports as a plugin does, keeping each."""

    def __init__(self) -> None:
        self.reports: list[tuple[Any, ...]] = []

    def plan_steps(self, *args: Any) -> dict[str, Any]:
        return {"current": True, "done": []}

    def step(self, *report: Any) -> dict[str, Any]:
        self.reports.append(report)
        return {"current": True}


def _apply(driver: Driver, plugin: Any = None) -> messages.Result:
    runner = Runner({"raising": driver}, plugin or StepsPlugin(), "agent-1", "host", 30.0)
    result = runner.apply(sample_work("raising"), 1, 3)
    assert isinstance(result, messages.Result)
    return result


FORMS = [
    pytest.param(cls, form, id=form.written)
    for cls in (DriverError, DeviceBusy, InvalidConfiguration)
    for form in raising.forms(cls)
]


@pytest.mark.parametrize(("cls", "form"), FORMS)
def test_a_failed_result_carries_the_user_message_and_the_log_line_the_operator_message(
    cls: type[DriverError], form: raising.Form, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tether.agent.runner")
    result = _apply(RaisingDriver(form.raise_it))
    assert result.error is not None
    assert (result.error.type, result.error.retryable) == (cls.__name__, cls.retryable)
    if form.user is not None:
        assert result.error.message == form.user
    [line] = [r for r in caplog.records if "failed" in r.getMessage()]
    assert line.levelno == (logging.WARNING if cls.retryable else logging.ERROR)
    assert result.error.message in line.getMessage()
    if form.operator is not None:
        assert form.operator not in messages.encode(result).decode()
        assert form.operator in line.getMessage()


def test_anything_else_a_driver_raises_fails_at_once_as_a_driver_bug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def raise_it() -> None:
        raise KeyError("vip_address")

    result = _apply(RaisingDriver(raise_it))
    assert result.error == messages.ReportedError(
        type="DriverBug",
        message="The raising driver failed unexpectedly (KeyError); the agent's log has the details.",
        retryable=False,
    )
    # The exception's own text goes to the log only, with its traceback.
    assert any(r.exc_info and "vip_address" in str(r.exc_info[1]) for r in caplog.records)


def test_a_failed_step_reports_its_user_message_and_logs_its_operator_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)

    def raise_it() -> None:
        raise InvalidConfiguration(user_fault_string=raising.USER, operator_fault_string=raising.OPERATOR)

    def undo_raises() -> None:
        raise DriverError("the port is still held", "port 7 of switch 10.0.0.9 is wedged")

    plugin = StepsPlugin()
    result = _apply(RaisingDriver(raise_it, in_step=True, undo_raises=undo_raises), plugin)
    assert result.error is not None and result.error.type == "InvalidConfiguration"
    assert result.error.message.startswith(raising.USER)
    assert "the port is still held" in result.error.message
    sent = messages.encode(result).decode() + repr(plugin.reports)
    assert raising.USER in repr(plugin.reports)
    for detail in (raising.OPERATOR, "port 7 of switch 10.0.0.9 is wedged"):
        assert detail not in sent
        assert any(detail in r.getMessage() for r in caplog.records), f"{detail!r} is not in the agent's log"
