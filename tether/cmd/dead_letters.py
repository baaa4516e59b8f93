"""``tether-manage dead-letters``: look at, requeue and purge ``tether.dead-letter``.

Messages get there two ways, and every command here reads both:

* tether's own consumers publish a message they cannot read there, naming
  why and where it came from in ``x-tether-dead-letter-reason``,
  ``x-tether-original-exchange`` and ``x-tether-original-routing-key``
  (:meth:`tether.common.transport.Broker.dead_letter_envelope`);
* RabbitMQ moves a message there from a quorum queue once it has been
  delivered more often than the queue's ``x-delivery-limit`` allows (a
  consumer that dies on it again and again), recording the queue, exchange,
  routing keys and reason in ``x-death``.

Messages are fetched as the broker holds them and read defensively: one
whose body kombu cannot decode (a ``compression`` header it cannot undo) or
whose headers are not what they should be is listed as unreadable, with
why, and does not stop the others from being listed. Bodies are shown as a
bounded preview, whatever their size.

The ``*_command`` functions print for people and return the exit code: 0
when everything asked was done, 1 when something could not be done. What
stops a command raises instead: :class:`ConfigError` for a configuration the
broker refuses, :class:`TetherError` (:class:`TransportError` for the broker)
for the rest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import kombu
import kombu.exceptions

from tether.cmd.dead_letter_reader import DeadLetter, body_of, describe, printable
from tether.common import transport
from tether.common.exceptions import ConfigError, PublishNotConfirmed, TetherError, TransportError
from tether.common.publisher import Envelope, Publisher, Unroutable

QUEUE = transport.DEAD_LETTER_QUEUE
FORMATS = ("table", "json")

#: Headers that describe a death rather than the message; a requeued message sheds them.
DEATH_HEADERS = frozenset(
    {
        transport.DEAD_LETTER_REASON,
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

_REASON_WIDTH = 60
#: Characters of a body shown in the table.
PREVIEW_WIDTH = 40


@dataclasses.dataclass
class RequeueReport:
    requeued: list[DeadLetter] = dataclasses.field(default_factory=list)
    #: Messages left in the dead-letter queue, each with why.
    left: list[tuple[DeadLetter, str]] = dataclasses.field(default_factory=list)
    #: ``--id`` values no message had.
    missing: list[str] = dataclasses.field(default_factory=list)
    #: Why the run ended before looking at every message, if it did.
    stopped: str | None = None


def peek(broker: transport.Broker, limit: int) -> tuple[int, list[DeadLetter]]:
    """The number of dead letters and the first ``limit`` of them, all left in place."""
    with _session(broker) as (_connection, queue):
        total = _count(queue)
        letters: list[DeadLetter] = []
        # Nothing is acked or rejected: a message rejected with requeue goes
        # back to the head, where the next basic.get would fetch it again.
        # Closing the channel (when the session ends) returns every held
        # message at once, in its original place.
        while len(letters) < limit:
            message = _get(queue)
            if message is None:
                break
            letters.append(describe(message))
    return max(total, len(letters)), letters


def requeue(
    broker: transport.Broker,
    ids: Sequence[str] = (),
    limit: int | None = None,
    stop: threading.Event | None = None,
) -> RequeueReport:
    """Send dead letters back where they came from; all of them, or those with ``ids``.

    Each one is published (persistent, confirmed) and only then acked from
    the dead-letter queue: a failure in between leaves a copy in both places,
    which is harmless because tasks are idempotent.
    """
    wanted = set(ids)
    found: set[str] = set()
    report = RequeueReport()
    with _session(broker) as (connection, queue):
        sender = _Republisher(connection, broker.confirm_timeout)
        try:
            # Only the messages there at the start: one that dies again at
            # once comes back at the tail and must wait for the operator.
            for _ in range(_count(queue)):
                if stop is not None and stop.is_set():
                    report.stopped = "interrupted"
                    break
                if limit is not None and len(report.requeued) >= limit:
                    break
                message = _get(queue)
                if message is None:
                    break
                letter = describe(message)
                if wanted and letter.message_id not in wanted:
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
    report.missing = sorted(wanted - found)
    return report


def purge(broker: transport.Broker) -> int:
    """Delete every ready message in the dead-letter queue; how many."""
    with _session(broker) as (_connection, queue):
        return int(queue.purge() or 0)


# -- the commands as tether-manage runs them ------------------------------


def list_command(broker: transport.Broker, limit: int, fmt: str = "table") -> int:
    total, letters = peek(broker, limit)
    summary = sys.stdout
    if fmt == "json":
        for position, letter in enumerate(letters, 1):
            print(json.dumps({"position": position, **letter.as_dict()}))
        # So that standard output stays pure JSON lines for jq and friends.
        summary = sys.stderr
    elif letters:
        print(format_table(letters))
        for position, letter in enumerate(letters, 1):
            if letter.unreadable:
                print(printable(f"#{position} {_name(letter)} is unreadable: {letter.unreadable}"))
    if not total:
        print(f"{QUEUE} is empty.", file=summary)
    elif len(letters) < total:
        print(f"{total} message(s) in {QUEUE}; listed the first {len(letters)} (see --limit).", file=summary)
    else:
        print(f"{total} message(s) in {QUEUE}.", file=summary)
    return 0


def requeue_command(
    broker: transport.Broker,
    ids: Sequence[str] = (),
    limit: int | None = None,
    stop: threading.Event | None = None,
) -> int:
    report = requeue(broker, ids, limit, stop)
    print(f"requeued {len(report.requeued)} message(s) from {QUEUE}.")
    for letter in report.requeued:
        print(f"  {_name(letter)} → {_origin_text(letter.origin)}")
    if report.left:
        print(f"left {len(report.left)} message(s) in {QUEUE}:")
        for letter, why in report.left:
            print(f"  {_name(letter)}: {why}")
    if report.missing:
        print(f"no message in {QUEUE} has the id: {', '.join(report.missing)}")
    if report.stopped:
        print(f"stopped before the end ({report.stopped}); run the command again for the rest.")
    return 1 if report.left or report.missing or report.stopped else 0


def purge_command(broker: transport.Broker, yes: bool) -> int:
    """:raises TetherError: without ``yes``, before touching the broker."""
    if not yes:
        raise TetherError(
            f"purge deletes every message in {QUEUE} for good; add --yes to do it "
            "(see them first with `dead-letters list`)."
        )
    print(f"purged {purge(broker)} message(s) from {QUEUE}.")
    return 0


def format_table(letters: Sequence[DeadLetter]) -> str:
    header = ("#", "MESSAGE ID", "REASON", "EXCHANGE → ROUTING KEY", "TASK ID", "SIZE", "BODY")
    rows = [header] + [
        (
            str(position),
            printable(_name(letter)),
            _clip(printable(" ".join(letter.reason.split())), _REASON_WIDTH),
            printable(_origin_text(letter.origin)),
            printable(letter.task_id or "-"),
            str(letter.size),
            _clip(letter.preview, PREVIEW_WIDTH) or "-",
        )
        for position, letter in enumerate(letters, 1)
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


# -- internals -------------------------------------------------------------


@contextlib.contextmanager
def _session(broker: transport.Broker) -> Iterator[tuple[Any, Any]]:
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
        yield connection, broker.dead_letter_queue().bind(connection.channel())
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


def _count(queue: Any) -> int:
    return int(queue.queue_declare(passive=True).message_count)


def _get(queue: Any) -> Any:
    """The next message, unacked, as kombu's ``Queue.get`` gives it but
    without raising what kombu met decoding it (left in ``errors``)."""
    raw = queue.channel.basic_get(queue=queue.name, no_ack=False)
    if raw is None:
        return None
    return queue.channel.message_to_python(raw)


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


def _name(letter: DeadLetter) -> str:
    return letter.message_id or "(no id)"


def _origin_text(origin: tuple[str, str] | None) -> str:
    if origin is None:
        return "unknown"
    exchange, routing_key = origin
    return f"{exchange or '(default)'} → {routing_key}"


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
