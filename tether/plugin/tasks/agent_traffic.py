"""What agents send the plugin on their way through a task: claims and results,
taken on one connection by one thread and written in one transaction a tick.

:class:`~tether.plugin.tasks.claim_server.ClaimServer` and
:class:`~tether.plugin.tasks.results.ResultConsumer` each ran a thread and a
connection of their own, and each tick a transaction of its own. At moderate
load their ticks seldom found more than a few messages, so every claim and
every result paid most of a transaction (the write turn, ``BEGIN``,
``COMMIT``, the log's sync) and the two threads' wake-ups. Here both consume
on one connection; each tick decides the claims and records the results that
have arrived, and those that arrive while it waits for the write turn, in one
transaction, then answers the claims and acks the results.

Claims are decided before results are recorded: a claim and a result of the
same task in one tick are written as two transactions in that order would
be, the fencing by attempt deciding alike. Where rows are locked, the tick
locks the results' trees and then all its tasks first, in the order every
other transaction takes them. A transaction that fails for a
reason other than the database's absence is tried again as two, each with
its own handling of what it cannot write, so that a bug in one never holds
up the other.
"""

from __future__ import annotations

import logging

import kombu
from sqlalchemy import orm

from tether.common import connection, messages, transport
from tether.plugin.db import attempts, queries
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
    ) -> None:
        super().__init__(broker, "agent-traffic")
        self.sessionmaker = sessionmaker
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
        try:
            with self.sessionmaker.begin() as session:
                session.connection()  # the write turn; what came meanwhile rides along
                if self.take_arrived(connection_):
                    claims.extend(self.claims.take())
                    results.extend(self.results.take())
                _lock(session, claims, [r for _, r in results])
                decided = self.claims.decide_in(session, claims)
                unknown = self.results.recorder.record_in(session, [r for _, r in results])
        except DatabaseUnavailable as exc:
            self.claims.refuse(claims, unavailable(exc))
            self.claims.answer(claims)
            if results:
                self.results.retry_later(results, exc)
            return
        except Exception:
            LOG.exception(
                "deciding %d claims request(s) and recording %d result(s) together failed; each apart",
                len(claims),
                len(results),
            )
            self.claims.decide_alone(claims)
            self.claims.answer(claims)
            if results:
                self.results.record_alone(results)
            return
        self.claims.answer(claims, decided)
        self.results.settle(results, unknown)


def _lock(session: orm.Session, claims: list[Request], results: list[messages.Result]) -> None:
    """Where rows are locked (PostgreSQL), take the tick's locks in the order
    every transaction takes them, trees first and then tasks by id: claims
    then results would lock some tasks before the results' trees, and two
    sorted sets one after the other are not one sorted set."""
    if queries.one_writer(session):
        return
    queries.lock_trees_of_tasks(session, [r.task_id for r in results])
    claimed = [claim.task_id for request in claims for claim in request.claims if claim is not None]
    attempts.lock_tasks(session, [*claimed, *(r.task_id for r in results)])
