"""Who polls a device's status: each root of a shared provider is polled by
one live agent.

Every agent of a shared provider reaches the same device, so every agent
polling ``Driver.status()`` of all of it would ask the device N times for
the same answer. Each root instead goes to one of the live, enabled agents
serving the provider, by rendezvous hashing: every agent scores every root
(a hash of both ids) and the highest score wins. Only the roots of an agent
that dies or joins move, each to the agent that scores next (a death) or to
the newcomer (a join); the rest stay where they were, so the other agents'
shares do not reshuffle. A driver whose ``status()`` takes no roots is
polled whole by one agent, the winner for the provider's own name.

Scoring costs about a microsecond per root and agent, so each plugin keeps
the owner of every root while the live agents of its provider stay the same.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence


def _score(agent_id: str, key: str) -> bytes:
    return hashlib.blake2b(f"{agent_id}\0{key}".encode(), digest_size=8).digest()


def owner(key: str, agents: Iterable[str]) -> str | None:
    """The agent that polls ``key`` (a root id, or a provider polled whole)."""
    return max(agents, key=lambda agent: _score(agent, key), default=None)


def assign(roots: Iterable[str], agents: Sequence[str]) -> dict[str, list[str]]:
    """Every agent's share of ``roots``, each root in exactly one share."""
    shares: dict[str, list[str]] = {agent: [] for agent in agents}
    for root in roots:
        chosen = owner(root, agents)
        if chosen is not None:
            shares[chosen].append(root)
    return shares


class RootShares:
    """The owner of each root of each provider, kept while its live agents stay the same."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: provider -> (its live agents, sorted; root -> owner)
        self._owners: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}

    def share(self, provider: str, roots: Iterable[str], agents: Iterable[str], agent_id: str) -> list[str]:
        """The roots of ``roots`` that ``agent_id`` polls, among ``agents``."""
        live = tuple(sorted(set(agents)))
        if agent_id not in live:
            return []
        with self._lock:
            kept = self._owners.get(provider)
        known = kept[1] if kept is not None and kept[0] == live else {}
        owners: dict[str, str] = {}
        for root in roots:
            found = known.get(root)
            owners[root] = found if found is not None else owner(root, live) or agent_id
        with self._lock:
            # Only the roots asked about now: deleted ones are forgotten.
            self._owners[provider] = (live, owners)
        return sorted(root for root, agent in owners.items() if agent == agent_id)
