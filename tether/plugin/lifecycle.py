"""The task state machine: dispatch, claim, progress, result, retry, finish.

Every path that moves a task (the API accepting a change, a claim, a
result, a cancel, the reaper) goes through these functions, inside the
caller's transaction, so the rules live in one place; the claim server, the
RPC endpoint and the result consumer only translate messages into calls:

* a claim makes a PENDING task RUNNING on one agent with the next attempt
  number; a redelivered claim of a RUNNING task fences the attempt it
  replaces off (guarantee 4), unless the copy was published for an older
  attempt than the one running;

* a task is dispatched by writing an outbox row (never by publishing
  directly), so dispatch commits or rolls back with the state change;
* a result is kept in the task's history always, and applied only when its
  attempt is the current one of a RUNNING task (fencing);
* a retry is a new dispatch after a capped exponential backoff with jitter,
  up to ``max_attempts`` claims; then the task fails with the last reason,
  stated as "attempt N of M";
* a task that finishes moves its resource: ACTIVE (or gone, after a delete)
  on success, ERROR with ``last_error`` on failure.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from oslo_config import cfg
from sqlalchemy import orm

from tether.common import log, messages, metrics, transport
from tether.common.claims import Claim, ClaimAnswer
from tether.common.states import OperatingStatus, Operation, Outcome, ProvisioningStatus, TaskState
from tether.plugin import callbacks, notifications, work
from tether.plugin.db import attempts, queries
from tether.plugin.db.models import Outbox, Resource, Task, TaskAttempt, utcnow

LOG = logging.getLogger(__name__)

#: ``session.info`` key: (task id, resource id) of tasks that reached a
#: terminal state in the session, for whoever waits on them after commit.
FINISHED = "tether.finished"
FINISHED_METRICS = "tether.finished-metrics"

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        help="Claims of one task by agents before it fails for good: a retryable driver "
        "error, a driver timeout or the death of the agent running it each use one.",
    ),
    cfg.FloatOpt(
        "retry_backoff",
        default=2.0,
        min=0,
        help="Seconds before the first retry; doubled "
        "for each further attempt, with up to 50% random jitter.",
    ),
    cfg.FloatOpt("retry_backoff_max", default=60.0, min=0, help="Longest wait before a retry, in seconds."),
    cfg.FloatOpt(
        "pending_timeout",
        default=300.0,
        min=1,
        help="Seconds a published task may wait unclaimed before the reaper looks at it: "
        "it fails the task when no live agent serves its provider, waits on while its work "
        "queue still holds messages, and publishes it again when the queue has drained. "
        "Raise it where agents may be away longer and work should wait for them.",
    ),
    cfg.FloatOpt(
        "result_grace",
        default=30.0,
        min=0,
        help="Seconds beyond an agent's driver_timeout that the plugin waits for the result "
        "of a claimed task before the reaper retries or fails it.",
    ),
]


@dataclasses.dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    retry_backoff: float = 2.0
    retry_backoff_max: float = 60.0
    pending_timeout: float = 300.0
    result_grace: float = 30.0
    #: the routing key of a task's work message (host placement); the provider when None
    router: Callable[[orm.Session, Task], str | None] | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Policy:
        group = conf.plugin
        return cls(
            group.max_attempts,
            group.retry_backoff,
            group.retry_backoff_max,
            group.pending_timeout,
            group.result_grace,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt``."""
        delay: float = min(self.retry_backoff_max, self.retry_backoff * 2.0 ** max(attempt - 1, 0))
        return delay * random.uniform(0.5, 1.0)


def enqueue(
    session: orm.Session,
    policy: Policy,
    task: Task,
    resource: Resource,
    delay: float = 0.0,
    tree: Sequence[Resource] | None = None,
) -> None:
    """Make ``task`` PENDING and commit its work message to the outbox.

    :param delay: seconds before the relay may publish it (a retry's backoff).
    :param tree: the resources of ``task``'s tree, when the caller has them all.
    """
    now = utcnow()
    not_before = now + datetime.timedelta(seconds=delay) if delay else None
    task.state = TaskState.PENDING
    task.pending_at = now
    notifications.task_changed(session, task)
    task.claim_id = None
    task.deadline = (not_before or now) + datetime.timedelta(seconds=policy.pending_timeout)
    routing_key = policy.router(session, task) if policy.router else task.provider
    if routing_key is None:
        # Not published: pending_at stays empty, which is how the reaper finds it.
        task.pending_at = None
        LOG.warning("task %s waits: no live agent serves provider %s", task.id, task.provider)
        return
    message = work.message(
        task, resource, tree if tree is not None else queries.tree(session, resource.root_id)
    )
    session.add(
        Outbox(
            task_id=task.id,
            exchange=transport.WORK_EXCHANGE,
            routing_key=routing_key,
            payload=messages.encode(message).decode(),
            request_id=task.request_id,
            not_before=not_before,
        )
    )


def retry_or_fail(
    session: orm.Session,
    policy: Policy,
    task: Task,
    error_type: str,
    reason: str,
    delay: float | None = None,
) -> None:
    """After a failed attempt: dispatch again, or fail for good.

    :param delay: seconds before the retry; a backoff when None.
    """
    resource = queries.get_resource(session, task.resource_id, None)
    if task.attempt < policy.max_attempts and resource is not None:
        delay = policy.backoff(task.attempt) if delay is None else delay
        task.error_type, task.error_message = error_type[:64], reason
        enqueue(session, policy, task, resource, delay)
        metrics.RETRIES.labels(task.provider, error_type[:64]).inc()
        LOG.warning(
            "task %s: %s; retrying in %.1f s (attempt %d of %d failed)",
            task.id,
            reason,
            delay,
            task.attempt,
            policy.max_attempts,
        )
        return
    fail(session, policy, task, error_type, f"{reason} (attempt {task.attempt} of {policy.max_attempts})")


def abandon(
    session: orm.Session, policy: Policy, task: Task, error_type: str, reason: str, delay: float | None = None
) -> None:
    """The current attempt will never report (its agent died or lost it):
    close it in the history, then retry or fail the task."""
    _close_attempt(session, task, error_type, reason)
    retry_or_fail(session, policy, task, error_type, reason, delay)


class ClaimedTask(Protocol):
    """What deciding a claim reads of a task (:data:`tether.plugin.db.attempts.CLAIM_COLUMNS`)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def claim_id(self) -> str | None: ...
    @property
    def claimed_for(self) -> int | None: ...
    @property
    def agent_id(self) -> str | None: ...
    @property
    def provider(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class ClaimDecision:
    """What a claim does: answer without a change, or take the task."""

    #: the answer when the claim changes nothing; None when it takes the task
    answer: ClaimAnswer | None = None
    #: why the attempt the claim replaces is over (its agent died)
    abandon: str | None = None
    #: that attempt was the last one: the task fails instead of being taken
    exhausted: bool = False


def decide_claim(
    policy: Policy, task: ClaimedTask | None, request: Claim, bound_to: str | None
) -> ClaimDecision:
    """Decide one claim of ``task`` (read under its lock; None when there is no such task).

    :param bound_to: the agent a host-placed task's tree is bound to, if any.
    """
    if task is None:
        # Flagged, not only said: the agent dead-letters such a message.
        return _skip(ClaimAnswer(reason=f"task {request.task_id} does not exist", unknown=True))
    state = TaskState(task.state)
    if state.terminal:
        return _skip(ClaimAnswer(reason=f"task {task.id} is already {state}"))
    if state == TaskState.RUNNING and task.claim_id == request.claim_id:
        return _skip(_run(policy, task.attempt))
    if state == TaskState.QUEUED:
        return _skip(ClaimAnswer(reason=f"task {task.id} is queued behind another task on its tree"))
    if bound_to is not None and bound_to != request.agent_id:
        # A copy left in the queue of an agent its tree has moved away from
        # (it was cut off, declared dead, and is back): the work belongs to
        # the new host, and its holder is not dead.
        return _skip(
            ClaimAnswer(reason=f"task {task.id} belongs to agent {bound_to}, where its resource moved")
        )
    if state != TaskState.RUNNING:
        return ClaimDecision()
    if not request.redelivered:
        # A second copy (a republish); the first one is being worked on.
        return _skip(ClaimAnswer(reason=f"task {task.id} is running on agent {task.agent_id}"))
    published_for = request.published_for
    if None not in (published_for, task.claimed_for) and published_for != task.claimed_for:
        # The redelivered copy is an older attempt's message, held by an
        # agent that was declared dead before its broker connection closed;
        # the current holder's is not back.
        return _skip(
            ClaimAnswer(
                reason=f"task {task.id} is running on agent {task.agent_id} (attempt {task.attempt}); "
                f"this copy was published for attempt {published_for}"
            )
        )
    # The holder's delivery came back to the queue: its connection (and most
    # likely the agent) died. Fence its attempt off.
    reason = f"agent {task.agent_id} died during attempt {task.attempt}"
    return ClaimDecision(abandon=reason, exhausted=task.attempt >= policy.max_attempts)


def take(
    session: orm.Session, policy: Policy, taken: Sequence[tuple[ClaimedTask, Claim, ClaimDecision]]
) -> list[ClaimAnswer]:
    """PENDING (or RUNNING on a dead agent) → RUNNING for the claims that take
    their task, in set-based statements; the answer to each, in order."""
    now = utcnow()
    takes: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    opens: dict[tuple[str, int], dict[str, Any]] = {}
    answers: list[ClaimAnswer] = []
    for task, request, decision in taken:
        attempt = task.attempt + 1
        takes.append(
            {
                "id": task.id,
                "was_state": task.state,
                "was_attempt": task.attempt,
                "attempt": attempt,
                "agent_id": request.agent_id[:255],
                "claim_id": request.claim_id,
                "claimed_for": request.published_for,
                "running_at": now,
                "deadline": now + datetime.timedelta(seconds=request.driver_timeout + policy.result_grace),
            }
        )
        if decision.abandon is not None:
            closed = {"outcome": "ABANDONED", "error_type": "AgentLost", "error_message": decision.abandon}
            if (task.id, task.attempt) in opens:
                # Taken earlier in this batch: its history row is not written yet.
                opens[(task.id, task.attempt)] |= closed | {"finished_at": now}
            else:
                closes.append({"task_id": task.id, "attempt": task.attempt, **closed})
        opens[(task.id, attempt)] = {
            "task_id": task.id,
            "attempt": attempt,
            "agent_id": request.agent_id[:255],
            "redelivered": request.redelivered,
            "claimed_at": now,
            "outcome": None,
            "finished_at": None,
            "error_type": None,
            "error_message": None,
        }
        if request.redelivered:
            metrics.REDELIVERIES.labels(task.provider).inc()
        with log.request_context(request.request_id):
            LOG.info(
                "task %s claimed by agent %s (attempt %d of %d%s)",
                task.id,
                request.agent_id,
                attempt,
                policy.max_attempts,
                ", redelivered" if request.redelivered else "",
            )
        answers.append(_run(policy, attempt))
    attempts.close_attempts(session, closes, now)
    attempts.take(session, takes)
    attempts.open_attempts(session, list(opens.values()))
    if session.info.get(notifications.WANTED):
        for task, request, _ in taken:
            payload = notifications.task_payload(task)  # type: ignore[arg-type]
            payload |= {
                "state": TaskState.RUNNING.value,
                "attempt": task.attempt + 1,
                "agent_id": request.agent_id,
            }
            notifications.record(session, "tether.task.running", payload)
    return answers


@dataclasses.dataclass(frozen=True)
class _Taken:
    """A task as a claim of the same batch left it, for the claims after it."""

    id: str
    attempt: int
    claim_id: str | None
    claimed_for: int | None
    agent_id: str | None
    provider: str
    state: str = TaskState.RUNNING.value


def taken_by(task: ClaimedTask, request: Claim) -> ClaimedTask:
    """``task`` once ``request`` has taken it (written by :func:`take`)."""
    return _Taken(
        task.id,
        task.attempt + 1,
        request.claim_id,
        request.published_for,
        request.agent_id[:255],
        task.provider,
    )


def _skip(answer: ClaimAnswer) -> ClaimDecision:
    return ClaimDecision(answer=answer)


def progress(policy: Policy, task: Task | None, attempt: int, message: str, expect_within: float) -> bool:
    """A long device operation of ``attempt`` goes on: show its progress, move
    its deadline. False when that attempt was fenced off: the agent drops it."""
    if task is None or task.state != TaskState.RUNNING or task.attempt != attempt:
        return False
    task.progress = message[:1000]
    task.deadline = utcnow() + datetime.timedelta(seconds=expect_within + policy.result_grace)
    return True


def record_result(
    session: orm.Session,
    policy: Policy,
    task: Task,
    result: messages.Result,
    attempts: dict[tuple[str, int], TaskAttempt],
) -> None:
    """What one attempt of ``task`` did: kept in its history always, applied
    only when it is the task's current attempt and the task still runs (fencing).

    :param attempts: the task's history rows the caller loaded, by (task id, attempt).
    """
    current = task.state == TaskState.RUNNING and result.attempt == task.attempt
    _remember(session, task, result, current, attempts)
    if not current:
        LOG.warning(
            "result of attempt %d of task %s from agent %s kept in history, not applied: "
            "the task is %s at attempt %d",
            result.attempt,
            task.id,
            result.agent_id,
            task.state,
            task.attempt,
        )
        return
    task.host = result.host[:255] if result.host else task.host
    if result.outcome == Outcome.SUCCEEDED:
        succeed(session, policy, task, result.statuses)
        return
    error = result.error
    error_type = error.type if error and error.type else "Error"
    reason = error.message if error and error.message else "the driver failed"
    if error is not None and error.retryable:
        retry_or_fail(session, policy, task, error_type, reason)
    else:
        fail(session, policy, task, error_type, reason)


def settle_simply(
    session: orm.Session,
    policy: Policy,
    results: Sequence[tuple[Any, messages.Result]],
    busy_trees: set[str],
) -> list[messages.Result]:
    """Record, in set-based statements, the results that only finish their
    task: a success of the running attempt of a create or an update, with no
    task queued behind it on its tree, no callback and no notification to
    send. The others are returned, for :func:`record_result`.

    :param results: each result with its task as :data:`attempts.RESULT_COLUMNS` read it.
    """
    if session.info.get(notifications.WANTED):
        return [result for _, result in results]
    simple: list[tuple[Any, messages.Result]] = []
    rest: list[messages.Result] = []
    seen: set[str] = set()
    for task, result in results:
        if (
            result.outcome == Outcome.SUCCEEDED
            and task.state == TaskState.RUNNING
            and task.attempt == result.attempt
            and task.open_attempt
            and task.operation in (Operation.CREATE, Operation.UPDATE)
            and not task.callback_url
            and task.root_id not in busy_trees
            and task.id not in seen
        ):
            simple.append((task, result))
        else:
            rest.append(result)
        seen.add(task.id)
    if not simple:
        return rest
    now = utcnow()
    attempts.succeed(
        session,
        [
            {
                "id": task.id,
                "attempt": task.attempt,
                "host": result.host[:255] if result.host else None,
                "resource_id": task.resource_id,
                "generation": task.generation,
            }
            for task, result in simple
        ],
        now,
    )
    attempts.set_operating_statuses(
        session,
        [
            {"resource_id": resource_id, "root_id": task.root_id, "status": status}
            for task, result in simple
            for resource_id, status in result.statuses.items()
            if _known_status(task.id, resource_id, status)
        ],
    )
    finished = session.info.setdefault(FINISHED, [])
    finished_metrics = session.info.setdefault(FINISHED_METRICS, [])
    for task, result in simple:
        finished.append((task.id, task.resource_id))
        elapsed = (now - task.created_at).total_seconds() if task.created_at else 0.0
        finished_metrics.append((task.provider, task.operation, TaskState.SUCCEEDED.value, elapsed))
        with log.request_context(result.request_id):
            LOG.info(
                "task %s (%s %s %s, attempt %d on agent %s) %s",
                task.id,
                task.operation,
                task.resource_type,
                task.resource_id,
                task.attempt,
                task.agent_id or "-",
                TaskState.SUCCEEDED,
            )
    return rest


def _known_status(task_id: str, resource_id: str, status: str) -> bool:
    if status in OperatingStatus.__members__:
        return True
    LOG.warning("task %s: unknown operating status %r for %s ignored", task_id, status, resource_id)
    return False


def _remember(
    session: orm.Session,
    task: Task,
    result: messages.Result,
    applied: bool,
    attempts: dict[tuple[str, int], TaskAttempt],
) -> None:
    row = attempts.get((task.id, result.attempt))
    if row is None:
        row = TaskAttempt(
            task_id=task.id,
            attempt=result.attempt,
            agent_id=result.agent_id[:255],
            claimed_at=_parse_time(result.started_at) or utcnow(),
        )
        session.add(row)
        # Two results of one attempt in a batch share the row.
        attempts[(task.id, result.attempt)] = row
    if row.outcome is not None and row.outcome != "ABANDONED":
        return
    row.finished_at = utcnow()
    row.outcome = result.outcome.value
    row.applied = applied
    row.error_type = result.error.type[:64] if result.error and result.error.type else None
    row.error_message = result.error.message if result.error else None


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value)
    except ValueError:
        return None


def _run(policy: Policy, attempt: int) -> ClaimAnswer:
    return ClaimAnswer(run=True, attempt=attempt, max_attempts=policy.max_attempts)


def _close_attempt(session: orm.Session, task: Task, error_type: str, reason: str) -> None:
    row = queries.get_attempt(session, task.id, task.attempt)
    if row is not None and row.outcome is None:
        row.outcome = "ABANDONED"
        row.finished_at = utcnow()
        row.error_type, row.error_message = error_type[:64], reason


def succeed(session: orm.Session, policy: Policy, task: Task, statuses: dict[str, str] | None = None) -> None:
    resource = queries.get_resource(session, task.resource_id, None)
    apply_statuses(session, task, statuses or {})
    if resource is not None:
        if task.operation == Operation.DELETE:
            session.delete(resource)
            session.flush()
            notifications.resource_changed(session, task, "DELETED")
        else:
            if task.generation >= resource.applied_generation:
                resource.applied_generation = task.generation
                resource.applied_attributes = task.desired
            if resource.generation == task.generation:
                resource.provisioning_status = ProvisioningStatus.ACTIVE
                resource.last_error = None
                notifications.resource_changed(session, task, ProvisioningStatus.ACTIVE)
    _finish(session, policy, task, TaskState.SUCCEEDED)


def fail(session: orm.Session, policy: Policy, task: Task, error_type: str, message: str) -> None:
    task.error_type, task.error_message = error_type[:64], message
    resource = queries.get_resource(session, task.resource_id, None)
    if resource is not None and resource.generation == task.generation:
        resource.provisioning_status = ProvisioningStatus.ERROR
        resource.last_error = message
        notifications.resource_changed(session, task, ProvisioningStatus.ERROR)
        if task.operation == Operation.CREATE:
            resource.operating_status = OperatingStatus.OFFLINE
    _finish(session, policy, task, TaskState.FAILED)


def supersede(session: orm.Session, policy: Policy, task: Task, by: Task) -> None:
    """``task``'s change is carried by ``by`` (a newer desired state, or a delete)."""
    task.superseded_by = by.id
    _finish(session, policy, task, TaskState.SUPERSEDED)


def new_task(
    resource: Resource, operation: Operation, request_id: str | None = None, callback_url: str | None = None
) -> Task:
    """A QUEUED task carrying ``resource``'s desired state as it is now."""
    now = utcnow()
    return Task(
        id=str(uuid.uuid4()),
        resource_id=resource.id,
        resource_type=resource.type,
        root_id=resource.root_id,
        project_id=resource.project_id,
        provider=resource.provider,
        operation=operation,
        generation=resource.generation,
        desired=copy.deepcopy(resource.attributes),
        state=TaskState.QUEUED,
        attempt=0,
        request_id=request_id,
        callback_url=callback_url,
        created_at=now,
        queued_at=now,
    )


def reapply(session: orm.Session, policy: Policy, root: Resource, reason: str) -> Task:
    """Queue a full re-apply of ``root``'s tree (after it moved to another host)."""
    task = new_task(root, Operation.UPDATE)
    session.add(task)
    if root.provisioning_status in (ProvisioningStatus.ACTIVE, ProvisioningStatus.ERROR):
        root.provisioning_status = ProvisioningStatus.PENDING_UPDATE
    session.flush()
    LOG.info("task %s re-applies %s %s in full: %s", task.id, root.type, root.id, reason)
    advance(session, policy, root.id)
    return task


def finish_cancelled(session: orm.Session, policy: Policy, task: Task) -> None:
    _finish(session, policy, task, TaskState.CANCELLED)


def advance(session: orm.Session, policy: Policy, root_id: str) -> Task | None:
    """If no task of the tree is being worked on, dispatch the next queued one.

    An update or create is dispatched with the resource's newest desired
    state; the updates of the same resource still waiting behind it are
    folded into it (SUPERSEDED, naming it).
    """
    tasks = queries.in_flight_tasks(session, root_id)
    if not tasks or tasks[0].state != TaskState.QUEUED:
        return None
    task = tasks[0]
    resource = queries.get_resource(session, task.resource_id, None)
    if resource is None:
        fail(session, policy, task, "ResourceGone", "the resource was removed before this change ran")
        return None
    if task.operation != Operation.DELETE:
        updates = [t for t in tasks if t.resource_id == task.resource_id and t.operation == Operation.UPDATE]
        # The newest update carries the change; a create carries it itself.
        carrier = task if task.operation == Operation.CREATE or not updates else updates[-1]
        for folded in [task, *updates]:
            if folded is not carrier and folded.state == TaskState.QUEUED:
                supersede(session, policy, folded, carrier)
        task = carrier
        task.generation = resource.generation
        task.desired = copy.deepcopy(resource.attributes)
    enqueue(session, policy, task, resource)
    return task


def apply_statuses(session: orm.Session, task: Task, statuses: dict[str, str]) -> None:
    for resource_id, status in statuses.items():
        if status not in OperatingStatus.__members__:
            LOG.warning("task %s: unknown operating status %r for %s ignored", task.id, status, resource_id)
            continue
        resource = queries.get_resource(session, resource_id, None)
        # A driver speaks only for the tree it was given.
        if resource is not None and resource.root_id == task.root_id:
            resource.operating_status = status


def _finish(session: orm.Session, policy: Policy, task: Task, state: TaskState) -> None:
    was_working = task.state in (TaskState.PENDING, TaskState.RUNNING)
    if task.state != TaskState.RUNNING:
        # A claim deleted a running task's outbox rows, and nothing adds one
        # until it is PENDING again: the common finish needs no statement.
        queries.delete_outbox_of(session, task.id)
    task.state = state
    task.finished_at = utcnow()
    task.deadline = None
    notifications.task_changed(session, task)
    callbacks.schedule(session, task)
    finished = session.info.setdefault(FINISHED, [])
    finished.append((task.id, task.resource_id))
    # Counted after commit (see tether.plugin.waiters), so a rollback counts nothing.
    elapsed = (task.finished_at - task.created_at).total_seconds() if task.created_at else 0.0
    session.info.setdefault(FINISHED_METRICS, []).append(
        (task.provider, task.operation, state.value, elapsed)
    )
    LOG.info(
        "task %s (%s %s %s, attempt %d on agent %s) %s%s",
        task.id,
        task.operation,
        task.resource_type,
        task.resource_id,
        task.attempt,
        task.agent_id or "-",
        state,
        f": {task.error_message}" if state == TaskState.FAILED else "",
    )
    if was_working:
        advance(session, policy, task.root_id)
