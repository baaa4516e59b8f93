"""The queries the plugin runs, in one place so indexes can follow them."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import IN_FLIGHT_TASK_STATES, ProvisioningStatus, TaskState
from tether.plugin.db.models import Outbox, ResourceRecord, Task, TaskAttempt, TaskStep


def get_resource(
    session: orm.Session, resource_id: str, project_id: str | None, rtype: str | None = None
) -> ResourceRecord | None:
    """A resource by id, or None when absent or in another project.

    :param project_id: None for an admin, who sees every project.
    """
    if project_id is None and rtype is None:
        # By primary key: a resource this session already holds costs no
        # statement and no flush (a batch of results then flushes once).
        # One it deleted is gone, as a query after the flush would find.
        resource = session.get(ResourceRecord, resource_id)
        return None if resource is None or resource in session.deleted else resource
    query = sa.select(ResourceRecord).where(ResourceRecord.id == resource_id)
    if project_id is not None:
        query = query.where(ResourceRecord.project_id == project_id)
    if rtype is not None:
        query = query.where(ResourceRecord.type == rtype)
    return session.scalars(query).one_or_none()


def get_resources(session: orm.Session, resource_ids: Iterable[str]) -> Sequence[ResourceRecord]:
    return session.scalars(sa.select(ResourceRecord).where(ResourceRecord.id.in_(list(resource_ids)))).all()


def list_resources(
    session: orm.Session,
    rtype: str,
    project_id: str | None,
    filters: dict[str, Any],
    limit: int,
    marker: ResourceRecord | None,
) -> Sequence[ResourceRecord]:
    query = sa.select(ResourceRecord).where(ResourceRecord.type == rtype)
    if project_id is not None:
        query = query.where(ResourceRecord.project_id == project_id)
    for column, value in filters.items():
        query = query.where(getattr(ResourceRecord, column) == value)
    return session.scalars(_page(query, ResourceRecord, marker, limit)).all()


def children(session: orm.Session, resource_id: str) -> Sequence[ResourceRecord]:
    return session.scalars(
        sa.select(ResourceRecord)
        .where(ResourceRecord.parent_id == resource_id)
        .order_by(ResourceRecord.created_at)
    ).all()


def count_children(session: orm.Session, parent_id: str, type_name: str) -> int:
    """How many children of ``type_name`` a resource has, those being deleted left out."""
    query = sa.select(sa.func.count()).where(
        ResourceRecord.parent_id == parent_id,
        ResourceRecord.type == type_name,
        ResourceRecord.provisioning_status != ProvisioningStatus.PENDING_DELETE,
    )
    return int(session.scalar(query) or 0)


def tree(session: orm.Session, root_id: str) -> Sequence[ResourceRecord]:
    return session.scalars(
        sa.select(ResourceRecord).where(ResourceRecord.root_id == root_id).order_by(ResourceRecord.created_at)
    ).all()


def lock_root(session: orm.Session, root_id: str) -> None:
    if not one_writer(session):
        session.execute(sa.select(ResourceRecord.id).where(ResourceRecord.id == root_id).with_for_update())


def lock_trees(session: orm.Session, root_ids: Iterable[str], skip_locked: bool = False) -> set[str]:
    """Lock the roots ``root_ids``, in id order; the roots locked.

    Every transaction that decides what a tree does next (finish its task,
    dispatch the next, queue a change behind the one in the works) holds its
    root first. On PostgreSQL, where plugin replicas write at once, a change
    queued by one and the result recorded by another then cannot both miss
    each other; SQLite's single writer gives the same order anyway.

    :param skip_locked: leave out trees another transaction holds, instead
        of waiting for them (the reaper's way: they are busy, not stuck).
    """
    return _lock_roots(session, sorted(set(root_ids)), skip_locked)


def lock_trees_of_tasks(session: orm.Session, task_ids: Iterable[str]) -> None:
    """:func:`lock_trees` for the trees of ``task_ids``, in one statement."""
    if not one_writer(session):
        _lock_roots(session, sa.select(Task.root_id).where(Task.id.in_(list(task_ids))), False)


def one_writer(session: orm.Session) -> bool:
    """SQLite: a write transaction holds the whole database, so locking a
    root would be a plain read that changes nothing."""
    return session.get_bind().dialect.name == "sqlite"


def _lock_roots(session: orm.Session, roots: list[str] | sa.Select[Any], skip_locked: bool) -> set[str]:
    if isinstance(roots, list) and not roots:
        return set()
    query = (
        sa.select(ResourceRecord.id)
        .where(ResourceRecord.id.in_(roots))
        .order_by(ResourceRecord.id)
        .with_for_update(of=ResourceRecord, skip_locked=skip_locked)
    )
    return set(session.scalars(query))


#: ``session.info`` key: {root id: its unfinished tasks}, loaded in one
#: statement by a transaction that finishes tasks of many trees.
IN_FLIGHT = "tether.in-flight"


def in_flight_tasks(session: orm.Session, root_id: str) -> Sequence[Task]:
    """The tree's unfinished tasks, the one being worked on first, then the queue in order."""
    known = session.info.get(IN_FLIGHT, {}).get(root_id)
    if known is not None:
        # The same objects the session holds, so their states are current.
        tasks = sorted(
            (t for t in known if t.state in IN_FLIGHT_TASK_STATES), key=lambda t: (t.created_at, t.id)
        )
    else:
        tasks = list(
            session.scalars(
                sa.select(Task)
                .where(Task.root_id == root_id, Task.state.in_(list(IN_FLIGHT_TASK_STATES)))
                .order_by(Task.created_at, Task.id)
            )
        )
    return sorted(tasks, key=lambda t: t.state == TaskState.QUEUED)


def load_in_flight(session: orm.Session, root_ids: Iterable[str]) -> None:
    """Load the unfinished tasks of several trees at once, for
    :func:`in_flight_tasks` to answer from for the rest of the transaction.

    Only for a transaction that creates no task: a task it added would be
    missing from the answer.
    """
    by_root: dict[str, list[Task]] = {root_id: [] for root_id in root_ids}
    if by_root:
        query = sa.select(Task).where(
            Task.root_id.in_(list(by_root)), Task.state.in_(list(IN_FLIGHT_TASK_STATES))
        )
        for task in session.scalars(query):
            by_root[task.root_id].append(task)
    session.info[IN_FLIGHT] = by_root


def tasks_of(session: orm.Session, resource_id: str) -> Sequence[Task]:
    return session.scalars(
        sa.select(Task).where(Task.resource_id == resource_id).order_by(Task.created_at, Task.id)
    ).all()


def latest_task(session: orm.Session, resource_id: str) -> Task | None:
    return session.scalars(
        sa.select(Task)
        .where(Task.resource_id == resource_id)
        .order_by(Task.created_at.desc(), Task.id.desc())
        .limit(1)
    ).first()


def get_task(session: orm.Session, task_id: str, project_id: str | None) -> Task | None:
    query = sa.select(Task).where(Task.id == task_id)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    return session.scalars(query).one_or_none()


def list_tasks(
    session: orm.Session,
    project_id: str | None,
    filters: dict[str, Any],
    limit: int,
    marker: Task | None,
) -> Sequence[Task]:
    query = sa.select(Task)
    if project_id is not None:
        query = query.where(Task.project_id == project_id)
    for column, value in filters.items():
        query = query.where(getattr(Task, column) == value)
    return session.scalars(_page(query, Task, marker, limit)).all()


def unsent_outbox(
    session: orm.Session, limit: int, now: datetime.datetime, skip_locked: bool = False
) -> Sequence[Outbox]:
    """The oldest rows due for publishing: two index reads, so rows that wait
    for later (retries in backoff) cost nothing however many there are.

    :param skip_locked: lock the rows, leaving out those another relay holds.
    """
    at_once = sa.select(Outbox).where(Outbox.not_before.is_(None)).order_by(Outbox.id).limit(limit)
    delayed = (
        sa.select(Outbox)
        .where(Outbox.not_before.is_not(None), Outbox.not_before <= now)
        .order_by(Outbox.not_before)
        .limit(limit)
    )
    if skip_locked:
        at_once = at_once.with_for_update(skip_locked=True)
        delayed = delayed.with_for_update(skip_locked=True)
    rows = [*session.scalars(at_once), *session.scalars(delayed)]
    return sorted(rows, key=lambda row: row.id)[:limit]


# Outbox rows are never changed once loaded, so a delete need not look for
# them among the session's objects: with many objects in a batch that
# search made each delete cost as much as the batch.
_PLAIN_SQL = {"synchronize_session": False}


def delete_outbox_of(session: orm.Session, task_id: str) -> None:
    session.execute(sa.delete(Outbox).where(Outbox.task_id == task_id), execution_options=_PLAIN_SQL)


def has_outbox(session: orm.Session, task_id: str) -> bool:
    return session.scalar(sa.select(sa.func.count()).where(Outbox.task_id == task_id)) != 0


def delete_outbox(session: orm.Session, ids: Sequence[int]) -> None:
    session.execute(sa.delete(Outbox).where(Outbox.id.in_(list(ids))), execution_options=_PLAIN_SQL)


def _page(query: sa.Select[Any], model: Any, marker: Any, limit: int) -> sa.Select[Any]:
    """Order by creation and start after ``marker``: keyset paging that stays
    correct while rows are added."""
    if marker is not None:
        query = query.where(
            sa.tuple_(model.created_at, model.id)
            > sa.tuple_(sa.literal(marker.created_at, model.created_at.type), sa.literal(marker.id))
        )
    return query.order_by(model.created_at, model.id).limit(limit)


def attempts_of(session: orm.Session, task_ids: Sequence[str]) -> dict[tuple[str, int], TaskAttempt]:
    """The attempts of several tasks in one statement, by (task id, attempt)."""
    if not task_ids:
        return {}
    rows = session.scalars(sa.select(TaskAttempt).where(TaskAttempt.task_id.in_(list(task_ids))))
    return {(row.task_id, row.attempt): row for row in rows}


def get_attempt(session: orm.Session, task_id: str, attempt: int) -> TaskAttempt | None:
    return session.scalars(
        sa.select(TaskAttempt).where(TaskAttempt.task_id == task_id, TaskAttempt.attempt == attempt)
    ).first()


def attempts(session: orm.Session, task_id: str) -> Sequence[TaskAttempt]:
    return session.scalars(
        sa.select(TaskAttempt).where(TaskAttempt.task_id == task_id).order_by(TaskAttempt.attempt)
    ).all()


def steps(session: orm.Session, task_id: str) -> Sequence[TaskStep]:
    """The steps of a task's operation, in order."""
    return session.scalars(
        sa.select(TaskStep).where(TaskStep.task_id == task_id).order_by(TaskStep.position)
    ).all()


def task_for_update(session: orm.Session, task_id: str) -> Task | None:
    return session.scalars(sa.select(Task).where(Task.id == task_id).with_for_update()).one_or_none()


def tasks_for_update(session: orm.Session, task_ids: Sequence[str]) -> dict[str, Task]:
    """Several tasks locked in one statement, in id order (two such batches
    cannot deadlock on PostgreSQL), by id, as they stand once locked.

    A claim locks the task alone: whatever decides on a task's state reads it
    under this lock, or a claim committing in between is overwritten.
    """
    query = (
        sa.select(Task)
        .where(Task.id.in_(sorted(set(task_ids))))
        .order_by(Task.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {task.id: task for task in session.scalars(query)}


def still_locked(session: orm.Session, tasks: Iterable[Task], keep: Callable[[Task], bool]) -> list[Task]:
    """Those of ``tasks`` that ``keep`` picks, read again under their row
    locks and picked again: a claim (which locks the task alone) may have
    changed one since it was read. In id order."""
    return [t for t in tasks_for_update(session, [t.id for t in tasks if keep(t)]).values() if keep(t)]


def delete_outbox_of_tasks(session: orm.Session, task_ids: Sequence[str]) -> None:
    if task_ids:
        session.execute(
            sa.delete(Outbox).where(Outbox.task_id.in_(list(task_ids))), execution_options=_PLAIN_SQL
        )
