"""Finished work on its way out (DESIGN.md guarantee 3).

Workers hand over each answer with the delivery it answers; the connection
thread, woken for it, publishes the results (persistent, confirmed) and only
then acks their work messages, and dead-letters the messages the plugin
refused. A delivery of an earlier connection cannot be acked on this one:
its message went back to the queue, and the redelivery's run answers it.
"""

from __future__ import annotations

import queue
from collections.abc import Callable

import kombu

from tether.agent.acks import Acks
from tether.common import dead_lettering, messages, transport
from tether.common.publisher import Envelope, Publisher

#: A work message and the number of the connection that delivered it.
Delivery = tuple[int, kombu.Message]


class Outgoing:
    def __init__(self, broker: transport.Broker, batches: Callable[[], bool]) -> None:
        """:param batches: whether the plugin reads several results in one message."""
        self.broker = broker
        self._batches = batches
        # A result with the delivery it answers; None for a long operation's
        # (its message was acked when the device started), or for a skipped task's.
        self._done: queue.SimpleQueue[tuple[Delivery | None, messages.Result | None]] = queue.SimpleQueue()
        # Deliveries the plugin refused as naming no task it has, with why.
        self._refused: queue.SimpleQueue[tuple[Delivery, str]] = queue.SimpleQueue()

    def finished(self, delivery: Delivery | None, result: messages.Result | None) -> None:
        self._done.put((delivery, result))

    def refused(self, delivery: Delivery, reason: str) -> None:
        self._refused.put((delivery, reason))

    def flush(
        self, epoch: int, publisher: Publisher, acks: Acks, dead_letters: dead_lettering.DeadLetters
    ) -> None:
        """Publish and ack what was handed over, on connection number ``epoch``."""
        while True:
            try:
                (delivered_on, message), reason = self._refused.get_nowait()
            except queue.Empty:
                break
            if delivered_on == epoch:
                dead_letters.add(message, reason)
        dead_letters.flush(publisher)
        finished: list[tuple[kombu.Message | None, messages.Result | None]] = []
        while True:
            try:
                delivery, result = self._done.get_nowait()
            except queue.Empty:
                break
            if delivery is None:
                finished.append((None, result))
            elif delivery[0] == epoch:
                finished.append((delivery[1], result))
        if not finished:
            return
        unbound = [(None, r) for m, r in finished if m is None]
        # A skipped task (the plugin refused the claim) has no result: just ack.
        try:
            publisher.publish(self.envelopes([result for _, result in finished if result is not None]))
        except Exception:
            # Results of long operations have no message to be redelivered:
            # keep them for the next connection.
            for entry in unbound:
                self._done.put(entry)
            raise
        acks.ack([message for message, _ in finished if message is not None])

    def envelopes(self, results: list[messages.Result]) -> list[Envelope]:
        """The tick's results as messages: one for all of them where the
        plugin reads that, one each where it does not."""
        if len(results) > 1 and self._batches():
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
