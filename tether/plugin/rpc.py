"""The server side of the plugin's RPC API (see :mod:`tether.common.rpc`).

Agents call it to claim a task before running it, to report their state,
and to give back what they held when they restarted.

Nothing checks who sends a call but the broker, and an agent retries a
claim the plugin answered with an error, so every method first checks its
arguments: a malformed call is answered with :class:`MalformedMessage`
naming the argument (the caller sees it as a ``RemoteError``), logged in
one line rather than a traceback, and changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy.exc
from sqlalchemy import orm

from tether import __version__
from tether.common import log, metrics, rpc
from tether.common.exceptions import MalformedMessage, ServiceUnavailable
from tether.common.states import OperatingStatus, TaskState
from tether.plugin import lifecycle, notifications
from tether.plugin import rpc_checks as checks
from tether.plugin.agents import Registry
from tether.plugin.db import queries
from tether.plugin.db.models import Resource, Task, TaskAttempt, utcnow
from tether.plugin.providers import Providers

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")

LOG = logging.getLogger(__name__)


class PluginEndpoint:
    """What agents may call.

    oslo.messaging dispatches a call to any public attribute of an endpoint,
    so everything but the RPC methods (and ``target``) is private.
    """

    target = rpc.endpoint_target()

    def __init__(
        self,
        sessionmaker: orm.sessionmaker[orm.Session],
        policy: lifecycle.Policy,
        agents: Registry,
        providers: Providers | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._policy = policy
        self._agents = agents
        self._providers = providers

    @checks.checked
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
        claim = _claim_args(
            "claim",
            task_id=task_id,
            agent_id=agent_id,
            claim_id=claim_id,
            redelivered=redelivered,
            driver_timeout=driver_timeout,
            request_id=request_id,
        )
        with _database_outage(), self._sessionmaker.begin() as session:
            claimed: list[str] = []
            answer = self._claim(session, queries.tasks_for_update(session, [task_id]), claimed, **claim)
            queries.delete_outbox_of_tasks(session, claimed)
            return answer

    @checks.checked
    def claim_batch(self, ctxt: Any, claims: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Several claims in one transaction (API 1.2): each answer as
        :meth:`claim` gives it, in order, or ``{"error": {"type", "message"}}``
        for a malformed one."""
        if not isinstance(claims, list) or not 1 <= len(claims) <= MAX_CLAIM_BATCH:
            raise checks.bad("claim_batch", "claims", f"a list of 1 to {MAX_CLAIM_BATCH} claims", claims)
        answers: list[dict[str, Any]] = [{} for _ in claims]
        valid = []
        for i, item in enumerate(claims):
            try:
                if not isinstance(item, dict) or not set(item) <= _CLAIM_ARGS:
                    raise checks.bad(
                        "claim_batch", f"claims[{i}]", f"an object of {', '.join(sorted(_CLAIM_ARGS))}", item
                    )
                valid.append((i, _claim_args(f"claim_batch claims[{i}]", **item)))
            except (MalformedMessage, TypeError) as exc:
                message = exc.msg if isinstance(exc, MalformedMessage) else f"claims[{i}]: {exc}"
                LOG.warning("refused a malformed claim: %s", message)
                answers[i] = {"error": {"type": "MalformedMessage", "message": message}}
        if valid:
            with _database_outage(), self._sessionmaker.begin() as session:
                # One statement loads the batch, one deletes its outbox rows.
                tasks = queries.tasks_for_update(session, [claim["task_id"] for _, claim in valid])
                claimed: list[str] = []
                for i, claim in valid:
                    answers[i] = self._claim(session, tasks, claimed, **claim)
                queries.delete_outbox_of_tasks(session, claimed)
        return answers

    def _claim(
        self,
        session: orm.Session,
        tasks: dict[str, Task],
        claimed: list[str],
        task_id: str,
        agent_id: str,
        claim_id: str,
        redelivered: bool,
        driver_timeout: float,
        request_id: str | None,
        published_for: int | None = None,
    ) -> dict[str, Any]:
        with log.request_context(request_id):
            task = tasks.get(task_id)
            if task is None:
                # Flagged, not only said: the agent dead-letters such a message.
                return {**_skip(f"task {task_id} does not exist"), "unknown": True}
            state = TaskState(task.state)
            if state.terminal:
                return _skip(f"task {task_id} is already {state}")
            if state == TaskState.RUNNING and task.claim_id == claim_id:
                return self._run(task)
            if state == TaskState.QUEUED:
                return _skip(f"task {task_id} is queued behind another task on its tree")
            moved = self._moved_away(session, task, agent_id)
            if moved is not None:
                # A copy left in the queue of an agent its tree has moved
                # away from (it was cut off, declared dead, and is back): the
                # work belongs to the new host, and its holder is not dead.
                return _skip(f"task {task_id} belongs to agent {moved}, where its resource moved")
            if state == TaskState.RUNNING:
                if not redelivered:
                    # A second copy (a republish); the first one is being worked on.
                    return _skip(f"task {task_id} is running on agent {task.agent_id}")
                if None not in (published_for, task.claimed_for) and published_for != task.claimed_for:
                    # The redelivered copy is an older attempt's message, held
                    # by an agent that was declared dead before its broker
                    # connection closed; the current holder's is not back.
                    return _skip(
                        f"task {task_id} is running on agent {task.agent_id} (attempt {task.attempt}); "
                        f"this copy was published for attempt {published_for}"
                    )
                # The holder's delivery came back to the queue: its connection
                # (and most likely the agent) died. Fence its attempt off.
                reason = f"agent {task.agent_id} died during attempt {task.attempt}"
                if task.attempt >= self._policy.max_attempts:
                    lifecycle.abandon(session, self._policy, task, "AgentLost", reason)
                    return _skip(f"task {task_id} failed: {task.error_message}")
                _close_attempt(session, task, "AgentLost", reason)
            now = utcnow()
            task.attempt += 1
            task.state = TaskState.RUNNING
            task.agent_id = agent_id[:255]
            task.claim_id = claim_id
            task.claimed_for = published_for
            task.running_at = now
            task.deadline = now + datetime.timedelta(seconds=driver_timeout + self._policy.result_grace)
            # A copy the reaper put in the outbox again is moot now.
            claimed.append(task.id)
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
                self._policy.max_attempts,
                ", redelivered" if redelivered else "",
            )
            return self._run(task)

    def _moved_away(self, session: orm.Session, task: Task, agent_id: str) -> str | None:
        """The agent a host-placed task's tree is bound to, when that is not ``agent_id``."""
        if self._providers is None or not self._providers.is_host_placed(task.provider):
            return None
        root = queries.get_resource(session, task.root_id, None)
        if root is None or root.agent_id is None or root.agent_id == agent_id:
            return None
        return root.agent_id

    @checks.checked
    def progress(
        self, ctxt: Any, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        """A long device operation goes on: show its progress, move the deadline.

        :returns: ``{"current": False}`` when the attempt was fenced off, so
            the agent drops the operation.
        """
        checks.identifier("progress", "task_id", task_id)
        checks.counter("progress", "attempt", attempt)
        checks.identifier("progress", "agent_id", agent_id)
        expect_within = checks.seconds("progress", "expect_within", expect_within)
        with self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            if task is None or task.state != TaskState.RUNNING or task.attempt != attempt:
                return {"current": False}
            task.progress = str(message)[:1000]
            task.deadline = utcnow() + datetime.timedelta(seconds=expect_within + self._policy.result_grace)
            return {"current": True}

    @checks.checked
    def report_state(self, ctxt: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Record an agent's heartbeat; tell it whether it may take work."""
        checks.check_state(state)
        with self._sessionmaker.begin() as session:
            agent = self._agents.report(session, state)
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

    @checks.checked
    def resync(self, ctxt: Any, agent_id: str, started_at: str) -> dict[str, Any]:
        """An agent (re)started: dispatch again, at once, what its earlier life held."""
        checks.identifier("resync", "agent_id", agent_id)
        started = checks.time("resync", "started_at", started_at)
        redispatched = []
        with self._sessionmaker.begin() as session:
            for task in queries.running_on(session, agent_id):
                if task.running_at is not None and task.running_at >= started:
                    continue
                lifecycle.abandon(
                    session,
                    self._policy,
                    task,
                    "AgentRestarted",
                    f"agent {agent_id} restarted during attempt {task.attempt}",
                    delay=0.0,
                )
                redispatched.append(task.id)
            for root in queries.bound_to(session, agent_id):
                # What this host should hold, applied in full: restarts what is missing.
                if not queries.in_flight_tasks(session, root.id):
                    lifecycle.reapply(session, self._policy, root, f"agent {agent_id} restarted")
        if redispatched:
            LOG.warning(
                "agent %s restarted holding %d task(s); dispatched again: %s",
                agent_id,
                len(redispatched),
                ", ".join(redispatched),
            )
        return {"redispatched": redispatched}

    def _run(self, task: Task) -> dict[str, Any]:
        return {"run": True, "attempt": task.attempt, "max_attempts": self._policy.max_attempts}


def _skip(reason: str) -> dict[str, Any]:
    return {"run": False, "reason": reason}


def _close_attempt(session: orm.Session, task: Task, error_type: str, reason: str) -> None:
    row = queries.get_attempt(session, task.id, task.attempt)
    if row is not None and row.outcome is None:
        row.outcome = "ABANDONED"
        row.finished_at = utcnow()
        row.error_type, row.error_message = error_type, reason


#: Claims one ``claim_batch`` call may carry.
MAX_CLAIM_BATCH = 256
_CLAIM_ARGS = {
    "task_id",
    "agent_id",
    "claim_id",
    "redelivered",
    "driver_timeout",
    "request_id",
    "published_for",
}


def _claim_args(
    method: str,
    task_id: Any,
    agent_id: Any,
    claim_id: Any,
    redelivered: Any,
    driver_timeout: Any,
    request_id: Any = None,
    published_for: Any = None,
) -> dict[str, Any]:
    checks.identifier(method, "task_id", task_id)
    if published_for is not None:
        checks.counter(method, "published_for", published_for)
    checks.identifier(method, "agent_id", agent_id)
    checks.identifier(method, "claim_id", claim_id)
    if not isinstance(redelivered, bool):
        raise checks.bad(method, "redelivered", "true or false", redelivered)
    checks.identifier(method, "request_id", request_id, optional=True)
    return {
        "task_id": task_id,
        "agent_id": agent_id,
        "claim_id": claim_id,
        "redelivered": redelivered,
        "driver_timeout": checks.seconds(method, "driver_timeout", driver_timeout),
        "request_id": request_id,
        "published_for": published_for,
    }


@contextlib.contextmanager
def _database_outage() -> Iterator[None]:
    """A database that is locked or away is an outage the caller waits out,
    not an answer: ServiceUnavailable tells the agent to claim again."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        LOG.warning("a claim met a database outage: %s", str(exc.orig or exc).splitlines()[0])
        raise ServiceUnavailable(reason="the plugin's database is unavailable; claim again shortly") from exc
