"""What agents send the plugin on their way through a task: claims and results,
taken on one connection by one thread and, on SQLite, written in one
transaction a tick.

:class:`~tether.plugin.tasks.claim_server.ClaimServer` and
:class:`~tether.plugin.tasks.results.ResultConsumer` each ran a thread and a
connection of their own, and each tick a transaction of its own. At moderate
load their ticks seldom found more than a few messages, so every claim and
every result paid most of a transaction (the write turn, ``BEGIN``,
``COMMIT``, the log's sync) and the two threads' wake-ups. Here both consume
on one connection; each tick records the results and decides the claims
that have arrived, and those that arrive while it waits for the write turn,
then answers the claims and acks the results.

Results go first: when a redelivered task's claim and the result of the
attempt it would replace arrive together, the task is finished and the
claim answered so, rather than the task run again. A transaction that fails
for a reason other than the database's absence is tried again as two, each
with its own handling of what it cannot write, so that a bug in one never
holds up the other.

On SQLite a write transaction holds the whole database, so sharing one
costs nothing in concurrency. Where rows are locked one by one (PostgreSQL)
a shared transaction would hold the results' trees while it waited for the
claimed tasks, an order no other writer keeps, so there each tick runs the
two transactions one after the other, as the two loops did.
"""

from __future__ import annotations

import logging

import kombu
from sqlalchemy import orm

from tether.common import connection, messages, transport
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.tasks.claim_decider import unavailable
from tether.plugin.tasks.claim_server import ClaimServer, Request
from tether.plugin.tasks.results import ResultConsumer

LOG = logging.getLogger(__name__)


class AgentTraffic(connection.ConnectionLoop):
    """Runs a claim server and a result consumer on one connection and thread."""

    def __init__(
        self,
        broker: transport.Broker,
        sessionmaker: orm.sessionmaker[orm.Session],
        claims: ClaimServer,
        results: ResultConsumer,
        shared: bool,
    ) -> None:
        """:param shared: whether a tick writes claims and results in one
        transaction (a database whose writers take turns, SQLite)."""
        super().__init__(broker, "agent-traffic")
        self.sessionmaker = sessionmaker
        self.shared = shared
        self.claims = claims
        self.results = results
        self.burst = claims.burst + results.burst

    def on_connect(self, connection_: kombu.Connection) -> None:
        self.claims.on_connect(connection_)
        self.results.on_connect(connection_)

    def on_disconnect(self) -> None:
        self.claims.on_disconnect()
        self.results.on_disconnect()

    def on_stop(self, connection_: kombu.Connection) -> None:
        # Both stop taking, then what arrived is answered and recorded.
        for consumer in (self.claims.consumer, self.results.consumer):
            if consumer is not None:
                consumer.cancel()
        self.results.stop_waiting()
        self.on_tick(connection_)

    def on_tick(self, connection_: kombu.Connection) -> None:
        self.claims.flush_dead_letters()
        self.results.flush_dead_letters()
        claims, results = self.claims.take(), self.results.take()
        if not claims and not results:
            return
        if not self.shared:
            self._apart(claims, results, connection_)
            return
        try:
            with self.sessionmaker.begin() as session:
                session.connection()  # the write turn; what came meanwhile rides along
                if self.take_arrived(connection_):
                    claims.extend(self.claims.take())
                    results.extend(self.results.take())
                unknown = self.results.recorder.record_in(session, [r for _, r in results])
                decided = self.claims.decide_in(session, claims)
        except DatabaseUnavailable as exc:
            # The whole database: apart, both would meet it again.
            if claims:
                self.claims.refuse(claims, unavailable(exc))
                self.claims.answer(claims)
            if results:
                self.results.retry_later(results, exc)
            return
        except Exception:
            LOG.exception(
                "recording %d result(s) and deciding %d claims request(s) together failed; each apart",
                len(results),
                len(claims),
            )
            self._apart(claims, results)
            return
        if results:
            self.results.settle(results, unknown)
        self.claims.answer(claims, decided)

    def _apart(
        self,
        claims: list[Request],
        results: list[tuple[kombu.Message, messages.Result]],
        connection_: kombu.Connection | None = None,
    ) -> None:
        """Results, then claims, each in a transaction of its own."""
        if results:
            self.results.record_alone(results, connection_)
        if claims:
            self.claims.decide_alone(claims, connection_)
            self.claims.answer(claims)
