"""``tether.dead-letter``, read and acted on: look at its messages, send
them back where they came from, delete them. ``tether-manage dead-letters``
and the plugin's ``/v1/dead-letters`` both work through this module.

Messages get there two ways, and everything here reads both:

* tether's own consumers publish a message they cannot read there, naming
  why, when and where it came from in ``x-tether-dead-letter-reason``,
  ``x-tether-dead-lettered-at``, ``x-tether-original-exchange`` and
  ``x-tether-original-routing-key``
  (:meth:`tether.common.transport.Broker.dead_letter_envelope`);
* RabbitMQ moves a message there from a quorum queue once it has been
  delivered more often than the queue's ``x-delivery-limit`` allows (a
  consumer that dies on it again and again), recording the queue, exchange,
  routing keys, time and reason in ``x-death``.

Messages are fetched as the broker holds them and read defensively
(:mod:`tether.common.dead_letter_reader`): one that cannot be read is
described as unreadable, with why, and does not stop the others. A message
an action does not select is never acked: the broker returns it, in its
place, when the action's channel closes.

Every function here blocks on the broker: the plugin's API calls them from
a worker thread. What stops one raises: :class:`ConfigError` for a
configuration the broker refuses, :class:`TransportError` for the broker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import kombu
import kombu.exceptions

from tether.common import transport
from tether.common.dead_letter_reader import DeadLetter, body_of, describe
from tether.common.exceptions import ConfigError, PublishNotConfirmed, TransportError
from tether.common.publisher import Envelope, Publisher, Unroutable

QUEUE = transport.DEAD_LETTER_QUEUE

#: Headers that describe a death rather than the message; a requeued message sheds them.
DEATH_HEADERS = frozenset(
    {
        transport.DEAD_LETTER_REASON,
        transport.DEAD_LETTERED_AT,
        transport.ORIGINAL_EXCHANGE,
        transport.ORIGINAL_ROUTING_KEY,
        "x-death",
        "x-first-death-reason",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-last-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        # Quorum queues stamp their delivery count on what they hand out; a
        # stale count would follow the message into its queue again.
        "x-delivery-count",
        # Not about a death, but tether never compresses: a body sent back
        # goes as it was stored, which kombu reads only without this header.
        transport.COMPRESSION,
        transport.ORIGINAL_COMPRESSION,
    }
)


@dataclasses.dataclass(frozen=True)
class Selection:
    """The dead letters an action takes: those with ``ids``, those whose
    reason is ``error``, or (neither given) every one."""

    ids: frozenset[str] = frozenset()
    error: str | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        if self.ids:
            return letter.message_id in self.ids
        return self.error is None or letter.reason == self.error


@dataclasses.dataclass
class RequeueReport:
    requeued: list[DeadLetter] = dataclasses.field(default_factory=list)
    #: Messages left in the dead-letter queue, each with why.
    left: list[tuple[DeadLetter, str]] = dataclasses.field(default_factory=list)
    #: ``ids`` no message had.
    missing: list[str] = dataclasses.field(default_factory=list)
    #: Why the run ended before looking at every message, if it did.
    stopped: str | None = None


@dataclasses.dataclass
class DiscardReport:
    discarded: list[DeadLetter] = dataclasses.field(default_factory=list)
    #: ``ids`` no message had.
    missing: list[str] = dataclasses.field(default_factory=list)


def peek(broker: transport.Broker, limit: int) -> tuple[int, list[DeadLetter]]:
    """The number of dead letters and the first ``limit`` of them, all left in place."""
    with _session(broker) as queue:
        total = queue.count()
        letters: list[DeadLetter] = []
        # Nothing is acked or rejected: a message rejected with requeue goes
        # back to the head, where the next basic.get would fetch it again.
        # Closing the channel (when the session ends) returns every held
        # message at once, in its original place.
        while len(letters) < limit:
            message = queue.get()
            if message is None:
                break
            letters.append(describe(message))
    return max(total, len(letters)), letters


def requeue(
    broker: transport.Broker,
    ids: Sequence[str] = (),
    limit: int | None = None,
    stop: threading.Event | None = None,
    error: str | None = None,
) -> RequeueReport:
    """Send dead letters back where they came from: all of them, those with
    ``ids``, or those whose reason is ``error``.

    Each one is published (persistent, confirmed) and only then acked from
    the dead-letter queue: a failure in between leaves a copy in both places,
    which is harmless because tasks are idempotent.
    """
    selected = Selection(frozenset(ids), error)
    found: set[str] = set()
    report = RequeueReport()
    with _session(broker) as queue:
        sender = _Republisher(queue.connection, broker.confirm_timeout)
        try:
            # Only the messages there at the start: one that dies again at
            # once comes back at the tail and must wait for the operator.
            for _ in range(queue.count()):
                if stop is not None and stop.is_set():
                    report.stopped = "interrupted"
                    break
                if limit is not None and len(report.requeued) >= limit:
                    break
                message = queue.get()
                if message is None:
                    break
                letter = describe(message)
                if not selected(letter):
                    continue  # unacked, so the broker returns it when the session ends
                found.add(letter.message_id)
                try:
                    problem = sender.send(letter, message)
                except PublishNotConfirmed as exc:
                    report.left.append((letter, exc.msg))
                    report.stopped = "the broker stopped confirming what it was sent"
                    break
                if problem:
                    report.left.append((letter, problem))
                    continue
                message.ack()
                report.requeued.append(letter)
        finally:
            sender.close()
    report.missing = sorted(selected.ids - found)
    return report


def purge(broker: transport.Broker) -> int:
    """Delete every ready message in the dead-letter queue; how many."""
    with _session(broker) as queue:
        return queue.purge()


def discard(broker: transport.Broker, ids: Sequence[str] = (), error: str | None = None) -> DiscardReport:
    """Delete the dead letters with ``ids``, or those whose reason is ``error``, for good."""
    selected = Selection(frozenset(ids), error)
    report = DiscardReport()
    with _session(broker) as queue:
        for _ in range(queue.count()):
            message = queue.get()
            if message is None:
                break
            letter = describe(message)
            if selected(letter):
                message.ack()
                report.discarded.append(letter)
    report.missing = sorted(selected.ids - {letter.message_id for letter in report.discarded})
    return report


class _Held:
    """The dead-letter queue on a channel of its own, and the messages
    fetched from it: those neither acked nor rejected go back when it ends."""

    def __init__(self, connection: Any, queue: Any) -> None:
        self.connection = connection
        self.queue = queue
        self._held: list[Any] = []

    def count(self) -> int:
        return int(self.queue.queue_declare(passive=True).message_count)

    def get(self) -> Any:
        """The next message, unacked, as kombu's ``Queue.get`` gives it but
        without raising what kombu met decoding it (left in ``errors``)."""
        raw = self.queue.channel.basic_get(queue=self.queue.name, no_ack=False)
        if raw is None:
            return None
        message = self.queue.channel.message_to_python(raw)
        self._held.append(message)
        return message

    def purge(self) -> int:
        return int(self.queue.purge() or 0)

    def give_back(self) -> None:
        # RabbitMQ returns a closed channel's unacked messages in their
        # places; kombu's in-memory transport drops them instead.
        if getattr(self.queue.channel, "do_restore", True):
            return
        for message in self._held:
            if not message.acknowledged:
                message.requeue()


@contextlib.contextmanager
def _session(broker: transport.Broker) -> Iterator[_Held]:
    """A connection and the declared dead-letter queue on a channel of its own."""
    connection = broker.connect()
    try:
        try:
            # One try per host of a failover list, without waiting between.
            connection.ensure_connection(max_retries=len(broker.url.kombu_urls) - 1)
        except (kombu.exceptions.OperationalError, *connection.connection_errors, OSError) as exc:
            raise TransportError(
                f"cannot reach the broker at {broker.url.masked}: {exc}; check [DEFAULT] transport_url"
            ) from exc
        try:
            broker.declare(connection, [])
        except connection.channel_errors as exc:
            raise ConfigError(
                reason=f"the broker at {broker.url.masked} refused to declare {QUEUE}: {exc}; "
                "[messaging] queue_type must be what the plugin and agents use"
            ) from exc
        held = _Held(connection, broker.dead_letter_queue().bind(connection.channel()))
        try:
            yield held
        finally:
            held.give_back()
    except (*connection.connection_errors, OSError) as exc:
        raise TransportError(f"lost the broker at {broker.url.masked}: {exc}") from exc
    finally:
        connection.release()


class _Republisher:
    """Sends dead letters back to their origin, each in a confirm window of its own.

    Slower than one window for all, but a refusal then names its message, and
    one that no queue takes does not hold back the others.
    """

    def __init__(self, connection: Any, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._publisher = Publisher(connection, timeout)

    def send(self, letter: DeadLetter, message: Any) -> str | None:
        """Why ``message`` was not sent back, or ``None`` once the broker confirmed it.

        :raises PublishNotConfirmed: when the broker did not confirm in time or refused.
        """
        if letter.origin is None:
            return "no header says where it came from; purge it or publish it by hand"
        exchange, routing_key = letter.origin
        try:
            self._publisher.publish([_envelope(letter.origin, letter, message)])
        except Unroutable:
            return (
                f"no queue is bound to exchange {exchange!r} with routing key {routing_key!r}; start "
                "what consumes it (an agent declares its provider's queue) and requeue again"
            )
        except self._connection.channel_errors as exc:
            # Most likely a 404 for an exchange deleted since: the broker
            # closed the publisher's channel, so open another for the rest.
            self._publisher.close()
            self._publisher = Publisher(self._connection, self._timeout)
            return f"the broker refused it: {exc}"
        return None

    def close(self) -> None:
        self._publisher.close()


def _envelope(origin: tuple[str, str], letter: DeadLetter, message: Any) -> Envelope:
    exchange, routing_key = origin
    headers = {k: v for k, v in (message.headers or {}).items() if k not in DEATH_HEADERS}
    return Envelope(
        exchange=kombu.Exchange(exchange),
        routing_key=routing_key,
        body=body_of(message),
        message_id=letter.message_id,
        headers=headers,
        type=message.properties.get("type"),
    )
