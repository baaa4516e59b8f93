"""Running one work message through its driver, in a worker thread.

First the task is claimed from the plugin, which answers with the attempt
number (or tells the agent to skip a task that is finished or taken). Then
the driver runs. Whatever it does (returns, raises, hangs past
``driver_timeout``), the outcome becomes a
:class:`~tether.common.messages.Result`: a driver exception becomes a FAILED
result carrying its user message (:mod:`tether.drivers.reporting`), and the
log line its operator message, never a dead agent.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tether.agent import cascade, steps
from tether.agent.driver_manager import AgentCallbacks
from tether.agent.plugin_api import PluginApi
from tether.agent.reports import Reports
from tether.common import log, messages, metrics
from tether.common.states import Operation, Outcome, ProvisioningStatus
from tether.drivers import reporting
from tether.drivers.base import Change, Driver, DriverError, InProgress, NotSupported, Resource, Steps

LOG = logging.getLogger(__name__)


class DriverTimeout(DriverError):
    """A driver call overran ``driver_timeout``; the device may just be slow."""

    retryable = True


@dataclasses.dataclass(frozen=True)
class Pending:
    """A device operation that goes on after its driver call returned."""

    work: messages.Work
    attempt: int
    #: what the driver was given, handed to its poll as it was
    change: Change
    operation: InProgress
    started_at: str
    #: monotonic time of the first call, for the overall operation_timeout
    started: float
    #: the cascade delete the operation is one resource's delete of
    sweep: cascade.Sweep | None = None

    @property
    def task_id(self) -> str:
        return self.work.task_id


class Tally:
    """Counts succeeded tasks and says so at INFO once a minute, while there are any."""

    EVERY = 60.0

    def __init__(self, agent_id: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.agent_id = agent_id
        self._clock = clock
        self._count = 0
        self._since = clock()
        self._lock = threading.Lock()

    def count(self) -> None:
        now = self._clock()
        with self._lock:
            self._count += 1
            if now - self._since < self.EVERY:
                return
            count, since, self._count, self._since = self._count, self._since, 0, now
        LOG.info("agent %s: %d task(s) succeeded in the last %.0f s", self.agent_id, count, now - since)


class Runner:
    def __init__(
        self,
        drivers: Mapping[str, Driver],
        plugin: PluginApi,
        agent_id: str,
        host: str,
        driver_timeout: float,
        reports: Reports | None = None,
    ) -> None:
        self.drivers = drivers
        self.reports = reports or Reports()
        self.plugin = plugin
        self.agent_id = agent_id
        self.host = host
        self.driver_timeout = driver_timeout
        self.tally = Tally(agent_id)

    def claim(self, work: messages.Work, redelivered: bool, stopping: threading.Event) -> dict[str, Any]:
        """Ask the plugin for the task; ``{"run": False, ...}`` means skip it."""
        with log.request_context(work.request_id):
            answer = self.plugin.claim_until_answered(
                work.task_id,
                self.agent_id,
                redelivered,
                self.driver_timeout,
                stopping,
                published_for=work.task.attempt,
            )
            if not answer.get("run"):
                LOG.info("agent %s skips task %s: %s", self.agent_id, work.task_id, answer.get("reason"))
            return answer

    def apply(
        self, work: messages.Work, attempt: int, max_attempts: int | None = None
    ) -> messages.Result | Pending:
        """Call the driver for the claimed ``attempt`` (of ``max_attempts``)."""
        return self._drive(
            work, attempt, None, last_attempt=max_attempts is not None and attempt >= max_attempts
        )

    def poll(self, pending: Pending) -> messages.Result | Pending:
        """Ask the driver about an operation an earlier call left running."""
        return self._drive(pending.work, pending.attempt, pending)

    def _drive(
        self, work: messages.Work, attempt: int, pending: Pending | None, last_attempt: bool = False
    ) -> messages.Result | Pending:
        task = work.task
        with (
            log.request_context(work.request_id),
            AgentCallbacks.collect() as statuses,
            self.reports.running(task.id, attempt),
        ):
            started = pending.started_at if pending else _now()
            if pending is None:
                LOG.debug(
                    "agent %s running task %s: %s %s %s (generation %d, attempt %d) with driver %s",
                    self.agent_id,
                    task.id,
                    task.operation,
                    task.resource_type,
                    task.resource_id,
                    task.generation,
                    attempt,
                    task.provider,
                )
            change = pending.change if pending else _change(work, attempt)
            sweep = pending.sweep if pending else None
            error: DriverError | None = None
            answer: InProgress | Steps | None = None
            began = time.monotonic()
            try:
                driver = self._driver(task)
                if pending is None and change.cascade and not driver.deletes_tree:
                    reporter = steps.Reporter(self.plugin, task.id, attempt, self.agent_id)
                    sweep = cascade.Sweep(
                        driver,
                        change,
                        reporter,
                        last_attempt,
                        lambda exc: reporting.as_driver_error(exc, task.provider),
                    )
                if sweep is not None:
                    answer = sweep.run(pending.operation if pending else None)
                    change = sweep.change
                else:
                    answer = self._call(driver, change, pending)
                if isinstance(answer, Steps):
                    reporter = steps.Reporter(self.plugin, task.id, attempt, self.agent_id)
                    steps.run(
                        answer,
                        reporter,
                        last_attempt,
                        lambda exc: reporting.as_driver_error(exc, task.provider),
                    )
                    answer = None
            except DriverError as exc:
                error = exc
                # A failure the plugin will retry is not yet an error of the task.
                LOG.log(
                    logging.WARNING if exc.retryable else logging.ERROR,
                    "task %s failed: %s: %s%s",
                    task.id,
                    exc.type,
                    reporting.logged(exc),
                    " (retryable)" if exc.retryable else "",
                )
            except Exception as exc:
                error = reporting.as_driver_error(exc, task.provider)
                LOG.exception("task %s: driver %s raised", task.id, task.provider)
            finally:
                outcome = "failed" if error is not None else "succeeded"
                metrics.DRIVER_SECONDS.labels(task.provider, task.operation, outcome).observe(
                    time.monotonic() - began
                )
            if error is None:
                if isinstance(answer, InProgress):
                    LOG.info(
                        "task %s in progress on the device: %s; asking again in %.1f s",
                        task.id,
                        answer.progress or "no detail",
                        answer.poll_after,
                    )
                    first = pending.started if pending else time.monotonic()
                    self.reports.keep(task.id, attempt)
                    return Pending(work, attempt, change, answer, started, first, sweep)
                # A line per task at INFO was a tenth of an agent's CPU at
                # full load; the plugin's task history holds each anyway.
                self.tally.count()
                LOG.debug("task %s succeeded in %.0f ms", task.id, 1000 * (time.monotonic() - began))
            self.reports.drop(task.id, attempt)
            return self._result(work, attempt, started, statuses, error)

    def report_progress(self, pending: Pending) -> bool:
        """Tell the plugin the device works on; False if the attempt was fenced off."""
        try:
            answer = self.plugin.progress(
                pending.task_id,
                pending.attempt,
                self.agent_id,
                pending.operation.progress or "in progress",
                pending.operation.poll_after,
            )
        except Exception as exc:  # noqa: BLE001 - the deadline will tell the plugin instead
            LOG.warning("task %s: cannot report progress (%s); carrying on", pending.task_id, exc)
            return True
        if not answer.get("current", False):
            self.reports.drop(pending.task_id, pending.attempt)
            LOG.warning(
                "task %s: attempt %d was taken over elsewhere; dropping its operation",
                pending.task_id,
                pending.attempt,
            )
            return False
        return True

    def operation_timed_out(self, pending: Pending, limit: float) -> messages.Result:
        error = DriverTimeout(
            f"The device operation of the {pending.work.task.provider} driver did not "
            f"finish within {limit:g} s (operation_timeout)."
        )
        LOG.error("task %s: %s", pending.task_id, error.msg)
        self.reports.drop(pending.task_id, pending.attempt)
        return self._result(pending.work, pending.attempt, pending.started_at, {}, error)

    def timed_out(self, work: messages.Work, attempt: int, started: str) -> messages.Result:
        """The result of a call that overran ``driver_timeout``."""
        error = DriverTimeout(
            f"The {work.task.provider} driver did not return within "
            f"{self.driver_timeout:g} s (driver_timeout)."
        )
        LOG.error("task %s: %s", work.task_id, error.msg)
        # A long operation's poll that overran ends the operation too.
        self.reports.drop(work.task_id, attempt)
        return self._result(work, attempt, started, {}, error)

    def _result(
        self,
        work: messages.Work,
        attempt: int,
        started: str,
        statuses: dict[str, str],
        error: DriverError | None,
    ) -> messages.Result:
        return messages.Result(
            task_id=work.task_id,
            attempt=attempt,
            outcome=Outcome.FAILED if error else Outcome.SUCCEEDED,
            agent_id=self.agent_id,
            host=self.host,
            request_id=work.request_id,
            statuses=dict(statuses),
            error=reporting.reported(error) if error else None,
            started_at=started,
            finished_at=_now(),
            undone=isinstance(error, steps.StepsFailed) and error.undone,
        )

    def _driver(self, task: messages.WorkTask) -> Driver:
        provider = task.provider
        driver = self.drivers.get(provider)
        if driver is None:
            raise NotSupported(
                f"This agent ({self.agent_id}) does not serve provider {provider!r}; "
                f"it serves {', '.join(sorted(self.drivers))}."
            )
        if task.resource_type not in driver.resource_types:
            raise NotSupported(
                f"The {provider} driver does not support {task.resource_type} "
                f"resources (it supports {', '.join(sorted(driver.resource_types))})."
            )
        return driver

    @staticmethod
    def _call(driver: Driver, change: Change, pending: Pending | None) -> InProgress | Steps | None:
        if pending is not None:
            return driver.poll(change, pending.operation)
        answer = getattr(driver, change.operation)(change)
        return answer if isinstance(answer, InProgress | Steps) else None


def _change(work: messages.Work, attempt: int) -> Change:
    """What the driver is given for ``attempt`` of ``work``: the SDK's types, not the wire's.

    A cascade delete's ``resource`` is the subtree it removes, as the tree holds it.
    """
    tree = _resource(work.tree)
    subtree = None
    if work.task.cascade and work.task.operation == Operation.DELETE:
        subtree = tree.find(work.task.resource_id)
    return Change(
        task_id=work.task.id,
        operation=work.task.operation,
        generation=work.task.generation,
        attempt=attempt,
        request_id=work.request_id,
        resource=subtree or _resource(work.resource),
        tree=tree,
        cascade=subtree is not None,
    )


def _resource(node: messages.DesiredResource) -> Resource:
    return Resource(
        type=node.type,
        id=node.id,
        project_id=node.project_id,
        attributes=dict(node.attributes),
        parent_id=node.parent_id,
        children=tuple(_resource(child) for child in node.children),
        provisioning_status=ProvisioningStatus.known(node.provisioning_status),
        applied_generation=node.applied_generation,
    )


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()
