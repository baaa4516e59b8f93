"""The steps of a stepped operation: planned, started, done, failed, undone.

A driver may split an operation into steps (:class:`tether.drivers.base.Steps`).
Its agent reports the list before the first step (:func:`plan`) and each
step as it starts and ends (:func:`record`), waiting for each answer, so a
step reported done is committed before the next one starts. A later attempt
of the task (its agent died, or a step failed in a way worth retrying) plans
again and is told which steps are done: it skips them.

Every report is fenced like a result: only the task's current attempt, while
the task runs, may write its steps. A report of any other attempt changes
nothing, and its agent is told so and stops.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import orm

from tether.common.states import StepState, TaskState
from tether.plugin.db import queries
from tether.plugin.db.models import Task, TaskStep, utcnow

LOG = logging.getLogger(__name__)

#: What a step's report may say it became (PENDING is only planned).
REPORTED = frozenset(StepState) - {StepState.PENDING}


def current(task: Task | None, attempt: int) -> bool:
    """May ``attempt`` of ``task`` still write its steps?"""
    return task is not None and task.state == TaskState.RUNNING and task.attempt == attempt


def plan(session: orm.Session, task: Task | None, attempt: int, names: Sequence[str]) -> list[str] | None:
    """Record the operation's steps; the names of those already done.

    A step whose place now holds another name (the driver changed between
    attempts) starts over as PENDING: only a step recorded done under the
    same name at the same place is skipped.

    :returns: None when ``attempt`` was fenced off.
    """
    if task is None or not current(task, attempt):
        return None
    rows = {row.position: row for row in queries.steps(session, task.id)}
    for position, name in enumerate(names):
        row = rows.get(position)
        if row is None:
            session.add(TaskStep(task_id=task.id, position=position, name=name, state=StepState.PENDING))
        elif row.name != name:
            row.name, row.state = name, StepState.PENDING.value
            row.attempt = row.agent_id = row.started_at = row.finished_at = None
            row.error_type = row.error_message = None
    for position, row in rows.items():
        if position >= len(names):
            session.delete(row)
    done = [
        row.name
        for position, row in sorted(rows.items())
        if position < len(names) and row.name == names[position] and row.state == StepState.DONE
    ]
    if done:
        LOG.info(
            "task %s: attempt %d resumes after %d of %d step(s) done: %s",
            task.id,
            attempt,
            len(done),
            len(names),
            ", ".join(done),
        )
    return done


def record(
    session: orm.Session,
    task: Task | None,
    attempt: int,
    agent_id: str,
    position: int,
    state: StepState,
    error_type: str | None = None,
    error_message: str | None = None,
) -> bool:
    """What became of one step; False when ``attempt`` was fenced off.

    :raises LookupError: no step at ``position`` was planned.
    """
    if task is None or not current(task, attempt):
        return False
    planned = queries.steps(session, task.id)
    row = next((r for r in planned if r.position == position), None)
    if row is None:
        raise LookupError(f"task {task.id} has no step {position + 1} planned ({len(planned)} are)")
    now = utcnow()
    row.state, row.attempt, row.agent_id = state.value, attempt, agent_id
    if state == StepState.RUNNING:
        row.started_at, row.finished_at = now, None
        row.error_type = row.error_message = None
        task.progress = f"step {position + 1} of {len(planned)}: {row.name}"
    else:
        row.finished_at = now
        row.error_type = error_type[:64] if error_type else None
        row.error_message = error_message
    LOG.info(
        "task %s: step %d of %d (%s) %s (attempt %d, agent %s)%s",
        task.id,
        position + 1,
        len(planned),
        row.name,
        state.value,
        attempt,
        agent_id,
        f": {error_type}: {error_message}" if error_type else "",
    )
    return True
