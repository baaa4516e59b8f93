"""The repairs an operator asks for: retry a failed task, re-apply a resource.

Both queue a new task through the normal pipeline (claims, fencing, retries,
history), carrying the resource's desired state as it is now, and both ask
it of the tree as any change does: behind whatever the tree has in flight.

* A **retry** repeats what a FAILED task was for. A failed create or update
  becomes a task applying the resource's current desired state (a create
  while nothing was ever applied, an update after); a failed delete becomes a
  delete again (with everything under it, if it was a cascade delete).
* A **re-apply** sends a settled resource's desired state to its device
  again: an update, as the drift audit queues to repair drift
  (:func:`tether.plugin.tasks.lifecycle.reapply`), for drift the audit found or
  cannot see, or a device that lost its configuration.

Neither is accepted while the resource has a change in flight: that change
applies the desired state anyway, and the answer (409) names it.
"""

from __future__ import annotations

import logging

from sqlalchemy import orm

from tether.common.exceptions import Conflict, NotFound
from tether.common.resource_types import ResourceType
from tether.common.states import IN_FLIGHT_TASK_STATES, Operation, ProvisioningStatus, TaskState
from tether.plugin.context import RequestContext
from tether.plugin.db import queries
from tether.plugin.db.models import ResourceRecord, Task
from tether.plugin.tasks import lifecycle

LOG = logging.getLogger(__name__)

_UNDONE = (TaskState.CANCELLED, TaskState.SUPERSEDED)

#: What to do instead of retrying a task in each state that is not FAILED.
_NOT_FAILED = {
    TaskState.QUEUED: "it waits its turn on its resource tree; wait for it (GET /v1/tasks/{id}?wait=30)",
    TaskState.PENDING: "it waits for an agent; wait for it (GET /v1/tasks/{id}?wait=30) or cancel it",
    TaskState.RUNNING: "an agent is applying it; wait for it (GET /v1/tasks/{id}?wait=30)",
    TaskState.SUCCEEDED: "it is done; to apply the desired state again, re-apply the resource",
    TaskState.CANCELLED: "it was called back; send the change again",
    TaskState.SUPERSEDED: "task {superseded_by} carried its change; look at that one",
}


def retry(session: orm.Session, policy: lifecycle.Policy, ctx: RequestContext, task_id: str) -> Task:
    """Queue a new task doing what the FAILED task ``task_id`` was for; the new task.

    :raises NotFound: no such task in the caller's project.
    :raises Conflict: the task is not FAILED, its resource is gone, has a
        change in flight, or was changed in a way the retry would undo.
    """
    failed = queries.get_task(session, task_id, ctx.project_filter)
    if failed is None:
        raise NotFound(kind="Task", id=task_id)
    queries.lock_root(session, failed.root_id)
    state = TaskState(failed.state)
    if state != TaskState.FAILED:
        hint = _NOT_FAILED[state].format(id=failed.id, superseded_by=failed.superseded_by)
        raise Conflict(f"Task {failed.id} is {state}; only a FAILED task can be retried ({hint}).")
    resource = queries.get_resource(session, failed.resource_id, None)
    if resource is None:
        raise Conflict(
            f"Task {failed.id} failed on {failed.resource_type} {failed.resource_id}, which is gone "
            f"since; there is nothing to retry it on (create a new {failed.resource_type})."
        )
    _check_idle(session, resource, "retried")
    latest = _latest_change(session, resource)
    if latest is not None and latest.id != failed.id:
        if failed.operation == Operation.DELETE:
            raise Conflict(
                f"{resource.type} {resource.id} changed since this delete failed (task {latest.id}, "
                f"{latest.operation}, {latest.state}); to delete it, send the delete again."
            )
        if latest.operation == Operation.DELETE:
            raise Conflict(
                f"Task {latest.id}, a delete of {resource.type} {resource.id}, came after this task "
                f"and is {latest.state}; retry that one (POST /v1/tasks/{latest.id}/retry) or "
                "update the resource."
            )
    if failed.operation == Operation.DELETE:
        task = _delete_again(session, policy, ctx, resource, failed)
    else:
        operation = Operation.CREATE if resource.applied_generation == 0 else Operation.UPDATE
        task = lifecycle.new_task(resource, operation, ctx.request_id, ctx.callback_url)
        session.add(task)
        resource.provisioning_status = operation.pending_status
        session.flush()
        lifecycle.advance(session, policy, resource.root_id)
    LOG.info(
        "task %s retries failed task %s (%s %s %s)",
        task.id,
        failed.id,
        task.operation,
        resource.type,
        resource.id,
    )
    return task


def reapply(
    session: orm.Session,
    policy: lifecycle.Policy,
    ctx: RequestContext,
    rtype: ResourceType,
    resource_id: str,
    reason: str | None = None,
) -> Task:
    """Queue an update applying ``resource_id``'s desired state to its device again; the task.

    :raises NotFound: no such resource in the caller's project.
    :raises Conflict: a change of it is in flight, or its create failed (nothing to re-apply).
    """
    found = queries.get_resource(session, resource_id, ctx.project_filter, rtype.name)
    if found is None:
        raise NotFound(kind=rtype.name.capitalize(), id=resource_id)
    queries.lock_root(session, found.root_id)
    # Read again under the tree's lock: a change may have committed since.
    session.refresh(found)
    resource = found
    _check_idle(session, resource, "re-applied")
    if resource.provisioning_status == ProvisioningStatus.ERROR and resource.applied_generation == 0:
        failed = _latest_change(session, resource)
        how = (
            f"retry its create (POST /v1/tasks/{failed.id}/retry)"
            if failed is not None and failed.state == TaskState.FAILED
            else f"update it (PUT /v1/{rtype.collection}/{resource.id})"
        )
        raise Conflict(
            f"{rtype.name} {resource.id} is in ERROR from a failed create: no device ever held it, "
            f"so there is nothing to re-apply; {how}, or delete it."
        )
    why = f"asked by project {ctx.project_id}" + (f": {reason}" if reason else "")
    return lifecycle.reapply(session, policy, resource, why, request_id=ctx.request_id)


def _check_idle(session: orm.Session, resource: ResourceRecord, done: str) -> None:
    """Refuse while a change of ``resource`` is in flight, naming it."""
    if not resource.provisioning_status.startswith("PENDING_"):
        return
    mine = [t for t in queries.tasks_of(session, resource.id) if t.state in IN_FLIGHT_TASK_STATES]
    # Under a cascade delete the task in flight is an ancestor's.
    busy = mine or list(queries.in_flight_tasks(session, resource.root_id))
    named = f" (task {busy[-1].id}, {busy[-1].operation}, {busy[-1].state})" if busy else ""
    hint = f"wait for it (GET /v1/tasks/{busy[-1].id}?wait=30)" if busy else "wait for it"
    raise Conflict(
        f"{resource.type} {resource.id} is {resource.provisioning_status}: a change of it is in "
        f"flight{named} and applies its desired state; it cannot be {done} meanwhile: {hint}."
    )


def _latest_change(session: orm.Session, resource: ResourceRecord) -> Task | None:
    """The resource's newest task that was not called back or folded into another."""
    changes = [t for t in queries.tasks_of(session, resource.id) if t.state not in _UNDONE]
    return changes[-1] if changes else None


def _delete_again(
    session: orm.Session,
    policy: lifecycle.Policy,
    ctx: RequestContext,
    resource: ResourceRecord,
    failed: Task,
) -> Task:
    kids = queries.children(session, resource.id)
    if kids and not failed.cascade:
        raise Conflict(
            f"{resource.type} {resource.id} has children now ({len(kids)}, e.g. {kids[0].type} "
            f"{kids[0].id}); delete them first, or delete it with everything under it (?cascade=true)."
        )
    doomed = lifecycle.subtree(session, resource) if kids else [resource]
    lifecycle.mark_deleting(doomed)
    task = lifecycle.new_task(resource, Operation.DELETE, ctx.request_id, ctx.callback_url, len(doomed) > 1)
    session.add(task)
    session.flush()
    lifecycle.fold_into_delete(session, policy, resource, task, doomed)
    if task.state == TaskState.QUEUED:
        lifecycle.advance(session, policy, resource.root_id)
    return task
