"""Keeping the standby copies of ``ACTIVE_STANDBY`` roots in step, the
agent's side (the plugin's is :mod:`tether.plugin.agents.standby_pairs`).

Every ``[agent] standby_interval`` the agent asks the plugin, for each
host-placed driver that can be a standby (it implements
:meth:`~tether.drivers.base.Driver.sync_standby`), which such roots it holds
and as what. A tree it stands by for that it does not hold as it now stands
is applied with ``sync_standby``; a root it is active for whose peer changed
(or that it has just been promoted to) is told with ``sync_active``. It then
says which trees it holds, as digests, so that the API shows whether the
standby is in step. No task is involved: the tasks of a root go to its
active agent only.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from typing import Any

from tether.agent.plugin_api import PluginApi
from tether.common import rpc
from tether.common.periodic import Periodic
from tether.drivers.base import Driver, Peer, Resource

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)


class StandbyKeeper(Periodic):
    """Keeps one agent's active-standby roots as the plugin says they are."""

    name = "standby-sync"
    outages = rpc.RECOVERABLE

    def __init__(
        self, drivers: Mapping[str, Driver], plugin: PluginApi, agent_id: str, interval: float
    ) -> None:
        super().__init__(interval)
        self.drivers = {n: d for n, d in drivers.items() if d.placement == "host" and keeps_standby(d)}
        self.plugin = plugin
        self.agent_id = agent_id
        #: by (provider, root): the digest of the tree held as standby
        self._held: dict[tuple[str, str], str] = {}
        #: by (provider, root): the tree held as standby, as the plugin gave it
        self._trees: dict[tuple[str, str], dict[str, Any]] = {}
        #: by (provider, root): the role and peer the driver was last told of
        self._told: dict[tuple[str, str], tuple[str, Peer | None]] = {}
        self._unsupported = False
        #: by (provider, root): the last failure of the driver, logged once
        self._failed: dict[tuple[str, str], str] = {}

    def start(self) -> None:
        if self.drivers:
            super().start()

    def tick(self) -> object:
        return self.sync()

    def sync(self) -> dict[str, int]:
        """One pass over every driver; how many standby trees each applied."""
        return {name: self._sync(name, driver) for name, driver in self.drivers.items()}

    def _sync(self, name: str, driver: Driver) -> int:
        answer = self._ask(name)
        if answer is None:
            return 0
        applied = self._apply(name, driver, answer.get("roots") or [])
        if applied:
            self._ask(name)  # says at once what it holds now
        return applied

    def _ask(self, name: str) -> dict[str, Any] | None:
        held = {root: digest for (provider, root), digest in self._held.items() if provider == name}
        try:
            answer: dict[str, Any] = self.plugin.standby_sync(self.agent_id, name, held)
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type != "UnsupportedVersion":
                raise
            if not self._unsupported:
                LOG.warning("the plugin keeps no standbys yet (upgrade it); holding none")
            self._unsupported = True
            return None
        self._unsupported = False
        return answer

    def _apply(self, name: str, driver: Driver, roots: list[dict[str, Any]]) -> int:
        applied = 0
        seen = set()
        for entry in roots:
            key = (name, str(entry["id"]))
            seen.add(key)
            peer = Peer.from_dict(entry.get("peer"))
            role = str(entry.get("role"))
            if role == "active":
                self._held.pop(key, None)
                if self._told.get(key) != (role, peer):
                    self._call(driver.sync_active, key, role, peer, key[1], peer)
                continue
            tree, digest = entry.get("tree"), entry.get("digest")
            if tree is None and self._told.get(key) != (role, peer) and key in self._held:
                tree, digest = self._trees.get(key), self._held[key]  # the same tree, a new peer
            if tree is None or digest is None:
                continue  # held as it stands, or a change of it is in the works
            if self._call(driver.sync_standby, key, role, peer, Resource.from_dict(tree), peer):
                self._held[key], self._trees[key] = str(digest), tree
                applied += 1
        for key in [k for k in [*self._held, *self._told] if k[0] == name and k not in seen]:
            # No longer this host's: converge removes the device's copy.
            self._held.pop(key, None)
            self._told.pop(key, None)
            self._trees.pop(key, None)
        return applied

    def _call(self, method: Any, key: tuple[str, str], role: str, peer: Peer | None, *args: Any) -> bool:
        try:
            method(*args)
        except Exception as exc:  # noqa: BLE001 - a driver's failure, whatever it is, is logged
            # Forget what it was told: the next pass tries again.
            self._told.pop(key, None)
            self._held.pop(key, None)
            self._trees.pop(key, None)
            said = f"{type(exc).__name__}: {exc}"
            # Once per failure, not every pass: the same tree fails the same way until it changes.
            log = LOG.debug if self._failed.get(key) == said else LOG.error
            self._failed[key] = said
            log(
                "%s %s as %s of root %s failed (trying again each pass): %s",
                key[0],
                method.__name__,
                role,
                key[1],
                said,
            )
            return False
        self._failed.pop(key, None)
        if self._told.get(key) != (role, peer):
            LOG.info(
                "%s holds root %s as %s%s",
                key[0],
                key[1],
                role,
                f" with peer {peer.agent_id} ({peer.address or 'no address'})" if peer else " without a peer",
            )
        self._told[key] = (role, peer)
        return True


def keeps_standby(driver: Driver) -> bool:
    """Does ``driver`` implement :meth:`Driver.sync_standby`?"""
    return type(driver).sync_standby is not Driver.sync_standby
