"""Running one work message through its driver, in a worker thread.

First the task is claimed from the plugin, which answers with the attempt
number (or tells the agent to skip a task that is finished or taken). Then
the driver runs. Whatever it does (returns, raises, hangs past
``driver_timeout``), the outcome becomes a
:class:`~tether.common.messages.Result`: a driver exception becomes a FAILED
result carrying its message, never a dead agent.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Mapping
from typing import Any

from tether.agent.driver_manager import AgentCallbacks
from tether.agent.plugin_api import PluginApi
from tether.common import log, messages
from tether.common.states import Outcome
from tether.drivers.base import Change, Driver, DriverError, NotSupported, Resource

LOG = logging.getLogger(__name__)


class DriverBug(DriverError):
    """A driver raised something other than a DriverError."""


class DriverTimeout(DriverError):
    """A driver call overran ``driver_timeout``; the device may just be slow."""

    retryable = True


class Runner:
    def __init__(
        self,
        drivers: Mapping[str, Driver],
        plugin: PluginApi,
        agent_id: str,
        host: str,
        driver_timeout: float,
    ) -> None:
        self.drivers = drivers
        self.plugin = plugin
        self.agent_id = agent_id
        self.host = host
        self.driver_timeout = driver_timeout

    def claim(self, work: messages.Work, redelivered: bool, stopping: threading.Event) -> dict[str, Any]:
        """Ask the plugin for the task; ``{"run": False, ...}`` means skip it."""
        with log.request_context(work.request_id):
            answer = self.plugin.claim_until_answered(
                work.task_id, self.agent_id, redelivered, self.driver_timeout, stopping
            )
            if not answer.get("run"):
                LOG.info("agent %s skips task %s: %s", self.agent_id, work.task_id, answer.get("reason"))
            return answer

    def apply(self, work: messages.Work, attempt: int) -> messages.Result:
        """Call the driver for the claimed ``attempt``."""
        task = work.task
        with log.request_context(work.request_id), AgentCallbacks.collect() as statuses:
            started = _now()
            LOG.info(
                "agent %s running task %s: %s %s %s (generation %d, attempt %d) with driver %s",
                self.agent_id,
                task["id"],
                task["operation"],
                task["resource_type"],
                task["resource_id"],
                task["generation"],
                attempt,
                task["provider"],
            )
            error: DriverError | None = None
            try:
                self._call(work, attempt)
            except DriverError as exc:
                error = exc
                LOG.error("task %s failed: %s: %s", task["id"], exc.type, exc.operator_message)
            except Exception as exc:
                error = DriverBug(
                    f"The {task['provider']} driver failed unexpectedly "
                    f"({type(exc).__name__}: {exc}); see the agent's log."
                )
                LOG.exception("task %s: driver %s raised", task["id"], task["provider"])
            else:
                LOG.info("task %s succeeded", task["id"])
            return self._result(work, attempt, started, statuses, error)

    def timed_out(self, work: messages.Work, attempt: int, started: str) -> messages.Result:
        """The result of a call that overran ``driver_timeout``."""
        error = DriverTimeout(
            f"The {work.task['provider']} driver did not return within "
            f"{self.driver_timeout:g} s (driver_timeout)."
        )
        LOG.error("task %s: %s", work.task_id, error.msg)
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
            error_type=error.type if error else None,
            error_message=error.user_message if error else None,
            retryable=bool(error and error.retryable),
            started_at=started,
            finished_at=_now(),
        )

    def _call(self, work: messages.Work, attempt: int) -> None:
        task = work.task
        driver = self.drivers.get(task["provider"])
        if driver is None:
            raise NotSupported(
                f"This agent ({self.agent_id}) does not serve provider {task['provider']!r}; "
                f"it serves {', '.join(sorted(self.drivers))}."
            )
        if task["resource_type"] not in driver.resource_types:
            raise NotSupported(
                f"The {task['provider']} driver does not support {task['resource_type']} "
                f"resources (it supports {', '.join(sorted(driver.resource_types))})."
            )
        change = Change(
            task_id=task["id"],
            operation=task["operation"],
            generation=task["generation"],
            attempt=attempt,
            request_id=work.request_id,
            resource=Resource.from_dict(work.resource),
            tree=Resource.from_dict(work.tree),
        )
        getattr(driver, task["operation"])(change)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()
