"""The drift audit, the plugin's side: what an agent should find on its
devices, what it reported finding, and the repairs that follow.

An agent whose driver can list its device asks :func:`targets` for the
resources it should hold there, compares, and reports with :func:`record`.
Only settled resources are audited (``ACTIVE`` with the latest generation
applied): a change in flight is not drift. A report is fenced by the
generations it was made against, so a change accepted meanwhile is not
mistaken for drift either.

A drifted resource keeps its provisioning status and shows the difference
in ``drift``, which makes it not ``in_sync``. When the agent is configured to
repair, :func:`record` queues an update of each drifted resource that
re-applies its desired state through the pipeline like any change (claims,
fencing, retries, history); its success clears ``drift``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.states import IN_FLIGHT_TASK_STATES, ProvisioningStatus
from tether.plugin.db import queries
from tether.plugin.db.models import AgentRecord, ResourceRecord, Task
from tether.plugin.tasks.lifecycle.reapplying import reapply
from tether.plugin.tasks.lifecycle.retries import Policy

LOG = logging.getLogger(__name__)

MISSING = "missing on the device"


def targets(session: orm.Session, provider: str, roots: Sequence[str] | None) -> dict[str, dict[str, Any]]:
    """The settled resources of ``provider`` (of the trees ``roots`` only,
    for a host-placed one), with what their device should hold."""
    query = sa.select(ResourceRecord).where(
        ResourceRecord.provider == provider,
        ResourceRecord.provisioning_status == ProvisioningStatus.ACTIVE.value,
        ResourceRecord.applied_generation == ResourceRecord.generation,
    )
    if roots is not None:
        query = query.where(ResourceRecord.root_id.in_(list(roots)))
    return {
        row.id: {"type": row.type, "generation": row.generation, "attributes": row.applied_attributes or {}}
        for row in session.scalars(query)
    }


def record(
    session: orm.Session,
    policy: Policy,
    agent: AgentRecord,
    provider: str,
    placed: Mapping[str, Mapping[str, Any]],
    audited: Mapping[str, int],
    drift: Mapping[str, Any],
    undesired: Sequence[str],
    repair: Collection[str],
) -> list[str]:
    """What one audit found; the ids of the resources queued for repair.

    :param placed: what :func:`targets` answers for this agent now: only
        these resources take the report (a tree that moved, or a device
        another agent audits now, is not this agent's to judge).
    :param audited: generation of each resource the audit compared.
    :param drift: by resource id: ``{"missing": True}`` or ``{"attributes":
        {name: {"expected": …, "found": …}}}``; the audited ones it leaves
        out are as desired.
    :param undesired: ids on the device that no audited resource has.
    :param repair: the drifted resources to repair.
    """
    mine = {
        rid
        for rid, generation in audited.items()
        if rid in placed and placed[rid]["generation"] == generation
    }
    # Trees first, as every writer that decides on a tree holds its root;
    # then the resources, read under those locks.
    roots = session.scalars(sa.select(ResourceRecord.root_id).where(ResourceRecord.id.in_(list(mine))))
    queries.lock_trees(session, set(roots))
    repaired: list[str] = []
    for row in queries.get_resources(session, mine):
        if row.generation != audited[row.id] or row.provisioning_status != ProvisioningStatus.ACTIVE:
            continue  # changed since the agent looked: the next audit will tell
        found = _difference(drift.get(row.id))
        if found != row.drift:
            if found is None:
                LOG.info("%s %s is as desired on the device again", row.type, row.id)
            else:
                LOG.warning(
                    "%s %s drifted on the device of agent %s (%s): %s",
                    row.type,
                    row.id,
                    agent.id,
                    provider,
                    found["summary"],
                )
            row.drift = found
        if found is not None and row.id in repair and _repair(session, policy, row):
            repaired.append(row.id)
    unknown = sorted(set(undesired) - {row.id for row in queries.get_resources(session, set(undesired))})
    held = dict(agent.undesired or {})
    if unknown != held.get(provider, []):
        if unknown:
            LOG.warning(
                "agent %s: its %s device holds what no resource desires there: %s",
                agent.id,
                provider,
                ", ".join(unknown),
            )
        held[provider] = unknown
        agent.undesired = {k: v for k, v in held.items() if v} or None
    return repaired


def _difference(reported: Any) -> dict[str, Any] | None:
    """The drift kept on a resource, in the shape the API shows."""
    if not reported:
        return None
    if reported.get("missing"):
        return {"missing": True, "summary": MISSING}
    attributes = {
        str(name): {"expected": diff.get("expected"), "found": diff.get("found")}
        for name, diff in (reported.get("attributes") or {}).items()
        if isinstance(diff, Mapping)
    }
    if not attributes:
        return None
    return {"attributes": attributes, "summary": f"differs on the device: {', '.join(sorted(attributes))}"}


def _repair(session: orm.Session, policy: Policy, resource: ResourceRecord) -> bool:
    """Queue an update that applies ``resource``'s desired state again,
    unless its tree is busy (whatever runs there applies it anyway)."""
    busy = session.scalar(
        sa.select(sa.func.count())
        .select_from(Task)
        .where(Task.root_id == resource.root_id, Task.state.in_(list(IN_FLIGHT_TASK_STATES)))
    )
    if busy:
        return False
    reapply(session, policy, resource, (resource.drift or {}).get("summary") or "drifted", verb="repairs")
    return True
