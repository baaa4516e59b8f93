"""The agent's work consumer (DESIGN.md guarantees 3, 4 and 7).

The connection thread consumes with a prefetch bound and hands each message
to a bounded pool of worker threads, which claim the task from the plugin
(the claims go out on the same connection, see :mod:`tether.agent.claims`)
and call the driver. Finished work comes back to the connection thread,
woken for it, which publishes the results (persistent, confirmed) and only
then acks the work messages. Drivers may block without starving the connection's
heartbeats; a call that overruns ``driver_timeout`` is answered with a
retryable failure and its worker is replaced.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import kombu

from tether.agent.acks import Acks
from tether.agent.claims import ClaimChannel
from tether.agent.plugin_api import ClaimFailed, Stopping
from tether.agent.runner import Pending, Runner
from tether.agent.scheduler import Scheduler
from tether.agent.workers import WorkerPool
from tether.common import connection, dead_lettering, messages, transport, wire
from tether.common.publisher import Envelope, Publisher

LOG = logging.getLogger(__name__)

_Delivery = tuple[int, kombu.Message]


@dataclasses.dataclass
class _Call:
    """A driver call in progress, for the watchdog."""

    work: messages.Work
    attempt: int
    thread: str
    started: float
    started_at: str
    timed_out: bool = False


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
        self._pool = WorkerPool(workers)
        self._done: queue.SimpleQueue[tuple[_Delivery | None, messages.Result | None]] = queue.SimpleQueue()
        # Deliveries the plugin refused as naming no task it has, with why.
        self._refused: queue.SimpleQueue[tuple[_Delivery, str]] = queue.SimpleQueue()
        self.operation_timeout = operation_timeout
        # Long device operations whose work message is acked, polled from here.
        self._long: dict[str, Pending] = {}
        self._scheduler = Scheduler()
        self._calls: dict[str, _Call] = {}
        self._paused = False
        self._consuming = False
        # Bumped on every reconnect: a message can only be acked on the
        # connection that delivered it.
        self._epoch = 0
        # task id -> the deliveries waiting for the driver call running it. A
        # redelivery of a task still running here (after a reconnect) joins
        # the running call instead of starting a second one on the device.
        self._running: dict[str, list[_Delivery]] = {}
        self._lock = threading.Lock()
        self._consumer: kombu.Consumer | None = None
        self._publisher: Publisher | None = None
        self._dead_letters = dead_lettering.DeadLetters(broker, "work")
        self._acks = Acks(multiple=False)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._running) + len(self._long)

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
        with self._lock:
            self._epoch += 1
        self._consumer = None
        self._publisher = None
        self._dead_letters.clear()
        self._acks.clear()
        if self.claims is not None:
            self.claims.on_disconnect()

    def _follow_pause(self) -> None:
        if self._consumer is None or self._paused == (not self._consuming):
            return
        if self._paused:
            self._consumer.cancel()
        else:
            self._consumer.consume()
        self._consuming = not self._paused

    def _watchdog(self) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            for task_id, call in self._calls.items():
                if not call.timed_out and now - call.started > self.runner.driver_timeout:
                    call.timed_out = True
                    expired.append((call, self._running.pop(task_id, [])))
        for call, deliveries in expired:
            result = self.runner.timed_out(call.work, call.attempt, call.started_at)
            self._deliver(call.work.task_id, deliveries, result)
            self._pool.replace(call.thread)

    def on_tick(self, connection: kombu.Connection) -> None:
        assert self._publisher is not None
        if self.claims is not None:
            self.claims.flush()
        self._follow_pause()
        self._watchdog()
        while True:
            try:
                (epoch, message), reason = self._refused.get_nowait()
            except queue.Empty:
                break
            if epoch == self._epoch:
                self._dead_letters.add(message, reason)
        self._dead_letters.flush(self._publisher)
        finished: list[tuple[kombu.Message | None, messages.Result | None]] = []
        while True:
            try:
                delivery, result = self._done.get_nowait()
            except queue.Empty:
                break
            if delivery is None:
                finished.append((None, result))  # a long operation's result: its message is acked
            elif delivery[0] == self._epoch:
                finished.append((delivery[1], result))
        if not finished:
            return
        unbound = [(None, r) for m, r in finished if m is None]
        # A skipped task (the plugin refused the claim) has no result: just ack.
        try:
            self._publisher.publish(self._envelopes([result for _, result in finished if result is not None]))
        except Exception:
            # Results of long operations have no message to be redelivered:
            # keep them for the next connection.
            for entry in unbound:
                self._done.put(entry)
            raise
        self._acks.ack([message for message, _ in finished if message is not None])

    def _envelopes(self, results: list[messages.Result]) -> list[Envelope]:
        """The tick's results as messages: one for all of them where the
        plugin reads that, one each where it does not."""
        if len(results) > 1 and getattr(self.runner.plugin, "result_batches", False):
            # One persistent message instead of one per result: the broker's
            # work, the confirms and the plugin's reading shrink with it.
            most = messages.MAX_RESULTS
            chunks = [results[i : i + most] for i in range(0, len(results), most)]
            return [
                Envelope(
                    exchange=self.broker.results_exchange,
                    routing_key=transport.RESULTS_QUEUE,
                    body=messages.encode(messages.Results(results=chunk)),
                    # The first result's id and how many follow it, for the log and the dead letters.
                    message_id=f"{chunk[0].task_id}.{chunk[0].attempt}+{len(chunk) - 1}",
                    type=messages.RESULTS_TYPE,
                )
                for chunk in chunks
            ]
        return [
            Envelope(
                exchange=self.broker.results_exchange,
                routing_key=transport.RESULTS_QUEUE,
                body=messages.encode(result),
                message_id=f"{result.task_id}.{result.attempt}",
                headers={"request_id": result.request_id} if result.request_id else {},
            )
            for result in results
        ]

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
        self._pool.shutdown()
        self._scheduler.stop()

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
            claim = self.runner.claim(work, redelivered, self.stopping)
        except Stopping:
            with self._lock:
                self._running.pop(work.task_id, None)
            return  # unacked: the broker hands the message to another agent
        except ClaimFailed as exc:
            # Dead-lettered like work for an unknown task: held here, the
            # message would only get the same answer again.
            self._refuse(work.task_id, _claim_failed_reason(exc))
            return
        if not claim.get("run"):
            if claim.get("unknown"):
                self._refuse(work.task_id, _unknown_task_reason(work, claim))
            else:
                self._answer(work.task_id, None)
            return
        attempt = int(claim["attempt"])
        most = claim.get("max_attempts")
        self._step(work, attempt, messages.now(), lambda: self.runner.apply(work, attempt, most))

    def _poll(self, pending: Pending) -> None:
        if time.monotonic() - pending.started > self.operation_timeout:
            self._answer(pending.task_id, self.runner.operation_timed_out(pending, self.operation_timeout))
            return
        self._step(pending.work, pending.attempt, pending.started_at, lambda: self.runner.poll(pending))

    def _step(
        self,
        work: messages.Work,
        attempt: int,
        started_at: str,
        call_driver: Callable[[], messages.Result | Pending],
    ) -> None:
        call = _Call(work, attempt, threading.current_thread().name, time.monotonic(), started_at)
        with self._lock:
            self._calls[work.task_id] = call
        try:
            outcome = call_driver()
        finally:
            with self._lock:
                self._calls.pop(work.task_id, None)
        if call.timed_out:
            return  # answered by the watchdog; this late outcome is void
        if isinstance(outcome, Pending):
            self._go_long(outcome)
        else:
            self._answer(work.task_id, outcome)

    def _go_long(self, pending: Pending) -> None:
        """The device works on: ack the message (the broker would take it back
        after its consumer_timeout), free the worker, poll later."""
        current = self.runner.report_progress(pending)
        with self._lock:
            deliveries = self._running.pop(pending.task_id, [])
            if current:
                self._long[pending.task_id] = pending
        for delivery in deliveries:
            self._done.put((delivery, None))
        if current:
            self._scheduler.call_later(pending.operation.poll_after, self._pool.submit, self._poll, pending)

    def _refuse(self, task_id: str, reason: str) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
        for delivery in deliveries:
            self._refused.put((delivery, reason))
        self.wake()

    def _answer(self, task_id: str, result: messages.Result | None) -> None:
        with self._lock:
            deliveries = self._running.pop(task_id, [])
        self._deliver(task_id, deliveries, result)

    def _deliver(self, task_id: str, deliveries: list[_Delivery], result: messages.Result | None) -> None:
        with self._lock:
            long_running = self._long.pop(task_id, None) is not None
        for delivery in deliveries:
            self._done.put((delivery, result))
        if long_running and not deliveries and result is not None:
            self._done.put((None, result))
        self.wake()


def _unknown_task_reason(work: messages.Work, claim: dict[str, Any]) -> str:
    return (
        f"the plugin has no task {work.task_id!r} ({claim.get('reason')}); the work message "
        "was not published by this deployment's plugin"
    )


def _claim_failed_reason(exc: ClaimFailed) -> str:
    return (
        f"{exc.msg}; dead-lettered rather than claimed again and again (the plugin's reaper "
        "publishes the task again, or fails it, once its deadline passes)"
    )
