"""Confirmed publishing: a window of persistent messages, one wait for the
broker's confirms.

A publisher belongs to its connection's thread (see
:mod:`tether.common.connection`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import Any

import kombu

from tether.common.exceptions import PublishNotConfirmed

LOG = logging.getLogger(__name__)


class Unroutable(PublishNotConfirmed):
    message = "The broker routed {count} message(s) to no queue: {reason}"


@dataclasses.dataclass(frozen=True)
class Envelope:
    """One message to publish."""

    exchange: kombu.Exchange
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: the AMQP ``type`` property, for a consumer that reads more than one kind
    type: str | None = None


def publish(
    channel: Any,
    exchange: str,
    routing_key: str,
    body: bytes,
    properties: dict[str, Any],
    headers: dict[str, Any] | None = None,
    mandatory: bool = False,
) -> None:
    """One JSON message, by the channel's own publish: kombu's Producer would
    serialise, compress and declare nothing here, at a third of the cost."""
    message = channel.prepare_message(body, 0, "application/json", "utf-8", headers, properties)
    channel.basic_publish(message, exchange=exchange, routing_key=routing_key, mandatory=mandatory)


class Publisher:
    """Publishes persistent messages and waits for the broker's confirms.

    py-amqp has no asynchronous confirm API, and waiting for each confirm in
    turn costs several times more than waiting once per window, so
    :meth:`publish` sends a whole window and then waits for every delivery tag
    in it. Anything not confirmed makes the whole call fail; the caller
    publishes the window again (consumers treat duplicates as harmless).
    """

    def __init__(self, connection: kombu.Connection, timeout: float) -> None:
        self._connection = connection
        self._timeout = timeout
        self._confirms = connection.transport.driver_type == "amqp"
        self._channel = connection.channel()
        self._channel.events["basic_return"].add(self._on_return)
        self._next_tag = 1
        self._outstanding: set[int] = set()
        self._nacked: set[int] = set()
        self._returned: list[str] = []
        self._publishing = False
        if self._confirms:
            self._channel.confirm_select()
            self._channel.events["basic_ack"].add(self._on_ack)
            self._channel.events["basic_nack"].add(self._on_nack)

    def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish every envelope; return once the broker confirmed them all.

        :raises PublishNotConfirmed: when one was refused or not confirmed in time.
        """
        if not envelopes:
            return
        if self._publishing:
            raise RuntimeError("Publisher.publish is not re-entrant; publish from the connection loop's tick")
        self._publishing = True
        try:
            self._publish(envelopes)
        finally:
            self._publishing = False

    def _publish(self, envelopes: Sequence[Envelope]) -> None:
        self._outstanding.clear()
        self._nacked.clear()
        self._returned.clear()
        channel = self._channel
        for envelope in envelopes:
            properties = {"delivery_mode": 2, "message_id": envelope.message_id}
            if envelope.type is not None:
                properties["type"] = envelope.type
            publish(
                channel,
                envelope.exchange.name,
                envelope.routing_key,
                envelope.body,
                properties,
                envelope.headers,
                # A message no queue takes is returned, not silently dropped.
                mandatory=self._confirms,
            )
            if self._confirms:
                self._outstanding.add(self._next_tag)
                self._next_tag += 1
        deadline = time.monotonic() + self._timeout
        while self._outstanding:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PublishNotConfirmed(
                    count=len(self._outstanding),
                    reason=f"no confirm within {self._timeout:g} s",
                )
            try:
                self._connection.drain_events(timeout=min(remaining, 1.0))
            except TimeoutError:
                continue
        if self._nacked:
            raise PublishNotConfirmed(count=len(self._nacked), reason="the broker refused them")
        if self._returned:
            raise Unroutable(count=len(self._returned), reason=", ".join(sorted(set(self._returned))))

    def close(self) -> None:
        try:
            self._channel.close()
        except Exception:
            LOG.debug("closing publisher channel failed", exc_info=True)

    def _settle(self, tag: int, multiple: bool, nacked: bool) -> None:
        settled = {t for t in self._outstanding if t <= tag} if multiple else {tag}
        settled &= self._outstanding
        self._outstanding -= settled
        if nacked:
            self._nacked |= settled

    def _on_return(self, exc: Any, exchange: str, routing_key: str, message: Any) -> None:
        self._returned.append(f"exchange {exchange!r}, routing key {routing_key!r}")

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, nacked=False)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, nacked=True)
