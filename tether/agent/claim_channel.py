"""The agent's side of claims over kombu (see :mod:`tether.common.claims`).

Workers hand their claims to :meth:`ClaimChannel.claim` and wait; the work
consumer's connection thread, which owns the channel, sends every claim
made since its last tick as one request (:meth:`flush`) and hands each
answer back to its worker when the reply arrives (:meth:`_on_reply`). A
claim is made once per task, so batching costs no wait: a worker's claim
goes out on the tick it wakes.

Requests and replies may be lost (a broker restart, a plugin that stopped
between taking a request and answering it): the worker's wait ends after
``timeout`` with :class:`ClaimTimeout`, and its caller claims again with
the same claim id.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import kombu

from tether.common import claims, publisher, transport, wire
from tether.common.claims import Claim, ClaimAnswer
from tether.common.exceptions import MalformedMessage, TetherError

LOG = logging.getLogger(__name__)


class ClaimTimeout(TetherError, TimeoutError):
    """No answer to a claim in time; claim again."""


class ClaimChannel:
    """Claims from worker threads, sent and answered on the connection thread."""

    def __init__(self, broker: transport.Broker, owner: str, timeout: float) -> None:
        self.broker = broker
        self.timeout = timeout
        #: run the connection thread's tick now (set by the work consumer)
        self.wake: Callable[[], None] = lambda: None
        # Unique per process: a restarted agent must not take its past life's replies.
        self._owner = f"{owner}.{uuid.uuid4().hex[:8]}"
        self._waiting: queue.SimpleQueue[_ReplySlot] = queue.SimpleQueue()
        # correlation id -> (monotonic time sent, the slots of that request)
        self._sent: dict[str, tuple[float, list[_ReplySlot]]] = {}
        self._channel: Any = None
        self._reply_to = ""
        self.connected = threading.Event()

    def claim(self, claim: Claim) -> ClaimAnswer:
        """Send ``claim`` with the next request; wait for its answer.

        :raises ClaimTimeout: no answer within ``timeout`` seconds.
        """
        slot = _ReplySlot(claim)
        self._waiting.put(slot)
        self.wake()
        if not slot.answered.wait(self.timeout):
            raise ClaimTimeout(f"no answer to the claim of task {claim.task_id} in {self.timeout:g} s")
        if slot.answer is None:
            raise ClaimTimeout(
                f"the broker connection closed before the claim of task {claim.task_id} was answered"
            )
        return slot.answer

    def on_connect(self, connection: kombu.Connection) -> None:
        """Declare the claims queue, listen for replies (connection thread)."""
        self.broker.declare(connection, [self.broker.claims_queue()])
        # Direct reply-to wants the request published on the channel that
        # consumes the replies.
        channel = connection.channel()
        replies = self.broker.reply_queue(self._owner)
        kombu.Consumer(channel, queues=[replies], on_message=self._on_reply, no_ack=True).consume()
        self._channel = channel
        self._reply_to = replies.name
        self.connected.set()

    def on_disconnect(self) -> None:
        """Replies to what was sent are gone with the channel: those workers
        claim again at once, rather than at the end of their wait."""
        self.connected.clear()
        self._channel = None
        for _, batch in self._sent.values():
            for slot in batch:
                slot.answered.set()
        self._sent.clear()

    def flush(self) -> None:
        """Send the claims made since the last tick, as one request (connection thread)."""
        if self._channel is None:
            return
        batch: list[_ReplySlot] = []
        while len(batch) < claims.MAX_CLAIMS:
            try:
                batch.append(self._waiting.get_nowait())
            except queue.Empty:
                break
        self._forget_unanswered()
        if not batch:
            return
        correlation_id = uuid.uuid4().hex
        self._sent[correlation_id] = (time.monotonic(), batch)
        publisher.publish(
            self._channel,
            self.broker.claims_exchange.name,
            transport.CLAIMS_QUEUE,
            claims.encode_request([slot.claim for slot in batch]),
            # Not persistent: an unanswered claim is claimed again.
            {"delivery_mode": 1, "reply_to": self._reply_to, "correlation_id": correlation_id},
        )
        if not self._waiting.empty():
            self.wake()

    def _forget_unanswered(self) -> None:
        # Their workers have given up and claimed again (or will).
        expired = time.monotonic() - 2 * self.timeout
        for correlation_id in [c for c, (sent, _) in self._sent.items() if sent < expired]:
            del self._sent[correlation_id]

    def _on_reply(self, message: kombu.Message) -> None:
        entry = self._sent.pop(message.properties.get("correlation_id") or "", None)
        if entry is None:
            LOG.debug("a claim reply nobody waits for (its claims were made again)")
            return
        _, batch = entry
        try:
            answers = wire.decode_claim_reply(message.body)
            if len(answers) != len(batch):
                raise MalformedMessage(reason=f"{len(answers)} answers to {len(batch)} claims")
        except MalformedMessage as exc:
            # The workers' waits run out and they claim again; an answer
            # cannot be made up.
            LOG.error("the plugin's claim reply cannot be read: %s", exc.msg)
            return
        for slot, answer in zip(batch, answers, strict=True):
            slot.answer = answer
            slot.answered.set()


class _ReplySlot:
    def __init__(self, claim: Claim) -> None:
        self.claim = claim
        self.answer: ClaimAnswer | None = None
        self.answered = threading.Event()
