"""Claims on the wire: an agent asks to run tasks, the plugin answers.

A claim travels over kombu, not oslo.messaging (DESIGN.md, Transport): an
agent's connection thread sends the claims its workers made since its last
tick as one :class:`ClaimRequest` on the claims queue, with ``reply_to``
(RabbitMQ's direct reply-to, or a private queue on the in-memory transport)
and a ``correlation_id``; the plugin decides the whole batch in one
transaction and answers with one :class:`ClaimReply`, in order.

A lost request or reply costs a retry: the agent claims again with the same
``claim_id``, which the plugin answers as it did the first time.

Each claim of a request is decoded on its own (:mod:`tether.common.wire`),
so one malformed claim is answered with its error and the others are
decided. A request that cannot be read at all is dead-lettered with the
reason (guarantee 7).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from tether.common.messages import Counter, Id

VERSION = 1
KNOWN_VERSIONS = frozenset({VERSION})

#: Claims one request carries at most.
MAX_CLAIMS = 256

#: More than any deadline tether sets, far below datetime's range.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=10 * 365 * 86400)]


class Claim(msgspec.Struct, frozen=True):
    """One worker's request to run the task a work message carries."""

    task_id: Id
    agent_id: Id
    #: the same for every retry of one claim, so the plugin answers them alike
    claim_id: Id
    #: the broker redelivered the work message: its last holder may be dead
    redelivered: bool
    driver_timeout: Seconds
    request_id: Id | None = None
    #: the attempt the work message was published for, so that a stale copy
    #: of an older attempt's message does not take over from a live holder
    published_for: Counter | None = None


class ClaimAnswer(msgspec.Struct, frozen=True, omit_defaults=True):
    """The plugin's answer to one claim: run it as ``attempt``, or skip it."""

    run: bool = False
    attempt: int | None = None
    max_attempts: int | None = None
    #: why the agent skips the task (it acks its message)
    reason: str | None = None
    #: the plugin has no such task: the agent dead-letters the message
    unknown: bool = False
    #: the claim itself was refused; ``ServiceUnavailable`` means claim again
    error_type: str | None = None
    error_message: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The answer as the RPC API (1.0-1.3) gives it to agents of earlier releases."""
        if self.error_type is not None:
            return {"error": {"type": self.error_type, "message": self.error_message or ""}}
        answer: dict[str, Any] = {"run": self.run}
        if self.run:
            answer |= {"attempt": self.attempt, "max_attempts": self.max_attempts}
        else:
            answer["reason"] = self.reason
            if self.unknown:
                answer["unknown"] = True
        return answer


class ClaimRequest(msgspec.Struct, frozen=True, tag_field="kind", tag="claims"):
    version: int
    #: each claim decoded on its own: see :func:`tether.common.wire.decode_claim`
    claims: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=MAX_CLAIMS)]


class ClaimReply(msgspec.Struct, frozen=True, tag_field="kind", tag="claim-answers"):
    version: int
    answers: list[ClaimAnswer]


_ENCODER = msgspec.json.Encoder()


def encode_request(claims: list[Claim]) -> bytes:
    return _ENCODER.encode(ClaimRequest(VERSION, [msgspec.Raw(_ENCODER.encode(c)) for c in claims]))


def encode_reply(answers: list[ClaimAnswer]) -> bytes:
    return _ENCODER.encode(ClaimReply(VERSION, answers))
