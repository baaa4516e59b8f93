"""The agent registry: who is alive, what each serves, how loaded it is.

Agents report their state every ``report_interval``; an agent whose last
report is older than ``agent_down_time`` is dead. The reaper turns that
conclusion into action (its tasks are retried elsewhere) and logs each
death and return once.

Silence means death only where the plugin could have heard the report. A
plugin that has just started, or whose broker connection was lost, hears
nobody: until it has listened for twice ``agent_down_time`` (time for agents
to reconnect too, and for a report lost in the outage to time out and go
again) it takes the agents
it last knew alive to be alive still, as a plugin that judged them by the
silence it could not hear would declare the whole fleet dead on every
broker restart, retry their running work and fail waiting tasks for want
of an agent.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from oslo_config import cfg
from sqlalchemy import orm

from tether.plugin.agents import provider_capabilities, providers
from tether.plugin.db import agent_queries
from tether.plugin.db.models import AgentRecord, utcnow

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.FloatOpt(
        "agent_down_time",
        default=6.0,
        min=1,
        help="Seconds without a state report after which an agent is declared dead and "
        "its running tasks are retried elsewhere. Keep it above twice the agents' "
        "report_interval.",
    ),
]


class AgentRegistry:
    """
    :param listening_since: ``time.monotonic()`` since when this plugin has
        been connected to the broker, or None while it is not; without it the
        plugin is taken to have always been listening.
    """

    def __init__(self, down_time: float, listening_since: Callable[[], float | None] | None = None) -> None:
        self.down_time = datetime.timedelta(seconds=down_time)
        #: seconds this plugin must have listened before an agent's silence counts
        self.hearing_time = 2 * down_time
        #: may be set after construction, by whatever hears the reports
        self.listening_since = listening_since

    def listened_long_enough(self) -> bool:
        """Whether an agent silent for ``agent_down_time`` is silent to this plugin too."""
        if self.listening_since is None:
            return True
        since = self.listening_since()
        return since is not None and time.monotonic() - since >= self.hearing_time

    def alive(self, agent: AgentRecord, now: datetime.datetime | None = None) -> bool:
        if agent.last_heartbeat >= (now or utcnow()) - self.down_time:
            return True
        return agent.alive and not self.listened_long_enough()

    def live_for(self, session: orm.Session, provider: str) -> list[AgentRecord]:
        """Live, enabled agents that serve ``provider``."""
        now = utcnow()
        return [
            a
            for a in agent_queries.list_agents(session)
            if a.admin_state_up and self.alive(a, now) and provider in (a.providers or [])
        ]

    def report(self, session: orm.Session, state: dict[str, Any]) -> AgentRecord:
        """Record one state report; the agent row as it now stands."""
        now = utcnow()
        agent = agent_queries.get_agent(session, state["agent_id"])
        started_at = datetime.datetime.fromisoformat(state["started_at"])
        if agent is None:
            agent = AgentRecord(
                id=state["agent_id"],
                admin_state_up=True,
                alive=True,
                started_at=started_at,
                last_heartbeat=now,
            )
            session.add(agent)
            LOG.info(
                "agent %s on host %s registered, serving %s",
                state["agent_id"],
                state["host"],
                ", ".join(state["providers"]),
            )
        elif not agent.alive or not self.alive(agent, now):
            LOG.info("agent %s on host %s is alive again", agent.id, state["host"])
        elif agent.started_at != started_at:
            LOG.info("agent %s on host %s restarted", agent.id, state["host"])
        agent.host = str(state["host"])[:255]
        agent.providers = [str(p) for p in state["providers"]]
        agent.version = str(state.get("version", "?"))[:64]
        agent.workers = int(state.get("workers", 0))
        agent.in_flight = int(state.get("in_flight", 0))
        agent.audits = [str(p) for p in state.get("audits") or []]
        agent.capabilities = provider_capabilities.reported(
            agent.id, agent.providers, state.get("capabilities")
        )
        # RPC API 1.9: each driver's placement and resource types.
        agent.drivers = providers.reported(agent.id, agent.providers, state.get("drivers"))
        # RPC API 1.8: where peers reach each provider's driver (an active-standby pair).
        agent.addresses = {str(p): str(a) for p, a in (state.get("addresses") or {}).items()} or None
        agent.started_at = started_at
        agent.last_heartbeat = now
        agent.alive = True
        return agent

    def declare_dead(self, session: orm.Session) -> Iterable[AgentRecord]:
        """Agents that have just been found dead."""
        if not self.listened_long_enough():
            return
        now = utcnow()
        for agent in agent_queries.newly_dead_agents(session, now - self.down_time):
            agent.alive = False
            silent = (now - agent.last_heartbeat).total_seconds()
            LOG.warning(
                "agent %s on host %s declared dead: no state report for %.0f s",
                agent.id,
                agent.host,
                silent,
            )
            yield agent
