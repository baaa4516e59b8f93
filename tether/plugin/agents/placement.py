"""Host placement: which agent's host holds a root resource.

A provider whose driver declares ``placement = "host"`` (its device lives on
the agent's host, like a local HAProxy) has each root resource bound to one
agent: the least loaded (fewest roots bound) live, enabled agent serving the
provider, chosen when the root's first change is dispatched. Its tasks go to
that agent's own queue, ``tether.work.<provider>.<agent id>``. When the bound
agent is dead at dispatch time, the root is bound anew. A ``shared``
provider's tasks go to its one queue, taken by any of its agents.

A root of topology ``ACTIVE_STANDBY`` is bound to a standby agent too, on
another host when one exists (:mod:`tether.plugin.agents.standby_pairs`).
"""

from __future__ import annotations

import collections
import logging

import sqlalchemy as sa
from sqlalchemy import orm

from tether.plugin.agents import standby_pairs
from tether.plugin.agents.providers import Providers
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.db import agent_queries, queries
from tether.plugin.db.models import ResourceRecord, Task

LOG = logging.getLogger(__name__)


class Placement:
    def __init__(self, providers: Providers, agents: AgentRegistry) -> None:
        self.providers = providers
        self.agents = agents

    def route(self, session: orm.Session, task: Task) -> str | None:
        """The routing key of ``task``'s work message, binding its root if needed.

        None when no live agent can take it, or no agent has declared the
        provider's placement yet: the task waits, undispatched, for the
        reaper to dispatch it once an agent appears, or to fail it naming
        the provider at its deadline.
        """
        placement = self.providers.placement(task.provider, session)
        if placement is None:
            LOG.debug("task %s waits: no agent of %s has declared its placement", task.id, task.provider)
            return None
        if placement == "shared":
            return task.provider
        root = queries.get_resource(session, task.root_id, None)
        if root is None:
            return task.provider
        agent = self.bound_agent(session, root) or self.bind(session, root)
        if agent:
            standby_pairs.ensure(session, root, self.agents)
        return f"{task.provider}.{agent}" if agent else None

    def bound_agent(self, session: orm.Session, root: ResourceRecord) -> str | None:
        if root.agent_id is None:
            return None
        agent = agent_queries.get_agent(session, root.agent_id)
        if agent is not None and agent.admin_state_up and self.agents.alive(agent):
            return root.agent_id
        return None

    def bind(self, session: orm.Session, root: ResourceRecord, exclude: str | None = None) -> str | None:
        live = [
            a.id
            for a in self.agents.live_for(session, root.provider)
            if a.id != exclude and (not standby_pairs.wanted(root) or standby_pairs.able(a, root))
        ]
        if not live:
            return None
        load = collections.Counter(
            session.scalars(sa.select(ResourceRecord.agent_id).where(ResourceRecord.agent_id.in_(live))).all()
        )
        chosen = min(live, key=lambda a: (load[a], a))
        previous, root.agent_id = root.agent_id, chosen
        LOG.info(
            "%s %s of provider %s bound to agent %s%s",
            root.type,
            root.id,
            root.provider,
            chosen,
            f" (was {previous})" if previous else "",
        )
        return chosen
