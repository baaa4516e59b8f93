"""The server side of the plugin's RPC API (see :mod:`tether.common.rpc`).

Agents call it to claim a task before running it, to report their state,
and to give back what they held when they restarted.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import orm

from tether import __version__
from tether.common import log, metrics, rpc
from tether.common.states import OperatingStatus, TaskState
from tether.plugin import lifecycle, notifications
from tether.plugin.agents import Registry
from tether.plugin.db import queries
from tether.plugin.db.models import Resource, Task, TaskAttempt, utcnow
from tether.plugin.providers import Providers

LOG = logging.getLogger(__name__)


class PluginEndpoint:
    """What agents may call."""

    target = rpc.endpoint_target()

    def __init__(
        self,
        sessionmaker: orm.sessionmaker[orm.Session],
        policy: lifecycle.Policy,
        agents: Registry,
        providers: Providers | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.policy = policy
        self.agents = agents
        self.providers = providers

    def claim(
        self,
        ctxt: Any,
        task_id: str,
        agent_id: str,
        claim_id: str,
        redelivered: bool,
        driver_timeout: float,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """PENDING → RUNNING for this agent, with the next attempt number.

        :returns: ``{"run": True, "attempt": N, "max_attempts": M}``, or
            ``{"run": False, "reason": ...}`` when the agent must ack the
            message and skip it.
        """
        with log.request_context(request_id), self.sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            if task is None:
                return _skip(f"task {task_id} does not exist")
            state = TaskState(task.state)
            if state.terminal:
                return _skip(f"task {task_id} is already {state}")
            if state == TaskState.RUNNING and task.claim_id == claim_id:
                return self._run(task)
            if state == TaskState.QUEUED:
                return _skip(f"task {task_id} is queued behind another task on its tree")
            if state == TaskState.RUNNING:
                if not redelivered:
                    # A second copy (a republish); the first one is being worked on.
                    return _skip(f"task {task_id} is running on agent {task.agent_id}")
                # The holder's delivery came back to the queue: its connection
                # (and most likely the agent) died. Fence its attempt off.
                reason = f"agent {task.agent_id} died during attempt {task.attempt}"
                if task.attempt >= self.policy.max_attempts:
                    lifecycle.abandon(session, self.policy, task, "AgentLost", reason)
                    return _skip(f"task {task_id} failed: {task.error_message}")
                _close_attempt(session, task, "AgentLost", reason)
            now = utcnow()
            task.attempt += 1
            task.state = TaskState.RUNNING
            task.agent_id = agent_id[:255]
            task.claim_id = claim_id
            task.running_at = now
            task.deadline = now + datetime.timedelta(seconds=driver_timeout + self.policy.result_grace)
            queries.delete_outbox_of(session, task.id)
            if redelivered:
                metrics.REDELIVERIES.labels(task.provider).inc()
            session.add(
                TaskAttempt(
                    task_id=task.id,
                    attempt=task.attempt,
                    agent_id=task.agent_id,
                    redelivered=redelivered,
                    claimed_at=now,
                )
            )
            notifications.task_changed(session, task)
            LOG.info(
                "task %s claimed by agent %s (attempt %d of %d%s)",
                task.id,
                agent_id,
                task.attempt,
                self.policy.max_attempts,
                ", redelivered" if redelivered else "",
            )
            return self._run(task)

    def progress(
        self, ctxt: Any, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        """A long device operation goes on: show its progress, move the deadline.

        :returns: ``{"current": False}`` when the attempt was fenced off, so
            the agent drops the operation.
        """
        with self.sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            if task is None or task.state != TaskState.RUNNING or task.attempt != attempt:
                return {"current": False}
            task.progress = str(message)[:1000]
            task.deadline = utcnow() + datetime.timedelta(seconds=expect_within + self.policy.result_grace)
            return {"current": True}

    def report_state(self, ctxt: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Record an agent's heartbeat; tell it whether it may take work."""
        with self.sessionmaker.begin() as session:
            agent = self.agents.report(session, state)
            bound = queries.bound_to(session, agent.id)
            self._apply_reports(session, bound, state)
            by_provider: dict[str, list[str]] = {}
            for root in bound:
                by_provider.setdefault(root.provider, []).append(root.id)
            return {
                "admin_state_up": agent.admin_state_up,
                "plugin_version": __version__,
                "bound": by_provider,
            }

    @staticmethod
    def _apply_reports(session: orm.Session, bound: Sequence[Resource], state: dict[str, Any]) -> None:
        """Status and counters a host-placed driver reported, for the trees on that host only."""
        statuses, stats = state.get("statuses") or {}, state.get("stats") or {}
        if not statuses and not stats:
            return
        roots = {root.id for root in bound}
        for resource_id in set(statuses) | set(stats):
            resource = queries.get_resource(session, str(resource_id), None)
            if resource is None or resource.root_id not in roots:
                continue
            if statuses.get(resource_id) in OperatingStatus.__members__:
                resource.operating_status = statuses[resource_id]
            if isinstance(stats.get(resource_id), dict):
                resource.stats = stats[resource_id]

    def resync(self, ctxt: Any, agent_id: str, started_at: str) -> dict[str, Any]:
        """An agent (re)started: dispatch again, at once, what its earlier life held."""
        started = datetime.datetime.fromisoformat(started_at)
        redispatched = []
        with self.sessionmaker.begin() as session:
            for task in queries.running_on(session, agent_id):
                if task.running_at is not None and task.running_at >= started:
                    continue
                lifecycle.abandon(
                    session,
                    self.policy,
                    task,
                    "AgentRestarted",
                    f"agent {agent_id} restarted during attempt {task.attempt}",
                    delay=0.0,
                )
                redispatched.append(task.id)
            for root in queries.bound_to(session, agent_id):
                # What this host should hold, applied in full: restarts what is missing.
                if not queries.in_flight_tasks(session, root.id):
                    lifecycle.reapply(session, self.policy, root, f"agent {agent_id} restarted")
        if redispatched:
            LOG.warning(
                "agent %s restarted holding %d task(s); dispatched again: %s",
                agent_id,
                len(redispatched),
                ", ".join(redispatched),
            )
        return {"redispatched": redispatched}

    def _run(self, task: Task) -> dict[str, Any]:
        return {"run": True, "attempt": task.attempt, "max_attempts": self.policy.max_attempts}


def _skip(reason: str) -> dict[str, Any]:
    return {"run": False, "reason": reason}


def _close_attempt(session: orm.Session, task: Task, error_type: str, reason: str) -> None:
    row = queries.get_attempt(session, task.id, task.attempt)
    if row is not None and row.outcome is None:
        row.outcome = "ABANDONED"
        row.finished_at = utcnow()
        row.error_type, row.error_message = error_type, reason
