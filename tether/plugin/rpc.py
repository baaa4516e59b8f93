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
import functools
import inspect
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

import sqlalchemy.exc
from sqlalchemy import orm

from tether import __version__
from tether.common import log, metrics, rpc
from tether.common.exceptions import MalformedMessage, ServiceUnavailable
from tether.common.states import OperatingStatus, TaskState
from tether.plugin import lifecycle, notifications
from tether.plugin.agents import Registry
from tether.plugin.db import queries
from tether.plugin.db.models import Resource, Task, TaskAttempt, utcnow
from tether.plugin.providers import Providers

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

#: Longest identifier a call may carry (the database's widest id column).
_MAX_ID = 255
#: Seconds: more than any deadline tether sets, and far below datetime's range.
_MAX_SECONDS = 10 * 365 * 86400
_MAX_COUNTER = 2**31 - 1


def _checked(method: _F) -> _F:
    """Answer a malformed call with MalformedMessage, not a traceback in the log."""
    signature = inspect.signature(method)
    expected = ", ".join(name for name in signature.parameters if name not in ("self", "ctxt"))

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise MalformedMessage(
                    reason=f"RPC call {method.__name__}: {exc}; it takes {expected}"
                ) from exc
            return method(*args, **kwargs)
        except MalformedMessage as exc:
            LOG.warning("refused a malformed RPC call: %s", exc.msg)
            # oslo.messaging sends the original exception to the caller and
            # logs an expected one at debug level only.
            raise oslo_messaging.ExpectedException() from exc

    return cast(_F, wrapper)


def _bad(method: str, name: str, wanted: str, value: Any) -> MalformedMessage:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:80]}… ({len(shown)} characters)"
    return MalformedMessage(
        reason=f"RPC call {method}: {name} must be {wanted}, not {type(value).__name__} {shown}"
    )


def _identifier(method: str, name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    wanted = f"a string of 1 to {_MAX_ID} characters without control characters"
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise _bad(method, name, wanted, value)
    if any(ord(c) < 0x20 for c in value) or not _encodable(value):
        raise _bad(method, name, wanted, value)


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _seconds(method: str, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _MAX_SECONDS
    ):
        raise _bad(method, name, f"a number of seconds from 0 to {_MAX_SECONDS}", value)
    return float(value)


def _counter(method: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNTER:
        raise _bad(method, name, f"an integer from 1 to {_MAX_COUNTER}", value)


def _time(method: str, name: str, value: Any) -> datetime.datetime:
    wanted = "an ISO 8601 time with a UTC offset"
    if not isinstance(value, str) or len(value) > 64:
        raise _bad(method, name, wanted, value)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise _bad(method, name, wanted, value) from None
    if parsed.tzinfo is None:
        # Compared with the database's aware times: a naive one would raise.
        raise _bad(method, name, wanted, value)
    return parsed


def _check_state(state: Any) -> None:
    method = "report_state"
    if not isinstance(state, dict):
        raise _bad(method, "state", "a JSON object", state)
    _identifier(method, "state.agent_id", state.get("agent_id"))
    _time(method, "state.started_at", state.get("started_at"))
    if not isinstance(state.get("host"), str):
        raise _bad(method, "state.host", "a string", state.get("host"))
    providers = state.get("providers")
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise _bad(method, "state.providers", "a list of strings", providers)
    for name in ("workers", "in_flight"):
        value = state.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNTER:
            raise _bad(method, f"state.{name}", f"an integer from 0 to {_MAX_COUNTER}", value)
    for name in ("statuses", "stats"):
        if not isinstance(state.get(name) or {}, dict):
            raise _bad(method, f"state.{name}", "a JSON object", state.get(name))


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

    @_checked
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
        _identifier("claim", "task_id", task_id)
        _identifier("claim", "agent_id", agent_id)
        _identifier("claim", "claim_id", claim_id)
        if not isinstance(redelivered, bool):
            raise _bad("claim", "redelivered", "true or false", redelivered)
        driver_timeout = _seconds("claim", "driver_timeout", driver_timeout)
        _identifier("claim", "request_id", request_id, optional=True)
        with log.request_context(request_id), _database_outage(), self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
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
            if state == TaskState.RUNNING:
                if not redelivered:
                    # A second copy (a republish); the first one is being worked on.
                    return _skip(f"task {task_id} is running on agent {task.agent_id}")
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
            task.running_at = now
            task.deadline = now + datetime.timedelta(seconds=driver_timeout + self._policy.result_grace)
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
                self._policy.max_attempts,
                ", redelivered" if redelivered else "",
            )
            return self._run(task)

    @_checked
    def progress(
        self, ctxt: Any, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        """A long device operation goes on: show its progress, move the deadline.

        :returns: ``{"current": False}`` when the attempt was fenced off, so
            the agent drops the operation.
        """
        _identifier("progress", "task_id", task_id)
        _counter("progress", "attempt", attempt)
        _identifier("progress", "agent_id", agent_id)
        expect_within = _seconds("progress", "expect_within", expect_within)
        with self._sessionmaker.begin() as session:
            task = queries.task_for_update(session, task_id)
            if task is None or task.state != TaskState.RUNNING or task.attempt != attempt:
                return {"current": False}
            task.progress = str(message)[:1000]
            task.deadline = utcnow() + datetime.timedelta(seconds=expect_within + self._policy.result_grace)
            return {"current": True}

    @_checked
    def report_state(self, ctxt: Any, state: dict[str, Any]) -> dict[str, Any]:
        """Record an agent's heartbeat; tell it whether it may take work."""
        _check_state(state)
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

    @_checked
    def resync(self, ctxt: Any, agent_id: str, started_at: str) -> dict[str, Any]:
        """An agent (re)started: dispatch again, at once, what its earlier life held."""
        _identifier("resync", "agent_id", agent_id)
        started = _time("resync", "started_at", started_at)
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


@contextlib.contextmanager
def _database_outage() -> Iterator[None]:
    """A database that is locked or away is an outage the caller waits out,
    not an answer: ServiceUnavailable tells the agent to claim again."""
    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        LOG.warning("a claim met a database outage: %s", str(exc.orig or exc).splitlines()[0])
        raise ServiceUnavailable(reason="the plugin's database is unavailable; claim again shortly") from exc
