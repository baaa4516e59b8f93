"""Set-based statements of the attempt path: what a batch of claims, and of
results that settle their task simply, writes.

The ORM's unit of work costs more than the statements it sends (a batch of
16 claims spent 42 % of its time flushing); these are plain Core statements,
built once, each sent once per batch (``executemany``), with the fencing in
their ``WHERE``: a task is taken or settled only in the state and at the
attempt it was decided on, so nothing decided on a stale read is written.

The updates go one level further down: compiled once per dialect, they are
handed to the DB-API's ``executemany`` with their parameters already in the
driver's shape (:mod:`tether.plugin.db.prepared`), because Core's processing of each row's
parameters cost more than the statement itself.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.exceptions import TetherError
from tether.common.states import IN_FLIGHT_TASK_STATES, ProvisioningStatus, TaskState
from tether.plugin.db import prepared
from tether.plugin.db.models import Outbox, ResourceRecord, Task, TaskAttempt

_TASKS = cast(sa.Table, Task.__table__)
_ATTEMPTS = cast(sa.Table, TaskAttempt.__table__)
_RESOURCES = cast(sa.Table, ResourceRecord.__table__)


class StaleClaim(TetherError):
    """A task changed between its locked read and the write decided on it: a
    bug in the locking, never a race this path may lose silently."""


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

#: What settling a result reads of its task.
RESULT_COLUMNS = (
    Task.id,
    Task.state,
    Task.attempt,
    Task.root_id,
    Task.resource_id,
    Task.resource_type,
    Task.operation,
    Task.generation,
    Task.provider,
    Task.callback_url,
    Task.agent_id,
    Task.created_at,
)

_TAKE = (
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

_CLOSE_ATTEMPT = (
    _ATTEMPTS.update()
    .where(
        _ATTEMPTS.c.task_id == sa.bindparam("b_task_id"),
        _ATTEMPTS.c.attempt == sa.bindparam("b_attempt"),
        _ATTEMPTS.c.outcome.is_(None),
    )
    .values(
        outcome=sa.bindparam("b_outcome"),
        finished_at=sa.bindparam("b_now"),
        error_type=sa.bindparam("b_error_type"),
        error_message=sa.bindparam("b_error_message"),
        applied=sa.bindparam("b_applied"),
    )
)

_SUCCEED = (
    _TASKS.update()
    .where(
        _TASKS.c.id == sa.bindparam("b_id"),
        _TASKS.c.state == TaskState.RUNNING.value,
        _TASKS.c.attempt == sa.bindparam("b_attempt"),
    )
    .values(
        state=TaskState.SUCCEEDED.value,
        finished_at=sa.bindparam("b_now"),
        deadline=None,
        # What earlier attempts failed with, and the last progress, are history now.
        error_type=None,
        error_message=None,
        progress=None,
        host=sa.func.coalesce(sa.bindparam("b_host", type_=sa.String), _TASKS.c.host),
        updated_at=sa.bindparam("b_now"),
    )
)

# The device holds this generation now: copied from the task in SQL,
# without reading the desired state into the plugin.
_APPLIED = (
    _RESOURCES.update()
    .where(
        _RESOURCES.c.id == sa.bindparam("b_resource_id"),
        _RESOURCES.c.applied_generation <= sa.bindparam("b_generation"),
    )
    .values(
        applied_generation=sa.bindparam("b_generation"),
        applied_attributes=sa.select(_TASKS.c.desired)
        .where(_TASKS.c.id == sa.bindparam("b_id"))
        .scalar_subquery(),
        updated_at=sa.bindparam("b_now"),
    )
)

_ACTIVE = (
    _RESOURCES.update()
    .where(
        _RESOURCES.c.id == sa.bindparam("b_resource_id"),
        _RESOURCES.c.generation == sa.bindparam("b_generation"),
    )
    # Whatever the last audit found differs no more: the device holds this.
    .values(provisioning_status=ProvisioningStatus.ACTIVE.value, last_error=None, drift=None)
)

_OPERATING_STATUS = (
    _RESOURCES.update()
    .where(
        _RESOURCES.c.id == sa.bindparam("b_resource_id"), _RESOURCES.c.root_id == sa.bindparam("b_root_id")
    )
    .values(operating_status=sa.bindparam("b_status"))
)

_OPEN_ATTEMPT = (
    sa.select(TaskAttempt.id)
    .where(TaskAttempt.task_id == Task.id, TaskAttempt.attempt == Task.attempt, TaskAttempt.outcome.is_(None))
    .exists()
)


_FOR_CLAIMS = (
    sa.select(*CLAIM_COLUMNS)
    .where(Task.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(Task.id)
    .with_for_update()
)

_FOR_RESULTS = (
    sa.select(*RESULT_COLUMNS, _OPEN_ATTEMPT.label("open_attempt"))
    .where(Task.id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(Task.id)
    .with_for_update(of=Task)
)

_BUSY_TREES = (
    sa.select(Task.root_id)
    .where(Task.root_id.in_(sa.bindparam("ids", expanding=True)), Task.state.in_(list(IN_FLIGHT_TASK_STATES)))
    .group_by(Task.root_id)
    .having(sa.func.count() > 1)
)

_DELETE_OUTBOX = sa.delete(Outbox).where(Outbox.task_id.in_(sa.bindparam("ids", expanding=True)))


def for_claims(session: orm.Session, task_ids: Sequence[str]) -> dict[str, Any]:
    """The tasks of a claim batch, locked in id order (two batches cannot
    deadlock on PostgreSQL), by id."""
    return {
        row.id: row for row in session.connection().execute(_FOR_CLAIMS, {"ids": sorted(set(task_ids))}).all()
    }


def for_results(session: orm.Session, task_ids: Sequence[str]) -> dict[str, Any]:
    """The tasks of a result batch, locked in id order, with ``open_attempt``:
    whether their current attempt's history row is still open."""
    return {
        row.id: row
        for row in session.connection().execute(_FOR_RESULTS, {"ids": sorted(set(task_ids))}).all()
    }


def busy_trees(session: orm.Session, root_ids: Iterable[str]) -> set[str]:
    """Those of the trees with more than one unfinished task: finishing one
    of them dispatches the next."""
    return set(session.connection().scalars(_BUSY_TREES, {"ids": sorted(set(root_ids))}))


def delete_outbox(session: orm.Session, task_ids: Sequence[str]) -> None:
    """The outbox rows of claimed tasks: a copy the reaper put there again is moot now."""
    if task_ids:
        session.connection().execute(_DELETE_OUTBOX, {"ids": list(task_ids)})


def take(session: orm.Session, takes: Sequence[Mapping[str, Any]]) -> None:
    """Make tasks RUNNING; each mapping holds ``id``, the ``was_state`` and
    ``was_attempt`` it was decided on, and the new ``attempt``, ``agent_id``,
    ``claim_id``, ``claimed_for``, ``running_at`` and ``deadline``.

    :raises StaleClaim: when a task was not in the state it was read in.
    """
    _execute_fenced(session, _TAKE, takes, "claimed")


def close_attempts(session: orm.Session, closes: Sequence[Mapping[str, Any]], now: datetime.datetime) -> None:
    """Close attempts that are still open; mappings of ``task_id``, ``attempt``,
    ``outcome``, ``error_type`` and ``error_message``."""
    _execute(session, _CLOSE_ATTEMPT, [{**c, "applied": False, "now": now} for c in closes])


def open_attempts(session: orm.Session, opens: Sequence[Mapping[str, Any]]) -> None:
    """History rows of new attempts, each a mapping of the same columns."""
    if opens:
        session.connection().execute(_ATTEMPTS.insert(), [{**o, "applied": False} for o in opens])


def succeed(session: orm.Session, settled: Sequence[Mapping[str, Any]], now: datetime.datetime) -> None:
    """RUNNING → SUCCEEDED for tasks at their current attempt, their attempt
    closed as applied, their resource's desired state recorded as applied.

    Each mapping holds the task's ``id``, ``attempt``, ``host``,
    ``resource_id`` and ``generation``.

    :raises StaleClaim: when a task was not RUNNING at that attempt.
    """
    rows = [{**s, "now": now} for s in settled]
    _execute_fenced(session, _SUCCEED, rows, "settled")
    _execute(
        session,
        _CLOSE_ATTEMPT,
        [
            {
                "task_id": s["id"],
                "attempt": s["attempt"],
                "outcome": TaskState.SUCCEEDED.value,
                "applied": True,
            }
            | {"error_type": None, "error_message": None, "now": now}
            for s in settled
        ],
    )
    _execute(session, _APPLIED, rows)
    _execute(
        session, _ACTIVE, [{"resource_id": s["resource_id"], "generation": s["generation"]} for s in settled]
    )


def set_operating_statuses(session: orm.Session, statuses: Sequence[Mapping[str, Any]]) -> None:
    """Operating statuses a driver reported; mappings of ``resource_id``,
    ``root_id`` (a driver speaks only for its own tree) and ``status``."""
    _execute(session, _OPERATING_STATUS, statuses)


def _execute(session: orm.Session, statement: sa.Update, rows: Sequence[Mapping[str, Any]]) -> int:
    if not rows:
        return 0
    return prepared.execute(session.connection(), statement, rows, prefix="b_")


def _execute_fenced(
    session: orm.Session, statement: sa.Update, rows: Sequence[Mapping[str, Any]], what: str
) -> None:
    written = _execute(session, statement, rows)
    if written != len(rows):
        raise StaleClaim(f"{len(rows) - written} of {len(rows)} {what} tasks changed under their lock")
