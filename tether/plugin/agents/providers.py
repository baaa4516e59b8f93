"""The providers resources may name, and what their agents declared of them.

An operator lists the providers in ``[plugin] providers``; what each one is
(its placement, the resource types it serves) the plugin learns from the
state reports of the agents that serve it (:mod:`tether.common.declarations`),
kept in ``agents.drivers``, so that every API process and replica knows
alike and a restarted plugin remembers. The plugin loads no driver: a
vendor's package is installed on the agents' hosts only.

Which declaration counts: that of the live, enabled agent heard from last,
else that of any agent heard from last. Until an agent of a provider has
reported, its placement is unknown and:

* a change is accepted unchecked (its task's ``notes`` say so, see
  :mod:`tether.plugin.agents.provider_capabilities`);
* its task waits undispatched, as a host-placed one with no live agent
  does, and the reaper dispatches it once an agent has reported, or fails
  it naming the provider at its ``pending_timeout``. Publishing it to a
  guessed queue could strand it where no agent listens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import orm

from tether.common.declarations import Declaration
from tether.common.exceptions import InvalidInput
from tether.plugin.agents import report_checks
from tether.plugin.agents.fleet_view import FleetView
from tether.plugin.db.models import AgentRecord, utcnow

if TYPE_CHECKING:  # the registry stores reports with reported() below
    from tether.plugin.agents.registry import AgentRegistry as AgentRegistry

LOG = logging.getLogger(__name__)


class Providers(FleetView[dict[str, Declaration]]):
    """The configured providers with their declarations, read from the
    agents' rows at most every :attr:`CACHE` seconds."""

    def __init__(
        self,
        names: Iterable[str],
        agents: AgentRegistry,
        reader: orm.sessionmaker[orm.Session] | None = None,
    ) -> None:
        super().__init__(agents, reader, {})
        self.names = sorted(set(names))
        #: the disagreements already logged, so that each is logged once
        self._disagreements: set[tuple[str, frozenset[str]]] = set()
        self._assumed: dict[str, Declaration] = {}

    def assume(self, declared: Mapping[str, Any]) -> None:
        """What counts for each provider of ``declared`` (in the wire form)
        until an agent has declared it: tether-allinone's plugin knows its
        own agent's drivers before that agent's first report.

        :raises ValueError: naming a malformed declaration.
        """
        self._assumed |= {name: Declaration.from_wire(wire) for name, wire in declared.items()}
        self.forget()

    def declared(self, session: orm.Session | None = None) -> dict[str, Declaration]:
        """The declaration that counts, by provider; a provider no agent
        has declared (nor assumed) is absent.

        :param session: the caller's, inside its transaction, or None to
            read with this plugin's reader.
        """
        return self.view(session)

    def heard(self, drivers: Mapping[str, Any], session: orm.Session) -> None:
        """An agent has just reported ``drivers`` (as stored): read the
        agents' rows again on the next question if that changes anything, so
        that a provider declared for the first time is routed at once."""
        known = self.declared(session)
        if any(p not in known or known[p].to_wire() != wire for p, wire in drivers.items()):
            self.forget()

    def placement(self, name: str, session: orm.Session | None = None) -> str | None:
        """``host`` or ``shared``; None until an agent of ``name`` has reported."""
        declaration = self.declared(session).get(name)
        return None if declaration is None else declaration.placement

    def is_host_placed(self, name: str, session: orm.Session | None = None) -> bool:
        return self.placement(name, session) == "host"

    def is_shared(self, name: str, session: orm.Session | None = None) -> bool:
        """Whether tasks of ``name`` go to its one queue, whichever agents
        are alive: declared ``shared``. Others wait unpublished while no
        live agent can take them (host placement) or none has declared it."""
        return self.placement(name, session) == "shared"

    def check(self, name: str, resource_type: str) -> None:
        """A root resource may name ``name`` for a ``resource_type``.

        :raises InvalidInput: listing the configured providers, or the types
            the provider's driver serves.
        """
        if name not in self.names:
            raise InvalidInput(
                f"Provider {name!r} is not configured; configured providers: "
                f"{', '.join(self.names) or 'none'}.",
                path="$.provider",
            )
        declaration = self.declared().get(name)
        if declaration is not None and resource_type not in declaration.resource_types:
            raise InvalidInput(
                f"Provider {name!r} does not support {resource_type} resources "
                f"(it supports: {', '.join(sorted(declaration.resource_types))})."
            )

    def _read(self, fleet: Sequence[AgentRecord]) -> dict[str, Declaration]:
        now = utcnow()
        chosen: dict[str, tuple[tuple[bool, Any], Declaration]] = {}
        placements: dict[str, set[str]] = {}
        for agent in fleet:
            live = agent.admin_state_up and self.agents.alive(agent, now)
            for provider, stored in (agent.drivers or {}).items():
                try:
                    declaration = Declaration.from_wire(stored)
                except ValueError as exc:
                    # Checked when the agent reported it: a row written otherwise.
                    LOG.warning("agent %s: stored declaration of %s ignored: %s", agent.id, provider, exc)
                    continue
                if live:
                    placements.setdefault(provider, set()).add(declaration.placement)
                rank = (live, agent.last_heartbeat)
                if provider not in chosen or rank > chosen[provider][0]:
                    chosen[provider] = (rank, declaration)
        for provider, seen in placements.items():
            self._disagree(provider, seen, chosen[provider][1].placement)
        return self._assumed | {provider: declaration for provider, (_, declaration) in chosen.items()}

    def _disagree(self, provider: str, seen: set[str], counted: str) -> None:
        key = (provider, frozenset(seen))
        if len(seen) < 2 or key in self._disagreements:
            return
        self._disagreements.add(key)
        LOG.error(
            "live agents of provider %s declare different placements (%s): its tasks follow the "
            "agent heard from last (%s); serve one provider with one driver on every agent",
            provider,
            ", ".join(sorted(seen)),
            counted,
        )


def reported(agent_id: str, providers: list[str], declared: Any) -> dict[str, Any] | None:
    """The driver declarations of a state report as the plugin stores them,
    each checked (:func:`report_checks.by_provider`). None when the agent
    reports none (an older release), which is said once."""
    if declared is None:
        report_checks.warn_once(
            (agent_id, "drivers"),
            "agent %s declares no driver placement (it is of an older release): tasks of a provider "
            "no agent has declared wait undispatched; upgrade agents before plugins",
            agent_id,
        )
        return None
    return report_checks.by_provider(agent_id, providers, declared, _stored, "driver declarations")


def _stored(wire: Any) -> dict[str, Any]:
    return Declaration.from_wire(wire).to_wire()
