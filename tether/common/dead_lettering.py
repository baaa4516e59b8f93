"""Dead-lettering: a consumer's unusable messages, copied to the dead-letter
queue with the reason, and acked once the broker has confirmed the copy."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tether.common import metrics
from tether.common.exceptions import MalformedMessage
from tether.common.publisher import Envelope, Publisher
from tether.common.transport import COMPRESSION, ORIGINAL_COMPRESSION, Broker

LOG = logging.getLogger(__name__)

_T = TypeVar("_T")


class DeadLetters:
    """Messages a consumer could not use, bound for the dead-letter queue.

    Consumer callbacks run inside ``drain_events``, which may itself be
    running inside :meth:`Publisher.publish`; publishing from there would
    nest one confirm window in another. So callbacks only :meth:`add`, and
    the connection loop calls :meth:`flush` from its tick: publish, confirm,
    then ack each original.

    A copy never carries a ``compression`` header: kombu raises while
    building a message whose compression it cannot undo, which would make the
    copy as unreadable as the original was. The body is stored as kombu
    handed it over: still as received when kombu failed to decompress it
    (the header's value is then kept in ``x-tether-original-compression``),
    already decompressed when it did not fail.
    """

    def __init__(self, broker: Broker, kind: str) -> None:
        self.broker = broker
        self.kind = kind
        self._pending: list[tuple[Any, str]] = []

    def add(self, message: Any, reason: str) -> None:
        LOG.error(
            "dead-lettering %s message %s: %s",
            self.kind,
            message.properties.get("message_id") or "(no id)",
            reason,
        )
        self._pending.append((message, reason))

    def read(self, message: Any, decode: Callable[[Any, str | None, str | None], _T]) -> _T | None:
        """``message`` decoded, or None once it is bound for the dead-letter queue
        with why: nothing a peer sends may stop the consumer."""
        try:
            return decode(
                message.body,
                getattr(message, "content_type", None),
                getattr(message, "content_encoding", None),
            )
        except MalformedMessage as exc:
            self.add(message, exc.msg)
        except Exception as exc:  # noqa: BLE001 - a decoder's bug is the message's dead end, not the loop's
            self.add(message, f"unreadable {self.kind} message: {type(exc).__name__}: {exc}")
        return None

    def flush(self, publisher: Publisher) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        publisher.publish([self.envelope(m, r) for m, r in batch])
        for message, _ in batch:
            message.ack()
        metrics.DEAD_LETTERS.labels(self.kind).inc(len(batch))

    def clear(self) -> None:
        self._pending.clear()

    def envelope(self, message: Any, reason: str) -> Envelope:
        """The dead-letter copy of ``message``, readable by any kombu client."""
        envelope = self.broker.dead_letter_envelope(message, reason)
        if COMPRESSION not in envelope.headers:
            return envelope
        headers = dict(envelope.headers)
        compression = headers.pop(COMPRESSION)
        if getattr(message, "errors", None):
            # kombu could not decompress: the body is what the broker delivered.
            headers[ORIGINAL_COMPRESSION] = _header_text(compression)
        return dataclasses.replace(envelope, headers=headers)


def _header_text(value: object) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return text[:1000]
