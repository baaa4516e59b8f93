"""Operating status and counters that drivers report outside a task.

A driver pushes them whenever it learns them (a device event) and its
``status()`` is polled now and then; its agent sends both (RPC 1.7
``report_status``, or with its state reports when it is of an earlier
release). A task's result carries the statuses reported during its call
and is applied with the task (:mod:`tether.plugin.tasks.lifecycle.settling`).

An agent speaks only for what it serves: a resource of a shared provider
that it serves, or one of the trees bound to it for a host-placed provider.
Anything else is refused with the reason, which the agent logs once.

A report changes no tree: it writes only the rows whose value differs, and
leaves for the agent to send again those of trees another transaction
holds (locked with SKIP LOCKED, in the order every tree's writer takes
them), so it never waits on, or deadlocks with, the writers of results.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import OperatingStatus
from tether.plugin.agents.endpoint_checks import COUNTERS, valid_counters
from tether.plugin.db import queries
from tether.plugin.db.models import AgentRecord, ResourceRecord

_ROOT = orm.aliased(ResourceRecord)
_RESOURCES = cast(sa.Table, ResourceRecord.__table__)

_SET_STATUS = (
    _RESOURCES.update()
    .where(_RESOURCES.c.id == sa.bindparam("b_id"))
    .values(operating_status=sa.bindparam("b_status"))
)
_SET_STATS = (
    _RESOURCES.update().where(_RESOURCES.c.id == sa.bindparam("b_id")).values(stats=sa.bindparam("b_stats"))
)


@dataclasses.dataclass
class Applied:
    """What became of a report.

    :ivar refused: why each resource out of the agent's scope was refused.
    :ivar busy: resources of trees another transaction held; the agent sends them again.
    """

    refused: dict[str, str] = dataclasses.field(default_factory=dict)
    busy: list[str] = dataclasses.field(default_factory=list)


def apply(
    session: orm.Session,
    agent: AgentRecord | None,
    provider: str | None,
    statuses: Mapping[str, Any],
    stats: Mapping[str, Any],
    host_placed: Callable[[str], bool],
) -> Applied:
    """Apply what ``agent``'s ``provider`` driver reported.

    :param provider: None for a state report of an earlier release, which
        mixes the reports of every provider the agent serves.
    """
    ids = sorted(str(resource_id) for resource_id in set(statuses) | set(stats))
    applied = Applied()
    if not ids:
        return applied
    if agent is None:
        applied.refused = dict.fromkeys(ids, "the agent has not reported its state yet")
        return applied
    rows = session.execute(
        sa.select(
            ResourceRecord.id,
            ResourceRecord.root_id,
            ResourceRecord.provider,
            ResourceRecord.operating_status,
            ResourceRecord.stats,
        )
        .add_columns(_ROOT.agent_id.label("bound_to"))
        .join(_ROOT, _ROOT.id == ResourceRecord.root_id)
        .where(ResourceRecord.id.in_(ids))
    ).all()
    found = {row.id: row for row in rows}
    served = set(agent.providers or [])
    new_status: dict[str, str] = {}
    new_stats: dict[str, Any] = {}
    roots: dict[str, str] = {}
    for resource_id in ids:
        row = found.get(resource_id)
        why = _refusal(row, agent.id, provider, served, host_placed)
        if why is not None or row is None:
            applied.refused[resource_id] = why or "no such resource"
            continue
        if resource_id in statuses:
            status = statuses[resource_id]
            if status not in OperatingStatus.__members__:
                applied.refused[resource_id] = f"{status!r} is not an operating status"
            elif status != row.operating_status:
                new_status[resource_id] = status
                roots[resource_id] = row.root_id
        if resource_id in stats:
            counters = stats[resource_id]
            if not valid_counters(counters):
                applied.refused[resource_id] = f"its stats must be {COUNTERS}"
            elif counters != row.stats:
                new_stats[resource_id] = counters
                roots[resource_id] = row.root_id
    held = queries.lock_trees(session, set(roots.values()), skip_locked=True)
    applied.busy = sorted(rid for rid, root in roots.items() if root not in held)
    _execute(
        session, _SET_STATUS, [{"b_id": k, "b_status": v} for k, v in new_status.items() if roots[k] in held]
    )
    _execute(
        session, _SET_STATS, [{"b_id": k, "b_stats": v} for k, v in new_stats.items() if roots[k] in held]
    )
    return applied


def _refusal(
    row: Any, agent_id: str, provider: str | None, served: set[str], host_placed: Callable[[str], bool]
) -> str | None:
    if row is None:
        return "no such resource"
    if provider is not None and row.provider != provider:
        return f"it belongs to provider {row.provider}, not {provider}"
    if row.provider not in served:
        return f"it belongs to provider {row.provider}, which this agent does not serve"
    if host_placed(row.provider) and row.bound_to != agent_id:
        return f"its tree is bound to {'agent ' + row.bound_to if row.bound_to else 'no agent'}, not this one"
    return None


def _execute(session: orm.Session, statement: sa.Update, rows: list[dict[str, Any]]) -> None:
    if rows:
        session.execute(statement, sorted(rows, key=lambda row: row["b_id"]))
