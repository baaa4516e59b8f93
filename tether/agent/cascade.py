"""Running a cascade delete: the target and everything under it, children first.

A driver that declares ``deletes_tree`` gets one call, with the whole
subtree in ``change.resource`` and ``change.cascade`` set, and answers it as
any call. Any other gets one ``delete`` per resource (a :class:`Sweep`), in
the reverse of the order the tree was built: a child before its parent and,
of two siblings, the newer first, since it may refer to the older (a
listener to its default pool). Each call is an ordinary delete whose
``tree`` no longer holds what went before it.

Each of those deletes is a step of the task, recorded by the plugin as the
steps of a stepped operation are (:mod:`tether.agent.steps`), so a later
attempt skips the resources recorded removed. Nothing is undone when one
fails: a removed resource stays removed, and the attempt fails (retryably
when its error is) naming what the device no longer holds and what remains.

A resource's own delete may answer as any call does: its ``Steps`` run
inside its step, undone as usual when one fails for good but not recorded
one by one (a later attempt runs them again from the first); its
``InProgress`` is polled as a long operation of the task, and the sweep
goes on once it is done.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence

from tether.agent import steps
from tether.common.states import MAX_STEPS, StepState
from tether.drivers.base import Change, Driver, DriverError, InProgress, NotSupported, Resource, Step, Steps

LOG = logging.getLogger(__name__)

#: Resources a summary names at most in each list.
SHOWN = 10


def order(subtree: Resource) -> list[Resource]:
    """The resources of ``subtree`` in the order a sweep deletes them."""
    return list(reversed(list(subtree.walk())))


def step_name(resource: Resource) -> str:
    return f"delete {resource.type} {resource.id}"


class CascadeStopped(DriverError):
    """A resource of a cascade delete could not be deleted: its error, with
    what the sweep removed and what remains. Its type is that error's."""

    def __init__(self, cause: DriverError, summary: str) -> None:
        super().__init__(f"{cause.user_message} ({summary})", f"{cause.operator_message} ({summary})")
        self.cause = cause

    @property
    def type(self) -> str:
        return self.cause.type


class CascadeInterrupted(CascadeStopped):
    """A :class:`CascadeStopped` whose error is worth retrying; the retry
    goes on from the resource that failed."""

    retryable = True


class Sweep:
    """One attempt's cascade delete through a driver that deletes one resource per call.

    :param change: the cascade delete as a ``deletes_tree`` driver would get it.
    :param as_bug: what an exception other than a :class:`DriverError` becomes.
    """

    def __init__(
        self,
        driver: Driver,
        change: Change,
        reporter: steps.Reporter,
        last_attempt: bool,
        as_bug: Callable[[Exception], DriverError],
    ) -> None:
        self.driver = driver
        self.target = change.resource
        self.base = change
        self.reporter = reporter
        self.last_attempt = last_attempt
        self.as_bug = as_bug
        self.order = order(change.resource)
        self.steps = [Step(step_name(r), _nothing) for r in self.order]
        self.position = 0
        #: the root's tree less what the sweep removed
        self.tree = change.tree
        #: the delete under way (polled while its device works on)
        self.change = change
        self.removed: list[Resource] = []
        self._done_before: set[str] = set()

    def run(self, operation: InProgress | None = None) -> InProgress | None:
        """Go on until every resource is deleted (None), or one's delete goes
        on on the device (its InProgress, to be handed back here when it is
        time to poll it).

        :raises CascadeStopped: a delete failed; nothing removed is put back.
        """
        if operation is not None:
            answer = self._guarded(lambda: self.driver.poll(self.change, operation))
            if answer is not None:
                return answer
            self._removed()
        else:
            self._plan()
        while self.position < len(self.order):
            resource = self.order[self.position]
            if self.steps[self.position].name in self._done_before:
                LOG.info("task %s: %s removed by an earlier attempt; skipped", self.base.task_id, resource.id)
                self._removed(report=False)
                continue
            self._guarded(lambda: self._report(StepState.RUNNING))
            self.change = self._change_of(resource)
            answer = self._guarded(lambda: self._delete(self.change))
            if answer is not None:
                return answer
            self._removed()
        return None

    def _plan(self) -> None:
        if len(self.steps) > MAX_STEPS:
            # More than a task records: a retry deletes them all again, which deletes are made for.
            LOG.warning(
                "task %s: %d resources to delete, more than the %d steps a task records; "
                "deleting them unrecorded",
                self.base.task_id,
                len(self.steps),
                MAX_STEPS,
            )
            self.reporter.recording = False
            return
        self._done_before = self.reporter.plan([step.name for step in self.steps])

    def _change_of(self, resource: Resource) -> Change:
        # As the tree holds it now: what was under it is gone already.
        node = self.tree.find(resource.id) or resource
        return dataclasses.replace(self.base, resource=node, tree=self.tree, cascade=False)

    def _delete(self, change: Change) -> InProgress | None:
        resource = change.resource
        if resource.type not in self.driver.resource_types:
            raise NotSupported(
                f"The {self.driver.name or type(self.driver).__name__} driver does not support "
                f"{resource.type} resources (it supports {', '.join(sorted(self.driver.resource_types))})."
            )
        answer = self.driver.delete(change)
        if isinstance(answer, Steps):
            steps.run(answer, _Unrecorded(self.reporter), self.last_attempt, self.as_bug)
            return None
        return answer if isinstance(answer, InProgress) else None

    def _removed(self, report: bool = True) -> None:
        resource = self.order[self.position]
        self.removed.append(resource)
        self.tree = self.tree.without(resource.id)
        self.position += 1
        if report:
            try:
                self.reporter.report(self.position - 1, self.steps[self.position - 1], StepState.DONE)
            except DriverError as exc:
                # Removed all the same; a retry deletes it again, which finds it absent.
                raise self._stopped(exc) from exc

    def _report(self, state: StepState, error: DriverError | None = None) -> None:
        self.reporter.report(self.position, self.steps[self.position], state, error)

    def _guarded(self, call: Callable[[], InProgress | None]) -> InProgress | None:
        try:
            return call()
        except Exception as exc:  # every failure stops the sweep, named
            if not isinstance(exc, DriverError):
                LOG.error("task %s: driver %s raised", self.base.task_id, self.driver.name, exc_info=True)
            error = exc if isinstance(exc, DriverError) else self.as_bug(exc)
            self._failed(error)
            raise self._stopped(error) from exc

    def _stopped(self, error: DriverError) -> CascadeStopped:
        kind = CascadeInterrupted if error.retryable else CascadeStopped
        return kind(error, self._summary())

    def _failed(self, error: DriverError) -> None:
        if self.position >= len(self.order) or isinstance(error, steps.FencedOff):
            return
        try:
            self._report(StepState.FAILED, error)
        except DriverError as exc:
            LOG.warning(
                "task %s: the failure of %s is not recorded: %s",
                self.base.task_id,
                self.steps[self.position].name,
                exc.msg,
            )

    def _summary(self) -> str:
        remaining = self.order[self.position :]
        head = f"cascade delete of {self.target.type} {self.target.id}"
        if remaining:
            head += f" stopped at {remaining[0].type} {remaining[0].id}"
        removed = _names(self.removed) if self.removed else "nothing"
        return f"{head}; removed from the device: {removed}; remaining: {_names(remaining) or 'nothing'}"


class _Unrecorded(steps.Reporter):
    """A resource's own steps, inside its step of the sweep: run, not recorded."""

    def __init__(self, sweep: steps.Reporter) -> None:
        super().__init__(sweep.plugin, sweep.task_id, sweep.attempt, sweep.agent_id)
        self.recording = False

    def plan(self, names: list[str]) -> set[str]:
        return set()


def _names(resources: Sequence[Resource]) -> str:
    shown = ", ".join(f"{r.type} {r.id}" for r in resources[:SHOWN])
    more = f" and {len(resources) - SHOWN} more" if len(resources) > SHOWN else ""
    return shown + more


def _nothing() -> None:
    """A step of a sweep is run by the sweep; its Step only names it."""
