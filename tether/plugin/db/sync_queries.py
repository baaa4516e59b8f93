"""Whether a resource's device may differ from the database, asked of SQL:
the ``in_sync`` field of a resource and the ``?in_sync=`` filter of a list
are one definition (:func:`in_sync`), so they cannot disagree.

A resource is in sync when its latest desired generation was applied
(``ACTIVE``, ``applied_generation == generation``), the drift audit found no
difference (``drift`` is NULL) and its tree's agent is not dead (the root of
a host-placed provider is bound to an agent the reaper declared dead: its
device is out of sight, OFFLINE). Anything else is out of sync, for a reason
:func:`reasons` names with the task behind it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import IN_FLIGHT_TASK_STATES, ProvisioningStatus, TaskState
from tether.plugin.db.models import AgentRecord, ResourceRecord, Task

#: The root of the resource a query is about.
_Root = orm.aliased(ResourceRecord)


def agent_dead() -> sa.ColumnElement[bool]:
    """True for a resource whose tree is bound to an agent the reaper declared dead."""
    return (
        sa.select(AgentRecord.id)
        .join(_Root, _Root.agent_id == AgentRecord.id)
        .where(_Root.id == ResourceRecord.root_id, AgentRecord.alive.is_(False))
        .exists()
    )


def in_sync() -> sa.ColumnElement[bool]:
    """The ``in_sync`` of a resource, as SQL."""
    return sa.and_(
        ResourceRecord.provisioning_status == ProvisioningStatus.ACTIVE.value,
        ResourceRecord.applied_generation == ResourceRecord.generation,
        ResourceRecord.drift.is_(None),
        sa.not_(agent_dead()),
    )


def list_resources(
    session: orm.Session,
    rtype: str,
    project_id: str | None,
    filters: dict[str, Any],
    limit: int,
    marker: ResourceRecord | None,
    wanted: bool | None = None,
) -> list[tuple[ResourceRecord, bool]]:
    """A page of resources, each with whether its agent is dead.

    :param wanted: only those in sync (True), or out of sync (False).
    """
    dead = agent_dead().label("agent_dead")
    query = sa.select(ResourceRecord, dead).where(ResourceRecord.type == rtype)
    if project_id is not None:
        query = query.where(ResourceRecord.project_id == project_id)
    for column, value in filters.items():
        query = query.where(getattr(ResourceRecord, column) == value)
    if wanted is not None:
        query = query.where(in_sync() if wanted else sa.not_(in_sync()))
    if marker is not None:
        query = query.where(
            sa.tuple_(ResourceRecord.created_at, ResourceRecord.id)
            > sa.tuple_(sa.literal(marker.created_at, ResourceRecord.created_at.type), sa.literal(marker.id))
        )
    query = query.order_by(ResourceRecord.created_at, ResourceRecord.id).limit(limit)
    return [(row, bool(lost)) for row, lost in session.execute(query)]


def is_agent_dead(session: orm.Session, resource: ResourceRecord) -> bool:
    query = sa.select(agent_dead()).select_from(ResourceRecord).where(ResourceRecord.id == resource.id)
    return bool(session.scalar(query))


def reasons(session: orm.Session, rows: Iterable[tuple[ResourceRecord, bool]]) -> dict[str, dict[str, Any]]:
    """Why each of ``rows`` (resources out of sync, each with whether its
    agent is dead) may differ from its device, by resource id: a change in
    flight (``pending``, with its task), a dead agent (``agent_dead``), a
    failed change (``failed``, with the last failed task), drift (``drift``).
    Two statements for the whole page."""
    rows = list(rows)
    if not rows:
        return {}
    ids = [r.id for r, _ in rows]
    roots = {r.root_id for r, _ in rows}
    in_flight = _newest(
        session, sa.or_(Task.resource_id.in_(ids), Task.root_id.in_(roots)), IN_FLIGHT_TASK_STATES
    )
    failed = _newest(session, Task.resource_id.in_([r.id for r, _ in rows if _failed(r)]), [TaskState.FAILED])
    answer: dict[str, dict[str, Any]] = {}
    for resource, dead in rows:
        if resource.provisioning_status.startswith("PENDING_"):
            task = in_flight.get(resource.id) or in_flight.get(("root", resource.root_id))
            answer[resource.id] = _reason("pending", task, f"a change is {resource.provisioning_status}")
        elif dead:
            answer[resource.id] = _reason(
                "agent_dead",
                None,
                "the agent its tree is bound to was declared dead: its device is out of sight",
            )
        elif _failed(resource):
            task = failed.get(resource.id)
            answer[resource.id] = _reason("failed", task, resource.last_error or "its latest change failed")
        elif resource.drift is not None:
            answer[resource.id] = _reason("drift", None, str(resource.drift.get("summary") or "drifted"))
    return answer


def _failed(resource: ResourceRecord) -> bool:
    return (
        resource.provisioning_status == ProvisioningStatus.ERROR
        or resource.applied_generation != resource.generation
    )


def _newest(session: orm.Session, where: sa.ColumnElement[bool], states: Iterable[str]) -> dict[Any, Task]:
    """The newest task in ``states`` by resource id, and by ``("root", id)`` of its tree."""
    query = sa.select(Task).where(where, Task.state.in_([str(s) for s in states]))
    newest: dict[Any, Task] = {}
    for task in session.scalars(query.order_by(Task.created_at, Task.id)):
        newest[task.resource_id] = task
        newest[("root", task.root_id)] = task
    return newest


def _reason(reason: str, task: Task | None, detail: str) -> dict[str, Any]:
    view: dict[str, Any] = {"reason": reason, "detail": detail, "task": None}
    if task is not None:
        view["task"] = {"id": task.id, "state": task.state, "href": f"/v1/tasks/{task.id}"}
    return view


def is_in_sync(resource: ResourceRecord, agent_is_dead: bool) -> bool:
    """:func:`in_sync` for a row already read."""
    return (
        resource.provisioning_status == ProvisioningStatus.ACTIVE
        and resource.applied_generation == resource.generation
        and resource.drift is None
        and not agent_is_dead
    )
