"""The transitions that need the whole tree at hand, on ORM objects:
dispatch, retry, abandon, a result's outcome, finishing, and dispatching the
next task of a tree."""

from __future__ import annotations

import copy
import datetime
import logging
from collections.abc import Sequence

from sqlalchemy import orm

from tether.common import messages, metrics, transport
from tether.common.states import (
    IN_FLIGHT_TASK_STATES,
    OperatingStatus,
    Operation,
    Outcome,
    ProvisioningStatus,
    TaskState,
)
from tether.plugin.db import ids, queries
from tether.plugin.db.models import Outbox, ResourceRecord, Task, TaskAttempt, utcnow
from tether.plugin.outbound import callbacks, notifications
from tether.plugin.tasks import work
from tether.plugin.tasks.lifecycle import cascade_records, finished
from tether.plugin.tasks.lifecycle.retries import Policy

LOG = logging.getLogger(__name__)


def enqueue(
    session: orm.Session,
    policy: Policy,
    task: Task,
    resource: ResourceRecord,
    delay: float = 0.0,
    tree: Sequence[ResourceRecord] | None = None,
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
        # Still pending, but not silently: the resource says why it waits.
        resource.last_error = (
            f"{reason} (attempt {task.attempt} of {policy.max_attempts} failed; retrying in {delay:.0f} s)"
        )
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
        fail(session, policy, task, error_type, reason, undone=result.undone)


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
        if task.operation == Operation.DELETE and task.cascade:
            cascade_records.remove(session, task, resource)
        elif task.operation == Operation.DELETE:
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
                resource.drift = None
                notifications.resource_changed(session, task, ProvisioningStatus.ACTIVE)
    # What earlier attempts failed with, and the last progress, are history now.
    task.error_type = task.error_message = task.progress = None
    _finish(session, policy, task, TaskState.SUCCEEDED)


def fail(
    session: orm.Session, policy: Policy, task: Task, error_type: str, message: str, undone: bool = False
) -> None:
    """The task failed for good.

    :param undone: the driver took back every step of the operation, so the
        device holds the resource's last applied state: an update or delete
        leaves it ACTIVE (an update's desired state is then not in sync),
        with the failure in ``last_error``. A create had nothing applied
        before it and ends in ERROR as any failed create.
    """
    task.error_type, task.error_message = error_type[:64], message
    resource = queries.get_resource(session, task.resource_id, None)
    if resource is not None and resource.generation == task.generation:
        restored = undone and task.operation != Operation.CREATE and resource.applied_generation > 0
        status = ProvisioningStatus.ACTIVE if restored else ProvisioningStatus.ERROR
        resource.provisioning_status = status
        resource.last_error = message
        notifications.resource_changed(session, task, status)
        if task.operation == Operation.CREATE:
            resource.operating_status = OperatingStatus.OFFLINE
        if task.cascade:
            cascade_records.settle_failed(session, task, resource, message)
    _finish(session, policy, task, TaskState.FAILED)


def supersede(session: orm.Session, policy: Policy, task: Task, by: Task) -> None:
    """``task``'s change is carried by ``by`` (a newer desired state, or a delete)."""
    task.superseded_by = by.id
    _finish(session, policy, task, TaskState.SUPERSEDED)


def fold_into_delete(
    session: orm.Session,
    policy: Policy,
    resource: ResourceRecord,
    delete: Task,
    doomed: Sequence[ResourceRecord],
) -> None:
    """A delete just accepted makes the waiting changes of what it removes
    moot (SUPERSEDED); if the resource's create never reached an agent,
    nothing under it did either (they queued behind it), and nothing needs to
    reach one now: the delete succeeds at once.

    :param doomed: what ``delete`` removes: ``resource``, and for a cascade
        delete everything under it.
    """

    def unclaimed(t: Task) -> bool:
        return (
            t.id != delete.id
            and t.state in IN_FLIGHT_TASK_STATES
            and t.attempt == 0
            and t.state != TaskState.RUNNING
        )

    if delete.cascade:
        ids = {r.id for r in doomed}
        tasks = [t for t in queries.in_flight_tasks(session, resource.root_id) if t.resource_id in ids]
    else:
        tasks = list(queries.tasks_of(session, resource.id))
    waiting = queries.still_locked(session, tasks, unclaimed)
    for task in waiting:
        supersede(session, policy, task, delete)
    if any(t.operation == Operation.CREATE and t.resource_id == resource.id for t in waiting):
        LOG.info(
            "task %s: %s %s was never created on a device; deleted without device work",
            delete.id,
            resource.type,
            resource.id,
        )
        succeed(session, policy, delete)


def new_task(
    resource: ResourceRecord,
    operation: Operation,
    request_id: str | None = None,
    callback_url: str | None = None,
    cascade: bool = False,
) -> Task:
    """A QUEUED task carrying ``resource``'s desired state as it is now.

    :param cascade: a delete of ``resource`` with everything under it.
    """
    now = utcnow()
    return Task(
        id=ids.new_id(),
        resource_id=resource.id,
        resource_type=resource.type,
        root_id=resource.root_id,
        project_id=resource.project_id,
        provider=resource.provider,
        operation=operation,
        cascade=cascade,
        generation=resource.generation,
        desired=copy.deepcopy(resource.attributes),
        state=TaskState.QUEUED,
        attempt=0,
        request_id=request_id,
        callback_url=callback_url,
        created_at=now,
        queued_at=now,
    )


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
    finished.note(session, task, state, task.finished_at)
    if was_working:
        advance(session, policy, task.root_id)
