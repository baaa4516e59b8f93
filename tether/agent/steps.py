"""Running an operation a driver split into steps (:class:`tether.drivers.base.Steps`).

The plugin records every step before the next one starts: the agent plans
the steps (and learns which an earlier attempt finished, to skip them),
then reports each as it starts and ends, and waits for each answer. A step
whose report the plugin cannot take fails the attempt as retryable rather
than run unrecorded; the next attempt resumes from it.

When a step fails for good (or retryably on the task's last attempt), the
steps done, by this attempt or an earlier one, are undone in reverse order,
each reported as under way before its undo and as undone after it, so an
attempt fenced off meanwhile stops before touching the device. The first
undo that fails stops the undoing: what it left is on the device, and the
error says so.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

from tether.agent.plugin_api import PluginApi
from tether.common import rpc
from tether.common.states import StepState
from tether.drivers import reporting
from tether.drivers.base import DriverError, Step, Steps

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

#: Longest error message a step's report carries (the plugin takes 10,000 characters).
MAX_ERROR = 10_000


class StepNotRecorded(DriverError):
    """The plugin could not record a step's report; the next attempt resumes there."""

    message = "The plugin could not record a step: {reason}"
    retryable = True


class StepRefused(DriverError):
    """The plugin refused a step's report as malformed: the driver's steps
    break a rule the SDK does not check; trying again cannot help."""


class FencedOff(DriverError):
    """The plugin moved the task on to another attempt; this one stops."""

    message = "This attempt was taken over: {reason}"


class StepsFailed(DriverError):
    """A step failed for good: its error, with what was undone after it.

    Its type is the failed step's error's, so the task fails as that step did.

    :ivar undone: every step done was taken back.
    """

    def __init__(self, cause: DriverError, summary: str, undone: bool) -> None:
        super().__init__(f"{cause.user_message} ({summary})", f"{cause.operator_message} ({summary})")
        self.cause = cause
        self.undone = undone

    @property
    def type(self) -> str:
        return self.cause.type


class Reporter:
    """One attempt's reports of its steps to the plugin."""

    def __init__(self, plugin: PluginApi, task_id: str, attempt: int, agent_id: str) -> None:
        self.plugin = plugin
        self.task_id = task_id
        self.attempt = attempt
        self.agent_id = agent_id
        #: False with a plugin older than steps: they run unrecorded
        self.recording = True

    def plan(self, names: list[str]) -> set[str]:
        """Announce the steps; the names of those an earlier attempt finished."""
        try:
            answer = self.plugin.plan_steps(self.task_id, self.attempt, self.agent_id, names)
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type == "MalformedMessage":
                raise StepRefused(
                    f"the plugin refused the steps' names, a bug in the driver: {exc.value}; give each "
                    "step a distinct name of 1 to 255 characters without control characters"
                ) from exc
            if exc.exc_type != "UnsupportedVersion":
                raise StepNotRecorded(f"planning the steps of task {self.task_id}: {exc.value}") from exc
            LOG.warning(
                "task %s: the plugin does not record steps yet (upgrade it first); running %d step(s) "
                "unrecorded, so a new attempt starts again from the first",
                self.task_id,
                len(names),
            )
            self.recording = False
            return set()
        except rpc.RECOVERABLE as exc:
            raise StepNotRecorded(f"planning the steps of task {self.task_id}: {exc}") from exc
        self._check(answer, "before its first step")
        return set(answer.get("done") or ())

    def report(self, position: int, step: Step, state: StepState, error: DriverError | None = None) -> None:
        """Record what became of a step; raises when the plugin could not, or
        when this attempt was fenced off."""
        if not self.recording:
            return
        try:
            answer = self.plugin.step(
                self.task_id,
                self.attempt,
                self.agent_id,
                position,
                state.value,
                error.type if error else None,
                error.user_message[:MAX_ERROR] if error else None,
            )
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type == "MalformedMessage":
                raise StepRefused(
                    f"the plugin refused the report of step {position + 1} ({step.name}), a bug in the "
                    f"driver: {exc.value}"
                ) from exc
            raise StepNotRecorded(
                f"step {position + 1} ({step.name}) of task {self.task_id} {state.value}: {exc.value}"
            ) from exc
        except rpc.RECOVERABLE as exc:
            raise StepNotRecorded(
                f"step {position + 1} ({step.name}) of task {self.task_id} {state.value}: {exc}"
            ) from exc
        self._check(answer, f"at step {position + 1} ({step.name})")

    def _check(self, answer: dict[str, Any], where: str) -> None:
        if not answer.get("current"):
            raise FencedOff(f"attempt {self.attempt} of task {self.task_id} was fenced off {where}")


def run(
    steps: Steps, reporter: Reporter, last_attempt: bool, as_driver_error: Callable[[Exception], DriverError]
) -> None:
    """Run ``steps`` to the end, or raise the error the task fails with.

    :param last_attempt: no attempt follows this one, so a retryable failure
        is undone as a permanent one would be.
    :param as_driver_error: what a step's exception other than a
        :class:`DriverError` becomes (a driver bug).
    :raises DriverError: a retryable one when the plugin should retry
        (the next attempt resumes at the failed step); :class:`StepsFailed`
        once what was done is undone.
    """
    listed = list(steps)
    done_before = reporter.plan([step.name for step in listed])
    done: list[int] = []
    for position, step in enumerate(listed):
        if step.name in done_before:
            LOG.info(
                "task %s: step %d (%s) done by an earlier attempt; skipped",
                reporter.task_id,
                position + 1,
                step.name,
            )
            done.append(position)
            continue
        reporter.report(position, step, StepState.RUNNING)
        try:
            answer = step.apply()
        except Exception as exc:  # every failure is reported, then undone or retried
            if not isinstance(exc, DriverError):
                LOG.error(
                    "task %s: step %d (%s) raised", reporter.task_id, position + 1, step.name, exc_info=True
                )
            error = exc if isinstance(exc, DriverError) else as_driver_error(exc)
            _failed(listed, position, error, done, reporter, last_attempt)
        if answer is not None:
            # A step cannot hand the device's work back to the agent (InProgress): it is done when it returns.
            error = as_driver_error(
                TypeError(f"step {step.name!r} returned {answer!r}; a step's apply returns None")
            )
            _failed(listed, position, error, done, reporter, last_attempt)
        reporter.report(position, step, StepState.DONE)
        done.append(position)


def _failed(
    listed: list[Step],
    position: int,
    error: DriverError,
    done: list[int],
    reporter: Reporter,
    last_attempt: bool,
) -> None:
    """Report the failed step; undo what is done unless the step will be tried again; raise."""
    step = listed[position]
    LOG.error(
        "task %s: step %d of %d (%s) failed: %s: %s",
        reporter.task_id,
        position + 1,
        len(listed),
        step.name,
        error.type,
        reporting.logged(error),
    )
    reporter.report(position, step, StepState.FAILED, error)
    if error.retryable and not last_attempt:
        raise error
    summary = f"step {position + 1} of {len(listed)}, {step.name!r}, failed"
    undone: list[str] = []
    for back in reversed(done):
        earlier = listed[back]
        # Recorded as under way first: an agent that dies while undoing, or
        # an attempt fenced off meanwhile, leaves the step to be applied
        # again by the next attempt rather than skipped as done; and a
        # fenced-off attempt stops before touching the device.
        reporter.report(back, earlier, StepState.RUNNING)
        try:
            if earlier.undo is not None:
                earlier.undo()
        except Exception as exc:  # reported, and the undoing stops there
            reason = exc.user_message if isinstance(exc, DriverError) else f"{type(exc).__name__}: {exc}"
            LOG.error(
                "task %s: undoing step %d (%s) failed: %s",
                reporter.task_id,
                back + 1,
                earlier.name,
                reporting.logged(exc) if isinstance(exc, DriverError) else reason,
                exc_info=not isinstance(exc, DriverError),
            )
            failure = exc if isinstance(exc, DriverError) else DriverError(f"{type(exc).__name__}: {exc}")
            reporter.report(back, earlier, StepState.UNDO_FAILED, failure)
            held = ", ".join(listed[i].name for i in done if i <= back)
            parts = [summary, *([f"undone: {', '.join(undone)}"] if undone else [])]
            parts.append(f"undoing {earlier.name!r} failed ({reason}), so the device still holds: {held}")
            raise StepsFailed(error, "; ".join(parts), undone=False) from exc
        reporter.report(back, earlier, StepState.UNDONE)
        undone.append(earlier.name)
    what = f"undone: {', '.join(undone)}" if undone else "nothing was done before it"
    raise StepsFailed(error, f"{summary}; {what}", undone=True)
