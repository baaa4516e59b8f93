"""Active-standby placement: a second agent's host holds a root, ready to
serve it the moment the first fails.

A root of a host-placed provider whose ``topology`` attribute is
``ACTIVE_STANDBY`` is bound to two agents: ``agent_id``, the active, which
runs its tasks as any host-placed root's agent does, and
``standby_agent_id``, on another host when one serves the provider. Tasks
never go to the standby: one task at a time per tree (DESIGN.md guarantee
6) holds, and no second state machine follows it. The standby agent asks
instead, every ``[agent] standby_interval`` (RPC 1.8 ``standby_sync``),
what it stands by for, applies each settled tree through its driver's
``sync_standby`` and says which tree it holds, as a digest of it; the root
shows its standby in step when that digest is the tree's. The active agent
asks the same call for its peer, the standby, whose address its driver
needs (VRRP unicast).

When the active agent is declared dead the reaper promotes the standby at
once: it becomes the active (its tasks go to it, its status reports count;
the tree never shows OFFLINE), the tree is applied on it again in full if it
was not in step, and another live agent, if any, becomes the new standby.
When the standby dies, another takes its place. The device moves traffic by
itself (keepalived's VRRP for the haproxy driver), long before the plugin
has declared anyone dead; the plugin follows.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Collection, Iterable, Sequence
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy import orm

from tether.common.capabilities import Capabilities
from tether.common.states import ProvisioningStatus
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.db import agent_queries, queries
from tether.plugin.db.models import AgentRecord, ResourceRecord, Row
from tether.plugin.tasks import work

LOG = logging.getLogger(__name__)

ATTRIBUTE = "topology"
ACTIVE_STANDBY = "ACTIVE_STANDBY"


def wanted(root: ResourceRecord) -> bool:
    """Does ``root`` ask for a standby?"""
    return root.parent_id is None and (root.attributes or {}).get(ATTRIBUTE) == ACTIVE_STANDBY


def choose(
    session: orm.Session, root: ResourceRecord, agents: AgentRegistry, exclude: Iterable[str] = ()
) -> str | None:
    """Bind ``root`` to a standby agent: a live one other than its active,
    on another host if any serves the provider, the least loaded (roots
    held as active or standby) first. None when there is none."""
    skip = {root.agent_id, *exclude}
    live = [a for a in agents.live_for(session, root.provider) if a.id not in skip and able(a, root)]
    active = agent_queries.get_agent(session, root.agent_id) if root.agent_id else None
    apart = [a for a in live if active is None or a.host != active.host]
    candidates = apart or live
    previous = root.standby_agent_id
    if not candidates:
        root.standby_agent_id = root.standby_digest = None
        if previous:
            LOG.warning(
                "%s %s has no standby now: no other live agent serves %s", root.type, root.id, root.provider
            )
        return None
    ids = [a.id for a in candidates]
    load = collections.Counter(
        session.scalars(sa.select(ResourceRecord.agent_id).where(ResourceRecord.agent_id.in_(ids))).all()
    ) + collections.Counter(
        session.scalars(
            sa.select(ResourceRecord.standby_agent_id).where(ResourceRecord.standby_agent_id.in_(ids))
        ).all()
    )
    chosen = min(ids, key=lambda a: (load[a], a))
    if chosen != previous:
        root.standby_agent_id, root.standby_digest = chosen, None
        LOG.info(
            "%s %s of provider %s has standby agent %s%s",
            root.type,
            root.id,
            root.provider,
            chosen,
            f" (was {previous})" if previous else "",
        )
    return chosen


def able(agent: AgentRecord, root: ResourceRecord) -> bool:
    """Can ``agent``'s driver of ``root``'s provider hold ``root``'s topology,
    by what it declared? (Yes when it declared nothing: an older agent.)"""
    wire = (agent.capabilities or {}).get(root.provider)
    if wire is None:
        return True
    try:
        declared = Capabilities.from_wire(wire)
    except ValueError:
        return True
    topology = {ATTRIBUTE: (root.attributes or {}).get(ATTRIBUTE)}
    return declared.judge(root.type, topology, {}) is None


def ensure(session: orm.Session, root: ResourceRecord, agents: AgentRegistry) -> None:
    """Give ``root`` a live standby if it wants one and has none."""
    if not wanted(root) or root.agent_id is None:
        return
    if root.standby_agent_id and root.standby_agent_id != root.agent_id:
        agent = agent_queries.get_agent(session, root.standby_agent_id)
        if agent is not None and agent.admin_state_up and agents.alive(agent):
            return
    choose(session, root, agents)


def promote(session: orm.Session, dead: str, agents: AgentRegistry) -> list[tuple[ResourceRecord, bool]]:
    """The roots whose active agent ``dead`` died and whose standby lives:
    each now has its standby as active, and a new standby if one can be
    had. With each, whether the promoted agent held the tree in step."""
    promoted = []
    for root in agent_queries.bound_to(session, dead):
        if not wanted(root) or not root.standby_agent_id:
            continue
        standby = agent_queries.get_agent(session, root.standby_agent_id)
        if standby is None or not standby.admin_state_up or not agents.alive(standby):
            continue
        queries.lock_root(session, root.id)
        in_step = in_step_of(session, root)
        root.agent_id, root.standby_agent_id, root.standby_digest = standby.id, None, None
        LOG.warning(
            "%s %s: active agent %s died; standby agent %s (host %s) is active now%s",
            root.type,
            root.id,
            dead,
            standby.id,
            standby.host,
            "" if in_step else ", and gets the tree in full: it was not in step",
        )
        choose(session, root, agents, exclude=[dead])
        promoted.append((root, in_step))
    return promoted


def replace(session: orm.Session, dead: str, agents: AgentRegistry) -> int:
    """Roots whose standby agent ``dead`` died get another (or none)."""
    roots = session.scalars(
        sa.select(ResourceRecord).where(
            ResourceRecord.standby_agent_id == dead, ResourceRecord.parent_id.is_(None)
        )
    ).all()
    for root in roots:
        queries.lock_root(session, root.id)
        LOG.warning("%s %s lost its standby agent %s", root.type, root.id, dead)
        choose(session, root, agents, exclude=[dead])
    return len(roots)


def fill(session: orm.Session, providers: Sequence[str], agents: AgentRegistry, live: Collection[str]) -> int:
    """Roots of ``providers`` that want a standby and have none (no second
    agent served the provider when they were placed), or one that is not
    among the ``live`` agents (disabled, or dead and not yet replaced): a
    live one each, if one can be had now. How many got one."""
    if not providers:
        return 0
    lacking = session.scalars(
        sa.select(ResourceRecord).where(
            ResourceRecord.provider.in_(list(providers)),
            ResourceRecord.parent_id.is_(None),
            ResourceRecord.agent_id.is_not(None),
            sa.or_(
                ResourceRecord.standby_agent_id.is_(None), ResourceRecord.standby_agent_id.not_in(list(live))
            ),
        )
    ).all()
    return sum(choose(session, root, agents) is not None for root in lacking if wanted(root))


def stood_by(session: orm.Session, agent_id: str) -> Sequence[ResourceRecord]:
    """Roots ``agent_id`` stands by for."""
    return session.scalars(
        sa.select(ResourceRecord)
        .where(ResourceRecord.standby_agent_id == agent_id, ResourceRecord.parent_id.is_(None))
        .order_by(ResourceRecord.id)
    ).all()


def held_by_active(rows: Sequence[ResourceRecord]) -> list[Row]:
    """A settled tree as its active's device holds it: each resource with
    the attributes of the generation a driver last applied (after a failed
    update, the one before it, as the drift audit compares)."""
    return [
        Row(
            id=r.id,
            type=r.type,
            root_id=r.root_id,
            project_id=r.project_id,
            parent_id=r.parent_id,
            provisioning_status=r.provisioning_status,
            applied_generation=r.applied_generation,
            attributes=r.applied_attributes if r.applied_attributes is not None else r.attributes,
        )
        for r in rows
    ]


def digest(rows: Sequence[ResourceRecord | Row]) -> str:
    """What a standby must hold of a tree, as one digest: each resource's
    identity, attributes and whether its create failed (a device leaves
    such a one out), in id order."""
    held = [
        [r.id, r.type, r.parent_id, r.attributes, _failed_create(r)] for r in sorted(rows, key=lambda r: r.id)
    ]
    return hashlib.sha256(json.dumps(held, sort_keys=True, default=str).encode()).hexdigest()


def settled_tree(session: orm.Session, root: ResourceRecord) -> tuple[Any, str] | None:
    """The tree of ``root`` as a standby applies it (as the active holds it,
    :func:`held_by_active`), and its digest; None while a change of it is
    in the works (the active has not applied it yet, and may refuse it)."""
    if queries.in_flight_tasks(session, root.id):
        return None
    rows = queries.tree(session, root.id)
    if any(str(r.provisioning_status).startswith("PENDING") for r in rows):
        return None
    held = held_by_active(rows)
    return msgspec.to_builtins(work.desired_tree(cast(list[ResourceRecord], held))), digest(held)


def in_step_of(session: orm.Session, root: ResourceRecord) -> bool:
    """Does ``root``'s standby hold its tree as it now stands?"""
    if not root.standby_agent_id or not root.standby_digest:
        return False
    settled = settled_tree(session, root)
    return settled is not None and settled[1] == root.standby_digest


def peer(agent: AgentRecord | None, provider: str) -> dict[str, Any] | None:
    """An agent as its peer's driver sees it."""
    if agent is None:
        return None
    address = (agent.addresses or {}).get(provider)
    return {"agent_id": agent.id, "host": agent.host, "address": address}


def view(session: orm.Session, root: ResourceRecord) -> dict[str, Any] | None:
    """The ``standby`` block of a root's API answer: only for one that wants
    a standby and is placed on hosts (a shared provider's is on no host)."""
    if not wanted(root) or root.agent_id is None:
        return None
    agent = agent_queries.get_agent(session, root.standby_agent_id) if root.standby_agent_id else None
    return {
        "agent_id": root.standby_agent_id,
        "host": agent.host if agent is not None else None,
        "in_step": in_step_of(session, root),
    }


def _failed_create(row: ResourceRecord | Row) -> bool:
    return row.provisioning_status == ProvisioningStatus.ERROR and not row.applied_generation
