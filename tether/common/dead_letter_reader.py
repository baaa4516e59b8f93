"""One dead-lettered message, read defensively: its reason, where it came
from, when it died, its task and the start of its body, whoever
dead-lettered it and whatever it holds (see
:mod:`tether.common.dead_letter_queue`)."""

from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Callable
from typing import Any, TypeVar

from tether.common import transport, wire

#: Characters of a body shown by ``dead-letters list``, as a preview.
PREVIEW_CHARS = 200


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """What an operator needs to know about one dead-lettered message."""

    message_id: str
    reason: str
    #: ``(exchange, routing key)`` to send it back to; ``None`` when no header says.
    origin: tuple[str, str] | None
    task_id: str | None
    size: int
    #: The start of the body, printable, at most :data:`PREVIEW_CHARS` characters.
    preview: str = ""
    #: Why the message could not be read as it should, if it could not.
    unreadable: str | None = None
    #: The queue it was taken from, when known.
    queue: str | None = None
    #: When it was first dead-lettered (ISO 8601), when known.
    dead_at: str | None = None

    def as_dict(self) -> dict[str, Any]:
        exchange, routing_key = self.origin or (None, None)
        return {
            "message_id": self.message_id,
            "reason": self.reason,
            "exchange": exchange,
            "routing_key": routing_key,
            "task_id": self.task_id,
            "size": self.size,
            "preview": self.preview,
            "unreadable": self.unreadable,
            "queue": self.queue,
            "dead_at": self.dead_at,
        }


def describe(message: Any) -> DeadLetter:
    """Read a dead-lettered message's reason and origin, whoever dead-lettered it.

    Never raises: what cannot be read is named in :attr:`DeadLetter.unreadable`.
    """
    try:
        letter = _describe(message)
    except Exception as exc:  # noqa: BLE001 - one odd message must not hide the rest
        why = f"{type(exc).__name__}: {exc}"
        return DeadLetter(
            message_id=_text(_safely(lambda: message.properties.get("message_id"))),
            reason=f"unreadable: {why}",
            origin=None,
            task_id=None,
            size=_safely(lambda: len(body_of(message))) or 0,
            preview=_safely(lambda: _preview(body_of(message))) or "",
            unreadable=why,
        )
    errors = getattr(message, "errors", None)
    if errors:
        # kombu recorded why it could not decode the body (it raises that
        # from Queue.get); the body here is the one the broker holds.
        error = errors[0][1]
        compression = (message.headers or {}).get(transport.COMPRESSION)
        hint = f" (its 'compression' header says {_text(compression)!r})" if compression else ""
        why = f"kombu cannot decode its body{hint}: {type(error).__name__}: {error}"
        letter = dataclasses.replace(letter, unreadable=why)
    return letter


def _describe(message: Any) -> DeadLetter:
    headers = dict(message.headers or {})
    body = body_of(message)
    deaths = headers.get("x-death")
    if transport.DEAD_LETTER_REASON in headers:
        # Checked first: our own requeue strips both kinds of header, so a
        # message only carries both if something else republished it.
        reason = _text(headers[transport.DEAD_LETTER_REASON])
        origin = _origin(
            headers.get(transport.ORIGINAL_EXCHANGE), headers.get(transport.ORIGINAL_ROUTING_KEY)
        )
        queue = transport.queue_of(*origin) if origin else None
        dead_at = _time(headers.get(transport.DEAD_LETTERED_AT))
    elif isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]  # RabbitMQ puts the latest death first
        keys = death.get("routing-keys")
        keys = keys if isinstance(keys, list) else []
        queue = _text(death.get("queue")) or None
        reason = f"RabbitMQ: {_text(death.get('reason'))} in queue {_text(queue)}"
        origin = _origin(death.get("exchange"), keys[0] if keys else None)
        first = deaths[-1]
        dead_at = _time(first.get("time") if isinstance(first, dict) else None)
    elif "x-first-death-reason" in headers:
        queue = _text(headers.get("x-first-death-queue")) or None
        reason = f"RabbitMQ: {_text(headers['x-first-death-reason'])} in queue {_text(queue)}"
        # Without x-death the routing key is lost, but the queue is known, and
        # the default exchange routes a queue's own name straight to it.
        origin = _origin("", queue)
        dead_at = None
    else:
        reason, origin, queue, dead_at = "unknown: no dead-letter header", None, None, None
    return DeadLetter(
        queue=queue,
        dead_at=dead_at,
        message_id=str(message.properties.get("message_id") or ""),
        reason=reason,
        origin=origin,
        task_id=_task_id(body),
        size=len(body),
        preview=_preview(body),
    )


def body_of(message: Any) -> bytes:
    body = message.body
    if isinstance(body, bytes):
        return body
    # py-amqp decodes a body that names its content encoding; undo it.
    return str(body).encode(message.content_encoding or "utf-8")


def _origin(exchange: object, routing_key: object) -> tuple[str, str] | None:
    if exchange is None or routing_key is None:
        return None
    origin = (_text(exchange), _text(routing_key))
    # Sending a message back to the dead-letter exchange would only move it in a circle.
    if origin == ("", "") or origin[0] == transport.DEAD_LETTER_EXCHANGE:
        return None
    return origin


def _task_id(body: bytes) -> str | None:
    if len(body) > wire.MAX_BODY_BYTES:
        return None  # no consumer read it either
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    task = data.get("task")
    if isinstance(task, dict) and isinstance(task.get("id"), str):
        return str(task["id"])
    task_id = data.get("task_id")
    return task_id if isinstance(task_id, str) else None


def _time(value: object) -> str | None:
    """A death's time as ISO 8601 UTC: an AMQP timestamp arrives as a
    ``datetime`` (py-amqp) or seconds; tether's own header as text."""
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return moment.isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.datetime.fromtimestamp(value, datetime.UTC).isoformat()
        except (OverflowError, OSError, ValueError):
            return None
    text = _text(value)[:64]
    return printable(text) or None


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return "" if value is None else str(value)


def _preview(body: bytes) -> str:
    """The start of ``body`` as printable text: whatever its size, a bounded read."""
    head = body[: PREVIEW_CHARS * 4]  # no character takes more than 4 bytes in UTF-8
    text = printable(head.decode("utf-8", "backslashreplace"))
    if len(text) > PREVIEW_CHARS or len(head) < len(body):
        return text[: PREVIEW_CHARS - 1] + "…"
    return text


def printable(text: str) -> str:
    """``text`` with control characters escaped: nothing a publisher chose
    reaches the operator's terminal as a control sequence."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_T = TypeVar("_T")


def _safely(read: Callable[[], _T]) -> _T | None:
    try:
        return read()
    except Exception:  # noqa: BLE001 - best effort for an unreadable message
        return None
