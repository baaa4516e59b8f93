"""The tasks and fleet pages' reads: filtered tasks, a task's timeline, the
agents and providers with their backlog."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import IN_FLIGHT_TASK_STATES, StepState, TaskState
from tether.plugin.api.console.tree import aware
from tether.plugin.db import action_queries
from tether.plugin.db.models import AgentRecord, Callback, Outbox, Task, TaskAttempt, TaskStep

#: the task columns the tasks page filters on, by query parameter
FILTERS = {
    "state": Task.state,
    "provider": Task.provider,
    "resource_id": Task.resource_id,
    "project_id": Task.project_id,
    "operation": Task.operation,
    "agent_id": Task.agent_id,
}

#: seconds between a task's creation and its publishing that count as waiting
QUEUED_GAP = 0.1


def get_task(session: orm.Session, task_id: str, project_id: str | None) -> Task | None:
    query = sa.select(Task).where(Task.id == task_id)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    return session.scalars(query).one_or_none()


def tasks(
    session: orm.Session, project_id: str | None, filters: Mapping[str, str], limit: int
) -> tuple[list[Task], bool]:
    """The newest tasks matching ``filters``; and whether there are more."""
    query = sa.select(Task)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    for name, value in filters.items():
        query = query.where(FILTERS[name] == value)
    rows = list(session.scalars(query.order_by(Task.created_at.desc(), Task.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


@dataclasses.dataclass(frozen=True)
class Moment:
    """One line of a task's timeline."""

    at: datetime.datetime
    what: str
    #: who did it: an agent, the plugin
    who: str | None = None
    detail: str | None = None
    #: for styling: ok, bad, undo, wait
    tone: str = ""


def timeline(session: orm.Session, task: Task) -> list[Moment]:
    """What happened to ``task``, oldest first: its transitions, every
    claim and how it ended, its steps and undo steps, its retry, what
    people did to it by hand and its callback."""
    moments = [Moment(task.created_at, "accepted", "plugin", f"{task.operation} {task.resource_type}")]
    attempts = list(
        session.scalars(
            sa.select(TaskAttempt)
            .where(TaskAttempt.task_id == task.id)
            .order_by(TaskAttempt.attempt, TaskAttempt.id)
        )
    )
    # pending_at is the latest dispatch: after a failed attempt, when its retry was scheduled.
    again = task.pending_at is not None and any(a.claimed_at < task.pending_at for a in attempts)
    # Every task is created QUEUED; one that waited shows it in the gap to its first publishing.
    gap = (task.pending_at - task.created_at).total_seconds() if task.pending_at else 0.0
    if task.state == TaskState.QUEUED or (not again and gap > QUEUED_GAP):
        moments.append(
            Moment(
                task.queued_at or task.created_at,
                "queued",
                "plugin",
                "behind another task on the same tree",
                "wait",
            )
        )
    if task.pending_at is not None and again:
        detail = "published again after its backoff" if task.state == TaskState.PENDING else None
        moments.append(Moment(task.pending_at, "retry scheduled", "plugin", detail, "wait"))
    elif task.pending_at is not None:
        moments.append(Moment(task.pending_at, "published", "plugin", f"to provider {task.provider}"))
    for a in attempts:
        redelivered = " (redelivered)" if a.redelivered else ""
        moments.append(Moment(a.claimed_at, f"attempt {a.attempt} claimed{redelivered}", a.agent_id))
        if a.finished_at is not None:
            detail = f"{a.error_type}: {a.error_message}" if a.error_type else None
            if not a.applied and a.outcome != "ABANDONED":
                detail = f"{detail or ''} (a late result, kept but not applied)".strip()
            tone = "ok" if a.outcome == TaskState.SUCCEEDED else "bad"
            moments.append(
                Moment(a.finished_at, f"attempt {a.attempt} {a.outcome}", a.agent_id, detail, tone)
            )
    for s in session.scalars(
        sa.select(TaskStep).where(TaskStep.task_id == task.id).order_by(TaskStep.position)
    ):
        undo = s.state in (StepState.UNDONE, StepState.UNDO_FAILED)
        who = s.agent_id
        if s.started_at is not None:
            moments.append(Moment(s.started_at, f"step {s.name} started", who, f"attempt {s.attempt}"))
        if s.finished_at is not None:
            detail = f"{s.error_type}: {s.error_message}" if s.error_type else None
            tone = "undo" if undo else ("bad" if s.state == StepState.FAILED else "ok")
            label = "undone" if s.state == StepState.UNDONE else s.state.lower().replace("_", " ")
            moments.append(Moment(s.finished_at, f"step {s.name} {label}", who, detail, tone))
    retry = aware(
        session.scalar(
            sa.select(sa.func.min(Outbox.not_before)).where(
                Outbox.task_id == task.id, Outbox.not_before.is_not(None)
            )
        )
    )
    if retry is not None and task.state == TaskState.PENDING:
        moments.append(
            Moment(retry, "retry due", "plugin", f"published again to provider {task.provider}", "wait")
        )
    if task.finished_at is not None:
        detail = f"{task.error_type}: {task.error_message}" if task.error_type else None
        if task.superseded_by:
            detail = f"applied by task {task.superseded_by}"
        tone = "ok" if task.state == TaskState.SUCCEEDED else "bad"
        moments.append(Moment(task.finished_at, task.state, task.agent_id or "plugin", detail, tone))
    for done in action_queries.of_task(session, task.id):
        # Who asked by hand, and why: a retry shows on the failed task and on its retry.
        detail = f"{done.target_type} {done.target_id}: {done.reason or 'no reason given'}"
        roles = f" ({', '.join(done.roles)})" if done.roles else ""
        who = f"project {done.project_id}{roles}"
        moments.append(Moment(done.created_at, f"{done.action} asked by hand", who, detail))
    callback = session.get(Callback, task.id)
    if callback is not None:
        tone = {"DELIVERED": "ok", "FAILED": "bad"}.get(callback.state, "wait")
        detail = f"{callback.url}, {callback.attempts} attempt(s)"
        if callback.last_error:
            detail += f"; last error: {callback.last_error}"
        when = callback.delivered_at or callback.next_attempt_at
        moments.append(Moment(when, f"callback {callback.state.lower()}", "plugin", detail, tone))
    return sorted(moments, key=lambda m: m.at)


@dataclasses.dataclass(frozen=True)
class Backlog:
    counts: dict[str, int]
    #: when the oldest task not yet claimed was accepted
    oldest: datetime.datetime | None


def backlog(session: orm.Session) -> dict[str, Backlog]:
    """Per provider: its in-flight tasks by state and its oldest unclaimed one."""
    waiting = (TaskState.QUEUED, TaskState.PENDING)
    rows = session.execute(
        sa.select(
            Task.provider,
            Task.state,
            sa.func.count(),
            sa.func.min(Task.created_at),
        )
        .where(Task.state.in_(list(IN_FLIGHT_TASK_STATES)))
        .group_by(Task.provider, Task.state)
    )
    found: dict[str, Backlog] = {}
    for provider, state, count, first in rows:
        entry = found.setdefault(provider, Backlog({}, None))
        entry.counts[state] = count
        oldest = aware(first)
        if state in waiting and oldest is not None and (entry.oldest is None or oldest < entry.oldest):
            found[provider] = dataclasses.replace(entry, oldest=oldest)
    return found


def running_by_agent(session: orm.Session) -> dict[str, int]:
    rows = session.execute(
        sa.select(Task.agent_id, sa.func.count())
        .where(Task.state == TaskState.RUNNING)
        .group_by(Task.agent_id)
    )
    return {agent_id: count for agent_id, count in rows if agent_id is not None}


def agents(session: orm.Session) -> Sequence[AgentRecord]:
    return session.scalars(sa.select(AgentRecord).order_by(AgentRecord.host, AgentRecord.id)).all()
