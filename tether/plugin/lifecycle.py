"""The life of a task after it is accepted: dispatch, retry, finish.

Every path that moves a task (the API accepting a change, a claim, a
result, the reaper) goes through these functions, inside the caller's
transaction, so the rules live in one place:

* a task is dispatched by writing an outbox row (never by publishing
  directly), so dispatch commits or rolls back with the state change;
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

from oslo_config import cfg
from sqlalchemy import orm

from tether.common import messages, metrics, transport
from tether.common.states import OperatingStatus, Operation, ProvisioningStatus, TaskState
from tether.plugin import callbacks, notifications, work
from tether.plugin.db import queries
from tether.plugin.db.models import Outbox, Resource, Task, utcnow

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
    row = queries.get_attempt(session, task.id, task.attempt)
    if row is not None and row.outcome is None:
        row.outcome = "ABANDONED"
        row.finished_at = utcnow()
        row.error_type, row.error_message = error_type[:64], reason
    retry_or_fail(session, policy, task, error_type, reason, delay)


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
