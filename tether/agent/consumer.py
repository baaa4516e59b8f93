"""The agent's work consumer (DESIGN.md guarantees 3, 4 and 7).

The connection thread consumes with a prefetch bound and hands each message
to :class:`~tether.agent.held.HeldWork`, whose workers claim the task from
the plugin (the claims go out on the same connection, see
:mod:`tether.agent.claim_channel`) and call the driver. Finished work comes back to
the connection thread, woken for it, which publishes the results and only
then acks the work messages (:mod:`tether.agent.outgoing`). Drivers may block
without starving the connection's heartbeats; a call that overruns
``driver_timeout`` is answered with a retryable failure and its worker is
replaced (:mod:`tether.agent.watchdog`).
"""

from __future__ import annotations

import logging
import math
import time

import kombu

from tether.agent.acks import Acks
from tether.agent.claim_channel import ClaimChannel
from tether.agent.held import HeldWork
from tether.agent.outgoing import Outgoing
from tether.agent.runner import Runner
from tether.common import connection, dead_lettering, transport, wire
from tether.common.publisher import Publisher

LOG = logging.getLogger(__name__)


class WorkConsumer(connection.ConnectionLoop):
    """Consumes the work queues of the providers an agent serves."""

    tick = 0.01

    def __init__(
        self,
        broker: transport.Broker,
        runner: Runner,
        queue_keys: list[str],
        workers: int,
        prefetch: int,
        shutdown_timeout: float,
        operation_timeout: float = 3600.0,
        claims: ClaimChannel | None = None,
    ) -> None:
        super().__init__(broker, f"work-consumer-{runner.agent_id}")
        self.runner = runner
        self.queue_keys = queue_keys
        self.prefetch = prefetch
        # Every delivery already arrived, in one tick: their claims share a
        # request, their results a confirm window.
        self.burst = max(1, prefetch)
        self.claims = claims
        if claims is not None:
            claims.wake = self.wake
        self.shutdown_timeout = shutdown_timeout
        self.outgoing = Outgoing(broker, lambda: getattr(runner.plugin, "result_batches", False))
        self.held = HeldWork(runner, self.outgoing, workers, operation_timeout, self.stopping, self.wake)
        self._paused = False
        self._consuming = False
        # Bumped on every reconnect: a message can only be acked on the
        # connection that delivered it.
        self._epoch = 0
        self._consumer: kombu.Consumer | None = None
        self._publisher: Publisher | None = None
        self._dead_letters = dead_lettering.DeadLetters(broker, "work")
        self._acks = Acks(multiple=False)

    @property
    def in_flight(self) -> int:
        return self.held.count

    def pause(self, paused: bool) -> None:
        """Stop (or resume) taking new work; running calls carry on."""
        if paused != self._paused:
            LOG.warning(
                "agent %s %s",
                self.runner.agent_id,
                "disabled by an administrator: taking no new work"
                if paused
                else "enabled again: taking work",
            )
        self._paused = paused

    def on_connect(self, connection: kombu.Connection) -> None:
        queues = [self.broker.work_queue(k) for k in self.queue_keys]
        self.broker.declare(connection, [*queues, self.broker.results_queue()])
        self._publisher = Publisher(connection, self.broker.confirm_timeout)
        self._acks = Acks(multiple=connection.transport.driver_type == "amqp")
        # RabbitMQ applies the prefetch to each queue's consumer; share it out.
        per_queue = max(1, math.ceil(self.prefetch / len(queues)))
        self._consumer = kombu.Consumer(
            connection.channel(),
            queues=queues,
            on_message=self._on_message,
            on_decode_error=self._on_undecodable,
            prefetch_count=per_queue,
        )
        self._consuming = False
        if self.claims is not None:
            self.claims.on_connect(connection)
        self._follow_pause()
        LOG.info(
            "agent %s consuming %s on %s",
            self.runner.agent_id,
            ", ".join(q.name for q in queues),
            self.broker.url.masked,
        )

    def on_disconnect(self) -> None:
        self._epoch += 1
        self._consumer = None
        self._publisher = None
        self._dead_letters.clear()
        self._acks.clear()
        if self.claims is not None:
            self.claims.on_disconnect()

    def on_tick(self, connection: kombu.Connection) -> None:
        assert self._publisher is not None
        if self.claims is not None:
            self.claims.flush()
        self._follow_pause()
        self.held.expire_overdue()
        self.outgoing.flush(self._epoch, self._publisher, self._acks, self._dead_letters)

    def on_stop(self, connection: kombu.Connection) -> None:
        if self._consumer is not None and self._consuming:
            self._consumer.cancel()
            self._consuming = False
        self._paused = True
        deadline = time.monotonic() + self.shutdown_timeout
        while self.in_flight and time.monotonic() < deadline:
            self.on_tick(connection)
            time.sleep(0.05)
        self.on_tick(connection)
        if self.in_flight:
            LOG.warning(
                "stopping with %d task(s) unfinished; the broker hands them to another agent", self.in_flight
            )
        self.held.stop()

    def _follow_pause(self) -> None:
        if self._consumer is None or self._paused == (not self._consuming):
            return
        if self._paused:
            self._consumer.cancel()
        else:
            self._consumer.consume()
        self._consuming = not self._paused

    def _on_undecodable(self, message: kombu.Message, exc: Exception) -> None:
        # kombu failed before our callback, typically decompressing a body
        # whose `compression` header lies; without this hook it would raise
        # out of the connection loop and the message would come back forever.
        self._acks.delivered(message)
        self._dead_letters.add(message, wire.undecodable_reason("work", message.headers, exc))

    def _on_message(self, message: kombu.Message) -> None:
        self._acks.delivered(message)
        work = self._dead_letters.read(message, wire.decode_work)
        if work is None:
            return
        self.held.receive(work, (self._epoch, message), bool(message.delivery_info.get("redelivered")))
