"""What a driver is told of the other host of an ``ACTIVE_STANDBY`` root.

The plugin binds such a root to two agents (:mod:`tether.plugin.agents.standby_pairs`):
the active runs its tasks; the standby holds the same tree, applied through
:meth:`tether.drivers.base.Driver.sync_standby`, ready to serve when the
active's host fails. Each side's driver is told of the other as a
:class:`Peer`, e.g. to exchange VRRP adverts with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Peer:
    """The agent on the other side of an active-standby pair.

    :ivar agent_id: its agent id.
    :ivar host: its host name.
    :ivar address: the address its driver of the same provider gave with
        :meth:`~tether.drivers.base.Driver.peer_address`; None when it gave none.
    """

    agent_id: str
    host: str
    address: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Peer | None:
        if not data:
            return None
        address = data.get("address")
        return cls(str(data["agent_id"]), str(data.get("host") or ""), str(address) if address else None)
