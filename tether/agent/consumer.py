"""The agent's work consumer (DESIGN.md guarantee 3: no lost result).

The connection thread consumes with a prefetch bound and hands each message
to a bounded pool of worker threads, which call drivers. Finished work comes
back to the connection thread, which publishes the results (persistent,
confirmed) and only then acks the work messages. Drivers may block for as
long as they like without starving the connection's heartbeats.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time

import kombu

from tether.agent.runner import Runner
from tether.agent.workers import WorkerPool
from tether.common import messages, transport
from tether.common.exceptions import MalformedMessage

LOG = logging.getLogger(__name__)

_Delivery = tuple[int, kombu.Message]


class WorkConsumer(transport.ConnectionLoop):
    """Consumes the work queues of the providers an agent serves."""

    tick = 0.01

    def __init__(
        self,
        broker: transport.Broker,
        runner: Runner,
        providers: list[str],
        workers: int,
        prefetch: int,
        shutdown_timeout: float,
    ) -> None:
        super().__init__(broker, f"work-consumer-{runner.agent_id}")
        self.runner = runner
        self.providers = providers
        self.prefetch = prefetch
        self.shutdown_timeout = shutdown_timeout
        self._pool = WorkerPool(workers)
        self._done: queue.SimpleQueue[tuple[_Delivery, messages.Result]] = queue.SimpleQueue()
        # Bumped on every reconnect: a message can only be acked on the
        # connection that delivered it.
        self._epoch = 0
        # task id -> the deliveries waiting for the driver call running it. A
        # redelivery of a task still running here (after a reconnect) joins
        # the running call instead of starting a second one on the device.
        self._running: dict[str, list[_Delivery]] = {}
        self._lock = threading.Lock()
        self._consumer: kombu.Consumer | None = None
        self._publisher: transport.Publisher | None = None
        self._dead_letters = transport.DeadLetters(broker, "work")

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running)

    def on_connect(self, connection: kombu.Connection) -> None:
        queues = [self.broker.work_queue(p) for p in self.providers]
        self.broker.declare(connection, [*queues, self.broker.results_queue()])
        self._publisher = transport.Publisher(connection, self.broker.confirm_timeout)
        # RabbitMQ applies the prefetch to each queue's consumer; share it out.
        per_queue = max(1, math.ceil(self.prefetch / len(queues)))
        self._consumer = kombu.Consumer(
            connection.channel(), queues=queues, on_message=self._on_message, prefetch_count=per_queue
        )
        self._consumer.consume()
        LOG.info(
            "agent %s consuming %s on %s",
            self.runner.agent_id,
            ", ".join(q.name for q in queues),
            self.broker.url.masked,
        )

    def on_disconnect(self) -> None:
        with self._lock:
            self._epoch += 1
        self._consumer = None
        self._publisher = None
        self._dead_letters.clear()

    def on_tick(self, connection: kombu.Connection) -> None:
        assert self._publisher is not None
        self._dead_letters.flush(self._publisher)
        finished = []
        while True:
            try:
                (epoch, message), result = self._done.get_nowait()
            except queue.Empty:
                break
            if epoch == self._epoch:
                finished.append((message, result))
        if not finished:
            return
        self._publisher.publish(
            [
                transport.Envelope(
                    exchange=self.broker.results_exchange,
                    routing_key=transport.RESULTS_QUEUE,
                    body=messages.encode(result.to_body()),
                    message_id=f"{result.task_id}.{result.attempt}",
                    headers={"request_id": result.request_id} if result.request_id else {},
                )
                for _, result in finished
            ]
        )
        for message, _ in finished:
            message.ack()

    def on_stop(self, connection: kombu.Connection) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
        deadline = time.monotonic() + self.shutdown_timeout
        while self.in_flight and time.monotonic() < deadline:
            self.on_tick(connection)
            time.sleep(0.05)
        self.on_tick(connection)
        if self.in_flight:
            LOG.warning(
                "stopping with %d task(s) unfinished; the broker hands them to another agent", self.in_flight
            )
        self._pool.shutdown()

    def _on_message(self, message: kombu.Message) -> None:
        try:
            work = messages.decode_work(message.body)
        except MalformedMessage as exc:
            self._dead_letters.add(message, exc.msg)
            return
        except Exception as exc:  # noqa: BLE001 - nothing a peer sends may stop the consumer
            self._dead_letters.add(message, f"unreadable work message: {type(exc).__name__}: {exc}")
            return
        with self._lock:
            delivery = (self._epoch, message)
            waiting = self._running.get(work.task_id)
            if waiting is not None:
                LOG.info("task %s is already running here; its redelivery waits for that call", work.task_id)
                waiting.append(delivery)
                return
            self._running[work.task_id] = [delivery]
        redelivered = bool(message.delivery_info.get("redelivered"))
        self._pool.submit(self._work, work, redelivered)

    def _work(self, work: messages.Work, redelivered: bool) -> None:
        try:
            result = self.runner.run(work, redelivered)
        finally:
            with self._lock:
                deliveries = self._running.pop(work.task_id, [])
        for delivery in deliveries:
            self._done.put((delivery, result))
