"""Validation before acceptance: refuse a change no live driver of its
provider can carry out, before anything is written.

Agents report what each provider's driver supports with their state reports
(:mod:`tether.common.capabilities`); the plugin keeps each agent's latest in
``agents.capabilities``, so that every API process and replica judges alike
and a restarted plugin remembers. A create or update is judged against:

* the declarations of the provider's live, enabled agents: the change is
  accepted when any one of them takes it, so that during an upgrade that
  mixes driver versions nothing is refused that a live agent could apply;
* when none of those has reported, the declaration of the agent heard from
  last: a provider whose agents are all down for a moment still refuses
  what they will refuse when back;
* when no agent of the provider has ever reported (agents of a release that
  reports none), nothing: the change is accepted unchecked and its task's
  ``notes`` say so. The driver judges it when it applies it.

Agents that report no declaration (an older release) do not count. A
refusal is :class:`UnsupportedByProvider` (400) naming the resource type,
the attribute, the value and what is supported, with the body's ``path``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import orm

from tether.common.capabilities import Capabilities
from tether.common.exceptions import InvalidInput
from tether.common.resource_types import ResourceType
from tether.plugin.agents import report_checks
from tether.plugin.agents.fleet_view import FleetView
from tether.plugin.db import queries
from tether.plugin.db.models import AgentRecord, ResourceRecord, utcnow

if TYPE_CHECKING:  # the registry records reports with reported() below
    from tether.plugin.agents.registry import AgentRegistry as AgentRegistry

LOG = logging.getLogger(__name__)

#: In the notes of a task accepted without a check.
UNCHECKED = (
    "Accepted unchecked: no agent of provider {provider} has reported what its driver supports "
    "yet, so its driver judges this change when it applies it."
)


class UnsupportedByProvider(InvalidInput):
    """A change the provider's drivers declared they cannot carry out."""


class ProviderCapabilities(FleetView[dict[str, tuple[Capabilities, ...]]]):
    """What counts for each provider, read from the agents' rows at most
    every :attr:`CACHE` seconds: a burst of requests costs one query."""

    def __init__(self, agents: AgentRegistry, reader: orm.sessionmaker[orm.Session] | None = None) -> None:
        super().__init__(agents, reader, {})
        #: parsed declarations by their stored form: agents report the same one every few seconds
        self._parsed: dict[str, Capabilities] = {}

    def judge(
        self,
        session: orm.Session | None,
        provider: str,
        rtype: ResourceType,
        attributes: Mapping[str, Any],
        parent: ResourceRecord | None = None,
    ) -> list[str]:
        """Refuse the desired ``attributes`` of a ``rtype`` of ``provider``
        when no declaration that counts takes them.

        :param session: the caller's, or None to read with this plugin's reader.
        :param parent: a new child's parent, whose children of ``rtype`` are
            counted (with the new one) when a declaration limits them.
        :returns: notes for the task: why nothing was checked, if it was not.
        :raises UnsupportedByProvider: naming what is not supported.
        """
        declarations = self.declared(session).get(provider)
        if declarations is None:
            return [UNCHECKED.format(provider=provider)]
        counted: list[int] = []

        def count() -> int:
            if not counted:
                assert session is not None and parent is not None
                counted.append(queries.count_children(session, parent.id, rtype.name) + 1)
            return counted[0]

        where = None if parent is None else (parent.type, parent.id)
        defaults = rtype.defaults()
        refusals = []
        for declared in declarations:
            refusal = declared.judge(rtype.name, attributes, defaults, where, count)
            if refusal is None:
                return []
            refusals.append(refusal)
        # Refused by all: say what the widest of them supports, when it refuses too.
        widest = Capabilities.widest(declarations).judge(rtype.name, attributes, defaults, where, count)
        refusal = widest or refusals[0]
        raise UnsupportedByProvider(refusal.message(provider), path=refusal.path)

    def declared(self, session: orm.Session | None = None) -> dict[str, tuple[Capabilities, ...]]:
        """The distinct declarations that count, by provider; a provider
        that no agent ever reported a declaration for is absent."""
        return self.view(session)

    def _read(self, fleet: Sequence[AgentRecord]) -> dict[str, tuple[Capabilities, ...]]:
        now = utcnow()
        live: dict[str, list[Capabilities]] = {}
        latest: dict[str, tuple[Any, Capabilities]] = {}
        for agent in fleet:
            alive = agent.admin_state_up and self.agents.alive(agent, now)
            for provider, stored in (agent.capabilities or {}).items():
                declared = self._parse(agent, provider, stored)
                if declared is None:
                    continue
                if alive and declared not in live.setdefault(provider, []):
                    live[provider].append(declared)
                if provider not in latest or agent.last_heartbeat > latest[provider][0]:
                    latest[provider] = (agent.last_heartbeat, declared)
        return {provider: tuple(live.get(provider) or [newest]) for provider, (_, newest) in latest.items()}

    def _parse(self, agent: AgentRecord, provider: str, stored: Any) -> Capabilities | None:
        key = repr(stored)
        parsed = self._parsed.get(key)
        if parsed is None:
            try:
                parsed = Capabilities.from_wire(stored)
            except ValueError as exc:
                # Checked when the agent reported it: a row written otherwise.
                LOG.warning("agent %s: ignoring the capabilities stored for %s: %s", agent.id, provider, exc)
                return None
            if len(self._parsed) > 1000:
                self._parsed.clear()
            self._parsed[key] = parsed
        return parsed


def reported(agent_id: str, providers: list[str], declared: Any) -> dict[str, Any] | None:
    """The declarations of a state report as the plugin stores them, each
    checked (:func:`report_checks.by_provider`). None when the agent reports
    none (an older release)."""
    if declared is None:
        return None
    return report_checks.by_provider(
        agent_id, providers, declared, lambda wire: Capabilities.from_wire(wire).to_wire(), "capabilities"
    )
