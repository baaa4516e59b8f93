"""What every agent's row says, read at most once a second per process.

The API judges and routes each request by what the agents reported; reading
their rows for every request would cost a query each, so each view keeps
its last reading for :attr:`FleetView.CACHE` seconds. The rows, not memory,
are the truth: every API process and replica reads the same, and a
restarted plugin remembers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

from sqlalchemy import orm

from tether.plugin.db import agent_queries
from tether.plugin.db.models import AgentRecord

if TYPE_CHECKING:
    from tether.plugin.agents.registry import AgentRegistry as AgentRegistry

T = TypeVar("T")


class FleetView(Generic[T]):
    """A value :meth:`_read` computes from all agents' rows, cached."""

    CACHE = 1.0

    def __init__(self, agents: AgentRegistry, reader: orm.sessionmaker[orm.Session] | None, empty: T) -> None:
        self.agents = agents
        self.reader = reader
        self._lock = threading.Lock()
        self._cache: tuple[float, T] = (-float("inf"), empty)

    def view(self, session: orm.Session | None = None) -> T:
        """The value as of at most :attr:`CACHE` seconds ago.

        :param session: the caller's, inside its transaction, or None to
            read with this plugin's reader.
        """
        with self._lock:
            stamp, value = self._cache
            if time.monotonic() - stamp <= self.CACHE:
                return value
        if session is not None:
            value = self._read(agent_queries.list_agents(session))
        else:
            assert self.reader is not None, "reading the agents' rows without a session needs a reader"
            with self.reader() as reading:
                value = self._read(agent_queries.list_agents(reading))
        with self._lock:
            self._cache = (time.monotonic(), value)
        return value

    def forget(self) -> None:
        """Read the rows again on the next question."""
        with self._lock:
            self._cache = (-float("inf"), self._cache[1])

    def _read(self, fleet: Sequence[AgentRecord]) -> T:
        raise NotImplementedError
