"""Cancelling a task that no agent has started.

A QUEUED or PENDING task (never claimed) becomes CANCELLED and its resource
returns to where it was before: a cancelled create leaves no resource (nor
the children queued under it); a cancelled update or delete restores the
desired state of the change before it (the one still coming, or the last
one applied) and the status that goes with it, and a cancelled cascade
delete does so for every resource under its target too. A task that an agent has
claimed cannot be called back: the answer is 409 naming the agent.
"""

from __future__ import annotations

import logging

from sqlalchemy import orm

from tether.common.exceptions import Conflict, NotFound
from tether.common.resource_types import Registry
from tether.common.states import IN_FLIGHT_TASK_STATES, Operation, ProvisioningStatus, TaskState
from tether.plugin.context import RequestContext
from tether.plugin.db import queries
from tether.plugin.db.models import ResourceRecord, Task
from tether.plugin.tasks import lifecycle, references

LOG = logging.getLogger(__name__)

_UNDONE = (TaskState.CANCELLED, TaskState.SUPERSEDED)


def cancel(
    session: orm.Session,
    policy: lifecycle.Policy,
    ctx: RequestContext,
    task_id: str,
    registry: Registry | None = None,
) -> Task:
    """Cancel ``task_id``; the task as it now stands.

    :param registry: the types, whose references a cancelled create must
        not leave dangling (a listener naming the pool it removes).

    :raises NotFound: no such task in the caller's project.
    :raises Conflict: the task is running, finished, or not the newest change of its resource.
    """
    task = queries.get_task(session, task_id, ctx.project_filter)
    if task is None:
        raise NotFound(kind="Task", id=task_id)
    queries.lock_root(session, task.root_id)
    # The task's own lock too: an agent's claim takes it without the root.
    session.refresh(task, with_for_update=True)
    state = TaskState(task.state)
    if state == TaskState.RUNNING:
        raise Conflict(
            f"Task {task.id} is running on agent {task.agent_id} (attempt {task.attempt}); "
            f"a running change cannot be called back: wait for it (GET /v1/tasks/{task.id}?wait=30)."
        )
    if state.terminal:
        raise Conflict(f"Task {task.id} is already {state}.")
    if task.attempt > 0:
        raise Conflict(
            f"Task {task.id} already ran on agent {task.agent_id} (attempt {task.attempt}) and "
            "waits for a retry; the device may hold part of it, so it cannot be cancelled."
        )
    newer = [
        t
        for t in queries.tasks_of(session, task.resource_id)
        if t.state in IN_FLIGHT_TASK_STATES and (t.created_at, t.id) > (task.created_at, task.id)
    ]
    if newer:
        raise Conflict(
            f"Task {newer[-1].id} changes the same {task.resource_type} after this one; cancel it first."
        )
    resource = queries.get_resource(session, task.resource_id, None)
    if resource is not None and registry is not None and task.operation == Operation.CREATE:
        references.check_unreferenced(session, registry, lifecycle.subtree(session, resource))
    lifecycle.finish_cancelled(session, policy, task)
    if resource is not None:
        if task.operation == Operation.CREATE:
            _remove_tree(session, policy, resource)
        else:
            # Children first: one whose create the cascade superseded goes, before its parent is looked at.
            for restored in reversed(lifecycle.subtree(session, resource)) if task.cascade else [resource]:
                _restore(session, restored, task)
    LOG.info("task %s (%s %s %s) cancelled", task.id, task.operation, task.resource_type, task.resource_id)
    return task


def _restore(session: orm.Session, resource: ResourceRecord, cancelled: Task) -> None:
    history = [
        t for t in queries.tasks_of(session, resource.id) if t.id != cancelled.id and t.state not in _UNDONE
    ]
    if not history:
        # Under a cancelled cascade delete: its create was superseded by it, so it never reached a device.
        session.delete(resource)
        session.flush()
        return
    coming = [t for t in history if t.state in IN_FLIGHT_TASK_STATES]
    if coming:
        # An earlier change of this resource is still on its way: its state is the desired one.
        previous = coming[-1]
        resource.attributes = previous.desired or resource.attributes
        resource.generation = previous.generation
        resource.provisioning_status = Operation(previous.operation).pending_status
        return
    if resource.applied_attributes is not None:
        resource.attributes = resource.applied_attributes
    resource.generation = resource.applied_generation
    failed = bool(history) and history[-1].state == TaskState.FAILED
    resource.provisioning_status = ProvisioningStatus.ERROR if failed else ProvisioningStatus.ACTIVE
    resource.name = resource.attributes.get("name")


def _remove_tree(session: orm.Session, policy: lifecycle.Policy, resource: ResourceRecord) -> None:
    """A create that never happened: its resource and anything queued under it go."""
    for child in queries.children(session, resource.id):
        for task in queries.tasks_of(session, child.id):
            if task.state in IN_FLIGHT_TASK_STATES:
                lifecycle.finish_cancelled(session, policy, task)
        _remove_tree(session, policy, child)
    session.delete(resource)
    session.flush()
