"""Set-based statements of the attempt path: what a batch of claims writes.

The ORM's unit of work costs more than the statements it sends (a batch of
16 claims spent 42 % of its time flushing); these are plain Core statements,
each sent once per batch (``executemany``), with the fencing in their
``WHERE``: a task is taken only in the state and at the attempt its claim was
decided on, so nothing decided on a stale read is ever written.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import TaskState
from tether.plugin.db.models import Task, TaskAttempt

_TASKS = cast(sa.Table, Task.__table__)
_ATTEMPTS = cast(sa.Table, TaskAttempt.__table__)

#: What deciding a claim reads of a task: not its desired state, which can be large.
CLAIM_COLUMNS = (
    Task.id,
    Task.state,
    Task.attempt,
    Task.claim_id,
    Task.claimed_for,
    Task.agent_id,
    Task.provider,
    Task.root_id,
    Task.resource_id,
    Task.resource_type,
    Task.operation,
    Task.project_id,
    Task.request_id,
    Task.error_type,
    Task.error_message,
)


class StaleClaim(Exception):
    """A task changed between its locked read and the claim's write: a bug
    in the locking, never a race this path should lose silently."""


def for_claims(session: orm.Session, task_ids: Sequence[str]) -> dict[str, Any]:
    """The tasks of a claim batch, locked in id order (two batches cannot
    deadlock on PostgreSQL), by id."""
    query = (
        sa.select(*CLAIM_COLUMNS)
        .where(Task.id.in_(sorted(set(task_ids))))
        .order_by(Task.id)
        .with_for_update()
    )
    return {row.id: row for row in session.execute(query).all()}


def take(session: orm.Session, takes: Sequence[dict[str, Any]]) -> None:
    """Make tasks RUNNING; each dict holds ``id``, the ``was_state`` and
    ``was_attempt`` it was decided on, and the new ``attempt``, ``agent_id``,
    ``claim_id``, ``claimed_for``, ``running_at`` and ``deadline``.

    :raises StaleClaim: when a task was not in the state it was read in.
    """
    if not takes:
        return
    statement = (
        _TASKS.update()
        .where(
            _TASKS.c.id == sa.bindparam("b_id"),
            _TASKS.c.state == sa.bindparam("b_was_state"),
            _TASKS.c.attempt == sa.bindparam("b_was_attempt"),
        )
        .values(
            state=TaskState.RUNNING.value,
            attempt=sa.bindparam("b_attempt"),
            agent_id=sa.bindparam("b_agent_id"),
            claim_id=sa.bindparam("b_claim_id"),
            claimed_for=sa.bindparam("b_claimed_for"),
            running_at=sa.bindparam("b_running_at"),
            deadline=sa.bindparam("b_deadline"),
            updated_at=sa.bindparam("b_running_at"),
        )
    )
    result = session.connection().execute(statement, [{f"b_{k}": v for k, v in t.items()} for t in takes])
    if result.rowcount != len(takes):
        raise StaleClaim(
            f"{len(takes) - result.rowcount} of {len(takes)} claimed tasks changed under their lock"
        )


def close_attempts(session: orm.Session, closes: Sequence[dict[str, Any]], now: datetime.datetime) -> None:
    """Close attempts that are still open; dicts of ``task_id``, ``attempt``,
    ``outcome``, ``error_type`` and ``error_message``."""
    if not closes:
        return
    statement = (
        _ATTEMPTS.update()
        .where(
            _ATTEMPTS.c.task_id == sa.bindparam("b_task_id"),
            _ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
            _ATTEMPTS.c.outcome.is_(None),
        )
        .values(
            outcome=sa.bindparam("b_outcome"),
            finished_at=now,
            error_type=sa.bindparam("b_error_type"),
            error_message=sa.bindparam("b_error_message"),
        )
    )
    session.connection().execute(statement, [{f"b_{k}": v for k, v in c.items()} for c in closes])


def open_attempts(session: orm.Session, opens: Sequence[dict[str, Any]]) -> None:
    """History rows of new attempts, each a dict of the same columns."""
    if opens:
        session.connection().execute(_ATTEMPTS.insert(), [{**o, "applied": False} for o in opens])
