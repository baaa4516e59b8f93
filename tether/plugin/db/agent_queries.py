"""Agents, the roots bound to them and the work waiting for them: what the
registry, placement, the reaper and the status commands ask the database."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import IN_FLIGHT_TASK_STATES, TaskState
from tether.plugin.db.models import AgentRecord, ResourceRecord, Task
from tether.plugin.db.queries import one_writer

#: a second reference to tasks, for queries that compare two of its rows
Task2 = orm.aliased(Task)


def lock_agent(session: orm.Session, agent_id: str) -> AgentRecord | None:
    """An agent's row, locked: taken before its trees, as a state report takes it."""
    query = sa.select(AgentRecord).where(AgentRecord.id == agent_id)
    return session.scalars(query if one_writer(session) else query.with_for_update()).first()


def get_agent(session: orm.Session, agent_id: str) -> AgentRecord | None:
    return session.get(AgentRecord, agent_id)


def list_agents(session: orm.Session) -> Sequence[AgentRecord]:
    return session.scalars(sa.select(AgentRecord).order_by(AgentRecord.id)).all()


def running_on(session: orm.Session, agent_id: str) -> Sequence[Task]:
    """Tasks running on an agent; rows another reaper holds are skipped."""
    return session.scalars(
        sa.select(Task)
        .where(Task.agent_id == agent_id, Task.state == TaskState.RUNNING)
        .with_for_update(skip_locked=True)
    ).all()


def overdue(session: orm.Session, now: datetime.datetime, limit: int) -> Sequence[Task]:
    """Non-terminal tasks past their deadline; rows another reaper holds are skipped."""
    return session.scalars(
        sa.select(Task)
        .where(Task.state.in_([TaskState.PENDING, TaskState.RUNNING]), Task.deadline <= now)
        .order_by(Task.deadline)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()


def has_pending(session: orm.Session, provider: str) -> bool:
    """Does any task of ``provider`` wait for an agent? (An index lookup.)"""
    query = sa.select(Task.id).where(Task.provider == provider, Task.state == TaskState.PENDING).limit(1)
    return session.scalar(query) is not None


def backlog(session: orm.Session) -> dict[tuple[str, str], int]:
    """Count of non-terminal tasks by provider and state."""
    rows = session.execute(
        sa.select(Task.provider, Task.state, sa.func.count())
        .where(Task.state.in_(list(IN_FLIGHT_TASK_STATES)))
        .group_by(Task.provider, Task.state)
    ).all()
    return {(provider, state): count for provider, state, count in rows}


def idle_trees_with_queue(session: orm.Session) -> Sequence[str]:
    """Roots with QUEUED tasks and none PENDING or RUNNING."""
    # Correlated, so each queued tree costs one index lookup: a NOT IN over
    # every PENDING task would cost as much as the whole backlog.
    working = sa.exists().where(
        Task2.root_id == Task.root_id, Task2.state.in_([TaskState.PENDING, TaskState.RUNNING])
    )
    return session.scalars(
        sa.select(Task.root_id).where(Task.state == TaskState.QUEUED, ~working).distinct()
    ).all()


def bound_to(session: orm.Session, agent_id: str) -> Sequence[ResourceRecord]:
    """Root resources bound to an agent (host placement)."""
    return session.scalars(
        sa.select(ResourceRecord)
        .where(ResourceRecord.agent_id == agent_id, ResourceRecord.parent_id.is_(None))
        .order_by(ResourceRecord.id)
    ).all()


def roots_of(session: orm.Session, provider: str) -> Sequence[str]:
    """The ids of every root resource of ``provider``."""
    return session.scalars(
        sa.select(ResourceRecord.id).where(
            ResourceRecord.provider == provider, ResourceRecord.parent_id.is_(None)
        )
    ).all()


def undispatched(session: orm.Session, providers: Sequence[str]) -> Sequence[Task]:
    """PENDING tasks of ``providers`` never published because no agent could
    take them; rows another reaper holds are skipped."""
    if not providers:
        return []
    unpublished = (
        sa.select(Task)
        .where(Task.provider.in_(list(providers)), Task.state == TaskState.PENDING, Task.pending_at.is_(None))
        .with_for_update(skip_locked=True)
    )
    return session.scalars(unpublished).all()


def newly_dead_agents(session: orm.Session, cutoff: datetime.datetime) -> Sequence[AgentRecord]:
    """Agents still marked alive whose last report is older than ``cutoff``;
    rows another reaper holds are skipped, so each death is acted on once."""
    return session.scalars(
        sa.select(AgentRecord)
        .where(AgentRecord.alive.is_(True), AgentRecord.last_heartbeat < cutoff)
        .order_by(AgentRecord.id)
        .with_for_update(skip_locked=True)
    ).all()
