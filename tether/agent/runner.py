"""Running one work message through its driver, in a worker thread.

Whatever the driver does (returns, raises, hangs until its deadline), the
runner turns it into a :class:`~tether.common.messages.Result`: a driver
exception becomes a FAILED result carrying its message, never a dead agent.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping

from tether.agent.driver_manager import AgentCallbacks
from tether.common import log, messages
from tether.common.states import Outcome
from tether.drivers.base import Change, Driver, DriverError, NotSupported, Resource

LOG = logging.getLogger(__name__)


class Runner:
    def __init__(self, drivers: Mapping[str, Driver], agent_id: str, host: str) -> None:
        self.drivers = drivers
        self.agent_id = agent_id
        self.host = host

    def run(self, work: messages.Work, redelivered: bool = False) -> messages.Result:
        task = work.task
        with log.request_context(work.request_id), AgentCallbacks.collect() as statuses:
            started = _now()
            LOG.info(
                "agent %s running task %s: %s %s %s (generation %d, attempt %d%s) with driver %s",
                self.agent_id,
                task["id"],
                task["operation"],
                task["resource_type"],
                task["resource_id"],
                task["generation"],
                task["attempt"],
                ", redelivered" if redelivered else "",
                task["provider"],
            )
            error_type = error_message = None
            try:
                self._call(work)
            except DriverError as exc:
                error_type, error_message = exc.type, exc.user_message
                LOG.error("task %s failed: %s: %s", task["id"], exc.type, exc.operator_message)
            except Exception as exc:
                error_type = "DriverBug"
                error_message = (
                    f"The {task['provider']} driver failed unexpectedly "
                    f"({type(exc).__name__}: {exc}); see the agent's log."
                )
                LOG.exception("task %s: driver %s raised", task["id"], task["provider"])
            else:
                LOG.info("task %s succeeded", task["id"])
            return messages.Result(
                task_id=task["id"],
                attempt=task["attempt"],
                outcome=Outcome.FAILED if error_type else Outcome.SUCCEEDED,
                agent_id=self.agent_id,
                host=self.host,
                request_id=work.request_id,
                statuses=dict(statuses),
                error_type=error_type,
                error_message=error_message,
                started_at=started,
                finished_at=_now(),
            )

    def _call(self, work: messages.Work) -> None:
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
            attempt=task["attempt"],
            request_id=work.request_id,
            resource=Resource.from_dict(work.resource),
            tree=Resource.from_dict(work.tree),
        )
        getattr(driver, task["operation"])(change)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat()
