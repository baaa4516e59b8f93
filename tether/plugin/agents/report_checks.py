"""What an agent's state report declares of each provider, checked before
the plugin stores it.

A malformed declaration is logged, once, and left out rather than refusing
the report: refusing it would leave the agent to be declared dead, and
stop its work, for a mistake in one driver's declaration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)

#: The warnings already given, so that each is given once, not every report.
_WARNED: set[tuple[str, ...]] = set()


def by_provider(
    agent_id: str, providers: list[str], declared: Any, normal: Callable[[Any], dict[str, Any]], what: str
) -> dict[str, Any]:
    """``declared`` (by provider) as the plugin stores it: those of the
    agent's ``providers`` only, each in the form ``normal`` gives it, which
    raises ValueError naming what is malformed."""
    if not isinstance(declared, dict):
        problem = f"{what} must be an object by provider, not {type(declared).__name__}"
        warn_malformed(agent_id, "*", problem, what)
        return {}
    kept = {}
    for provider, wire in declared.items():
        if provider not in providers:
            continue
        try:
            kept[provider] = normal(wire)
        except ValueError as exc:
            warn_malformed(agent_id, provider, str(exc), what)
    return kept


def warn_malformed(agent_id: str, provider: str, problem: str, what: str) -> None:
    warn_once(
        (agent_id, provider, problem),
        "agent %s reported malformed %s for %s, which count as none reported: %s",
        agent_id,
        what,
        provider,
        problem,
    )


def warn_once(key: tuple[str, ...], message: str, *args: object) -> None:
    if key in _WARNED:
        return
    if len(_WARNED) > 1000:
        _WARNED.clear()
    _WARNED.add(key)
    LOG.warning(message, *args)
