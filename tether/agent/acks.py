"""Acking work messages with as few frames as the order of their finishing allows.

A channel's delivery tags rise with each delivery, and ``basic.ack`` with
``multiple`` acks every unacked delivery up to a tag in one frame. Work
finishes out of order, though (drivers take their own time), and a tag acked
twice closes the channel. So :class:`Acks` knows every delivery of the
channel not yet acked, whoever acks it (the dead-lettering too), and acks
with one frame the finished deliveries below the oldest unfinished one,
each of the others on its own.

kombu's virtual transports (the in-memory one) ignore ``multiple`` and ack
the one tag: there every message is acked on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Acks:
    """The unacked deliveries of one consumer channel."""

    def __init__(self, multiple: bool = True) -> None:
        self._unacked: dict[int, Any] = {}
        self.multiple = multiple

    def delivered(self, message: Any) -> None:
        """Every delivery of the channel, from the consumer's callbacks."""
        self._unacked[message.delivery_tag] = message

    def ack(self, messages: Sequence[Any]) -> int:
        """Ack ``messages`` (delivered on this channel); the frames it took."""
        # Acked meanwhile by someone else (the dead-lettering): no longer in the way.
        for tag in [t for t, m in self._unacked.items() if m.acknowledged]:
            del self._unacked[tag]
        done = {m.delivery_tag: m for m in messages if not m.acknowledged}
        if not done:
            return 0
        waiting = [t for t in self._unacked if t not in done]
        oldest_waiting = min(waiting) if waiting else None
        below = sorted(t for t in done if oldest_waiting is None or t < oldest_waiting)
        frames = 0
        if self.multiple and len(below) > 1:
            done[below[-1]].ack(multiple=True)
            for tag in below:
                # kombu marks only the message it sent the ack for.
                done[tag]._state = "ACK"  # noqa: SLF001 - kombu has no public setter
            frames += 1
            below_set = set(below)
            rest = [m for t, m in done.items() if t not in below_set]
        else:
            rest = list(done.values())
        for message in rest:
            message.ack()
            frames += 1
        for tag in done:
            self._unacked.pop(tag, None)
        return frames

    def clear(self) -> None:
        """The channel is gone, and its deliveries with it."""
        self._unacked.clear()
