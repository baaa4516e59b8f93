"""The plugin's side of claims over kombu (see :mod:`tether.common.claims`).

Each tick of the claims and results loop (:mod:`tether.plugin.tasks.agent_traffic`)
takes every claims request already delivered, decides all their
claims in one transaction (:class:`~tether.plugin.tasks.claim_decider.ClaimDecider`),
publishes one reply per request to its ``reply_to`` and acks the requests.
Replies are neither persistent nor confirmed: a lost one costs the agent a
retry of the same claim, which is answered alike.

A request that cannot be read is dead-lettered with the reason; a request
that names no ``reply_to`` is too, as nobody could hear its answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import kombu
import msgspec
from oslo_config import cfg
from sqlalchemy import orm

from tether.common import claims, connection, dead_lettering, publisher, transport, wire
from tether.common.claims import Claim, ClaimAnswer
from tether.common.exceptions import MalformedMessage, ServiceUnavailable, TetherError
from tether.common.publisher import Publisher
from tether.plugin.tasks.claim_decider import ClaimDecider

LOG = logging.getLogger(__name__)

#: claims decided in a transaction, each with its request, its place in it and its answer
Decided = Sequence[tuple[tuple["Request", int, Claim], ClaimAnswer]]

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "claim_batch_size",
        default=64,
        min=1,
        help="Claims requests taken from the broker before deciding them in one transaction "
        "(the claim consumer's prefetch; each request carries up to 256 claims).",
    ),
]


class Request:
    """A delivered claims request: its message, its claims, and their answers."""

    def __init__(self, message: kombu.Message, raws: list[msgspec.Raw]) -> None:
        self.message = message
        self.claims: list[Claim | None] = []
        self.answers: list[ClaimAnswer | None] = []
        for index, raw in enumerate(raws):
            try:
                self.claims.append(wire.decode_claim(raw, index))
                self.answers.append(None)
            except MalformedMessage as exc:
                LOG.warning("refused a malformed claim: %s", exc.msg)
                self.claims.append(None)
                self.answers.append(ClaimAnswer(error_type="MalformedMessage", error_message=exc.msg))


class ClaimServer(connection.ConnectionLoop):
    """Consumes the claims queue and answers each request, in the steps
    :class:`~tether.plugin.tasks.agent_traffic.AgentTraffic` drives on the
    connection and, on SQLite, in the transaction it shares with the result
    consumer; it has no tick of its own.
    """

    def __init__(self, broker: transport.Broker, decider: ClaimDecider, batch: int) -> None:
        super().__init__(broker, "claim-server")
        self.decider = decider
        self.batch = batch
        self.burst = batch
        self._pending: list[Request] = []
        self._dead_letters = dead_lettering.DeadLetters(broker, "claims")
        self.consumer: kombu.Consumer | None = None
        self._replies: Any = None
        self._publisher: Publisher | None = None

    def on_connect(self, connection_: kombu.Connection) -> None:
        queue = self.broker.claims_queue()
        self.broker.declare(connection_, [queue])
        self._publisher = Publisher(connection_, self.broker.confirm_timeout)
        self._replies = connection_.channel()
        self.consumer = kombu.Consumer(
            connection_.channel(),
            queues=[queue],
            on_message=self._on_message,
            on_decode_error=self._on_undecodable,
            prefetch_count=self.batch,
        )
        self.consumer.consume()
        LOG.info("answering claims from %s on %s", queue.name, self.broker.url.masked)

    def on_disconnect(self) -> None:
        # Unacked requests come back to some consumer; the agents retry the rest.
        self._pending.clear()
        self._dead_letters.clear()
        self.consumer = self._replies = self._publisher = None

    def flush_dead_letters(self) -> None:
        assert self._publisher is not None
        self._dead_letters.flush(self._publisher)

    def take(self) -> list[Request]:
        """The requests delivered and not yet answered."""
        batch, self._pending = self._pending, []
        return batch

    def decide_alone(self, batch: list[Request], connection_: kombu.Connection | None = None) -> None:
        """Decide ``batch``'s claims in a transaction of their own, with the
        requests that arrive on ``connection_`` while it waits for the write turn."""
        wanted = _wanted(batch)

        def arrived() -> list[Claim]:
            if connection_ is None or not self.take_arrived(connection_):
                return []
            more = self.take()
            batch.extend(more)
            extra = _wanted(more)
            wanted.extend(extra)
            return [claim for _, _, claim in extra]

        try:
            answers = self.decider.decide([c for _, _, c in wanted], arrived)
        except ServiceUnavailable as exc:
            self.refuse(batch, exc)
            return
        except Exception as exc:
            # A bug, not an outage: asking again would meet it again. The
            # agents dead-letter the work; the reaper publishes it again.
            LOG.exception("deciding %d claim(s) failed", len(wanted))
            self.refuse(batch, exc)
            return
        _fill(zip(wanted, answers, strict=True))

    def decide_in(self, session: orm.Session, batch: list[Request]) -> Decided:
        """Decide ``batch``'s claims in ``session``'s transaction, which the
        caller commits before it gives them to :meth:`answer`."""
        wanted = _wanted(batch)
        return list(zip(wanted, self.decider.decide_in(session, [c for _, _, c in wanted]), strict=True))

    def refuse(self, batch: list[Request], exc: Exception) -> None:
        """Answer every claim of ``batch`` still undecided with ``exc``."""
        message = exc.msg if isinstance(exc, TetherError) else str(exc).strip()[:500]
        answer = ClaimAnswer(error_type=type(exc).__name__, error_message=message)
        _fill((claim, answer) for claim in _wanted(batch))

    def answer(self, batch: list[Request], decided: Decided = ()) -> None:
        """Send each request its answers (those ``decided`` in a transaction
        that has committed among them), and ack it."""
        assert self._replies is not None
        _fill(decided)
        for request in batch:
            properties = request.message.properties
            publisher.publish(
                self._replies,
                "",
                properties["reply_to"],
                claims.encode_reply([a for a in request.answers if a is not None]),
                {"delivery_mode": 1, "correlation_id": properties.get("correlation_id")},
            )
            request.message.ack()

    def _on_undecodable(self, message: kombu.Message, exc: Exception) -> None:
        self._dead_letters.add(message, wire.undecodable_reason("claims", message.headers, exc))

    def _on_message(self, message: kombu.Message) -> None:
        if not message.properties.get("reply_to"):
            self._dead_letters.add(
                message, "the claims request has no reply_to: its answer could not be sent"
            )
            return
        raws = self._dead_letters.read(message, wire.decode_claims)
        if raws is not None:
            self._pending.append(Request(message, list(raws)))


def _fill(decided: Iterable[tuple[tuple[Request, int, Claim], ClaimAnswer]]) -> None:
    for (request, index, _), answer in decided:
        request.answers[index] = answer


def _wanted(batch: list[Request]) -> list[tuple[Request, int, Claim]]:
    """The claims of ``batch`` still to decide, with their request and place in it."""
    return [
        (r, i, c) for r in batch for i, c in enumerate(r.claims) if c is not None and r.answers[i] is None
    ]
