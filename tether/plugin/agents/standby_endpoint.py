"""The plugin's RPC API for active-standby pairs (API 1.8), served beside
:class:`tether.plugin.agents.endpoint.PluginEndpoint` on the same RPC server."""

from __future__ import annotations

from typing import Any

from sqlalchemy import orm

from tether.common import rpc
from tether.plugin.agents import endpoint_checks as checks
from tether.plugin.agents import standby_pairs
from tether.plugin.db import agent_queries

#: Most roots one call may say the agent holds.
MAX_HELD = 10_000


class StandbyEndpoint:
    """What agents may call about the roots they hold as active or standby_pairs."""

    target = rpc.endpoint_target()

    def __init__(self, sessionmaker: orm.sessionmaker[orm.Session]) -> None:
        self._sessionmaker = sessionmaker

    @checks.checked
    def standby_sync(self, ctxt: Any, agent_id: str, provider: str, held: dict[str, str]) -> dict[str, Any]:
        """The ``ACTIVE_STANDBY`` roots of ``provider`` the agent holds
        (API 1.8), after recording ``held``: by root id, the digest of the
        tree the agent holds as standby_pairs.

        :returns: ``{"roots": [{"id", "role", "peer", "digest", "tree"}]}``:
            ``role`` ``active`` or ``standby``; ``peer`` the other agent
            (``{"agent_id", "host", "address"}``) or None; for a standby,
            ``digest`` of the tree it should hold (None while a change of
            it is in the works: keep what is held) and ``tree``, the desired
            tree, given only when the agent does not hold that digest.
        """
        checks.identifier("standby_sync", "agent_id", agent_id)
        checks.identifier("standby_sync", "provider", provider)
        if (
            not isinstance(held, dict)
            or len(held) > MAX_HELD
            or not all(isinstance(k, str) and isinstance(v, str) and len(v) <= 64 for k, v in held.items())
        ):
            raise checks.bad(
                "standby_sync", "held", f"an object of at most {MAX_HELD} {{root id: digest}}", held
            )
        roots: list[dict[str, Any]] = []
        with self._sessionmaker.begin() as session:
            for root in agent_queries.bound_to(session, agent_id):
                if root.provider == provider and standby_pairs.wanted(root):
                    other = agent_queries.get_agent(session, root.standby_agent_id or "")
                    roots.append(
                        {"id": root.id, "role": "active", "peer": standby_pairs.peer(other, provider)}
                    )
            for root in standby_pairs.stood_by(session, agent_id):
                if root.provider != provider:
                    continue
                root.standby_digest = held.get(root.id)
                settled = standby_pairs.settled_tree(session, root)
                digest = settled[1] if settled else None
                other = agent_queries.get_agent(session, root.agent_id or "")
                roots.append(
                    {
                        "id": root.id,
                        "role": "standby",
                        "peer": standby_pairs.peer(other, provider),
                        "digest": digest,
                        "tree": settled[0] if settled and digest != held.get(root.id) else None,
                    }
                )
        return {"roots": roots}
