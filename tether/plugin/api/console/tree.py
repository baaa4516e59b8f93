"""The resources page: each root's tree, and why what is not settled is not.

A fixed number of statements per page, whatever the number of resources:
the roots, their trees, the latest task of each unsettled resource, those
tasks' attempts and retry times, and the usual time of each operation (one
statement for all of them, :func:`usual_seconds`).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.resource_types import Registry
from tether.common.states import ProvisioningStatus, TaskState
from tether.plugin.db.models import Outbox, ResourceRecord, Task, TaskAttempt, utcnow

#: the finished tasks the usual time of an operation is taken from: the
#: newest this many of all (an index range), and of those the newest
#: ``USUAL_SAMPLE`` of each resource type and operation
USUAL_WINDOW = 5000
USUAL_SAMPLE = 100
USUAL_PERCENTILE = 0.95


@dataclasses.dataclass
class Why:
    """What an unsettled resource is waiting for, or what went wrong."""

    task: Task
    attempt: TaskAttempt | None
    #: when a retry in backoff is published again
    next_retry: datetime.datetime | None
    #: seconds since the task was accepted
    seconds: float
    #: p95 of the same operation on the same type, from its last finished tasks
    usual: float | None


@dataclasses.dataclass
class Node:
    resource: ResourceRecord
    in_sync: bool
    why: Why | None = None
    #: children by type, in the registry's order of types
    children: list[tuple[str, list[Node]]] = dataclasses.field(default_factory=list)


def settled(row: ResourceRecord) -> bool:
    return row.provisioning_status == ProvisioningStatus.ACTIVE and row.drift is None


def in_sync(row: ResourceRecord) -> bool:
    # The API's definition (views.in_sync), repeated here so the console
    # does not import the REST layer's views for one line.
    return settled(row) and row.applied_generation == row.generation


def trees(
    session: orm.Session,
    registry: Registry,
    project_id: str | None,
    limit: int,
    root_id: str | None = None,
) -> tuple[list[Node], bool]:
    """The newest ``limit`` roots (of ``project_id``, or every project's) as
    trees; and whether there are more."""
    query = sa.select(ResourceRecord).where(ResourceRecord.parent_id.is_(None))
    if project_id is not None:
        query = query.where(ResourceRecord.project_id == project_id)
    if root_id is not None:
        query = query.where(ResourceRecord.id == root_id)
    roots = list(
        session.scalars(query.order_by(ResourceRecord.created_at.desc(), ResourceRecord.id).limit(limit + 1))
    )
    more = len(roots) > limit
    roots = roots[:limit]
    if not roots:
        return [], False
    rows = list(
        session.scalars(sa.select(ResourceRecord).where(ResourceRecord.root_id.in_([r.id for r in roots])))
    )
    whys = explain(session, [r for r in rows if not in_sync(r)])
    nodes = {r.id: Node(r, in_sync(r), whys.get(r.id)) for r in rows}
    by_parent: dict[str | None, list[Node]] = {}
    for node in sorted(nodes.values(), key=lambda n: (n.resource.created_at, n.resource.id)):
        by_parent.setdefault(node.resource.parent_id, []).append(node)
    order = list(registry)
    for node in nodes.values():
        kids = by_parent.get(node.resource.id, [])
        types = sorted(
            {k.resource.type for k in kids}, key=lambda t: order.index(t) if t in order else len(order)
        )
        node.children = [(t, [k for k in kids if k.resource.type == t]) for t in types]
    return [nodes[r.id] for r in roots if r.id in nodes], more


def explain(session: orm.Session, unsettled: Sequence[ResourceRecord]) -> dict[str, Why]:
    """The latest task of each resource in ``unsettled``, with its current
    attempt, its next retry and the usual time of its operation."""
    if not unsettled:
        return {}
    newest = (
        sa.select(
            Task.id,
            sa.func.row_number()
            .over(partition_by=Task.resource_id, order_by=(Task.created_at.desc(), Task.id.desc()))
            .label("n"),
        )
        .where(Task.resource_id.in_([r.id for r in unsettled]))
        .subquery()
    )
    tasks = list(session.scalars(sa.select(Task).join(newest, newest.c.id == Task.id).where(newest.c.n == 1)))
    if not tasks:
        return {}
    ids = [t.id for t in tasks]
    attempts = {
        (a.task_id, a.attempt): a
        for a in session.scalars(sa.select(TaskAttempt).where(TaskAttempt.task_id.in_(ids)))
    }
    retries: dict[str, Any] = dict(
        session.execute(
            sa.select(Outbox.task_id, sa.func.min(Outbox.not_before))
            .where(Outbox.task_id.in_(ids), Outbox.not_before.is_not(None))
            .group_by(Outbox.task_id)
        ).all()
    )
    usual = usual_seconds(session, {(t.resource_type, t.operation) for t in tasks})
    now = utcnow()
    return {
        t.resource_id: Why(
            task=t,
            attempt=attempts.get((t.id, t.attempt)),
            next_retry=aware(retries.get(t.id)) if t.state == TaskState.PENDING else None,
            seconds=((t.finished_at or now) - t.created_at).total_seconds(),
            usual=usual.get((t.resource_type, t.operation)),
        )
        for t in tasks
    }


def usual_seconds(session: orm.Session, kinds: Iterable[tuple[str, str]]) -> dict[tuple[str, str], float]:
    """p95 of accept-to-finish time of the last succeeded tasks of each
    (resource type, operation) in ``kinds``: one statement for all."""
    kinds = set(kinds)
    if not kinds:
        return {}
    recent = (
        sa.select(
            Task.resource_type,
            Task.operation,
            Task.updated_at,
            _seconds(session, Task.created_at, Task.finished_at).label("s"),
        )
        .where(Task.state == TaskState.SUCCEEDED, Task.finished_at.is_not(None))
        .order_by(Task.updated_at.desc())
        .limit(USUAL_WINDOW)
        .subquery()
    )
    by_kind = (recent.c.resource_type, recent.c.operation)
    newest = (
        sa.select(
            recent.c.resource_type,
            recent.c.operation,
            recent.c.s,
            sa.func.row_number().over(partition_by=by_kind, order_by=recent.c.updated_at.desc()).label("n"),
        )
        .where(
            recent.c.resource_type.in_({k[0] for k in kinds}),
            recent.c.operation.in_({k[1] for k in kinds}),
        )
        .subquery()
    )
    sample = sa.select(newest).where(newest.c.n <= USUAL_SAMPLE).subquery()
    kind = (sample.c.resource_type, sample.c.operation)
    ranked = sa.select(
        sample.c.resource_type,
        sample.c.operation,
        sample.c.s,
        sa.func.row_number().over(partition_by=kind, order_by=sample.c.s).label("rank"),
        sa.func.count().over(partition_by=kind).label("size"),
    ).subquery()
    # The nearest-rank percentile: the smallest value with at least 95% of
    # the sample at or below it.
    wanted = sa.cast(sa.func.ceil(ranked.c.size * USUAL_PERCENTILE), sa.Integer)
    if session.get_bind().dialect.name == "sqlite":
        # SQLite has no ceil() before 3.35 builds with math functions.
        wanted = sa.cast(ranked.c.size * USUAL_PERCENTILE + 0.999999, sa.Integer)
    rows = session.execute(
        sa.select(ranked.c.resource_type, ranked.c.operation, ranked.c.s).where(ranked.c.rank == wanted)
    )
    return {(t, op): float(s) for t, op, s in rows if (t, op) in kinds}


def _seconds(session: orm.Session, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "sqlite":
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0
    return sa.func.extract("epoch", end - start)


def aware(value: datetime.datetime | str | None) -> datetime.datetime | None:
    # An aggregate's value may not go through the column's type.
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value
