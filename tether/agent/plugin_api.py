"""The agent's side of the plugin's API: claims over kombu once the plugin
says it takes them (:mod:`tether.agent.claim_channel`), over oslo.messaging before
that and against a plugin of the previous release; state reports, resyncs,
progress and devices' status over oslo.messaging (see :mod:`tether.common.rpc`).

A claim is retried while the plugin is away (no answer in time, the broker
unreachable, or its database: ServiceUnavailable), never when the plugin
answered it with another error: that answer
(oslo.messaging's ``RemoteError`` on RabbitMQ, the endpoint's own exception
on the in-process transport) would come back on every retry, while the
retrying worker held the work message.
"""

from __future__ import annotations

import logging
import threading
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from oslo_config import cfg

from tether.agent.claim_channel import ClaimChannel
from tether.common import backoff, claims, log, messages, rpc
from tether.common.claims import Claim
from tether.common.exceptions import ServiceUnavailable, TetherError

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

#: Characters of the plugin's error message kept in a claim failure.
_MAX_ERROR = 500


class Stopping(TetherError):
    """The agent is stopping; leave the message unacked for another agent."""

    message = "the agent is stopping before the plugin answered the claim of task {task_id}"


class ClaimFailed(TetherError):
    """The plugin answered a claim with an error; asking again would not help."""

    message = "the plugin answered the claim of task {task_id!r} with {error_type}: {error}"

    @property
    def error(self) -> str:
        """The plugin's error: its type and message."""
        return f"{self.kwargs['error_type']}: {self.kwargs['error']}"


class PluginApi:
    """Calls agents make to the plugin; each is retried by its caller."""

    def __init__(self, conf: cfg.ConfigOpts, channel: ClaimChannel | None = None) -> None:
        self._client = rpc.get_client(rpc.get_transport(conf))
        self.timeout = conf.agent.rpc_timeout
        #: the newest claim API the plugin took: 1.3, 1.2 (no published_for), 1.0 (one per call)
        self._claim_version = "1.3"
        self._claims = _Batcher(self._send_claims, MAX_CLAIMS_PER_CALL)
        self._channel = channel
        #: the plugin said it answers claims on the claims queue
        self.kombu_claims = False
        #: the plugin said it reads several results in one message
        self.result_batches = False
        #: the plugin said it takes statuses by report_status (API 1.7)
        self.status_reports = False

    def claim(
        self,
        task_id: str,
        agent_id: str,
        claim_id: str,
        redelivered: bool,
        driver_timeout: float,
        published_for: int | None = None,
    ) -> dict[str, Any]:
        """One claim, sent with the claims other workers make meanwhile.

        :param published_for: the attempt the work message was published
            for, so that a redelivered copy of an older attempt's message
            does not take over from a live holder.
        """
        if self.kombu_claims and self._channel is not None and self._channel.connected.is_set():
            claim = Claim(
                task_id=task_id,
                agent_id=agent_id,
                claim_id=claim_id,
                redelivered=redelivered,
                driver_timeout=driver_timeout,
                request_id=log.current_request_id(),
                published_for=published_for,
            )
            return _answer(task_id, self._channel.claim(claim))
        request = {
            "task_id": task_id,
            "agent_id": agent_id,
            "claim_id": claim_id,
            "redelivered": redelivered,
            "driver_timeout": driver_timeout,
            "request_id": log.current_request_id(),
        }
        if published_for is not None:
            request["published_for"] = published_for
        answer: dict[str, Any] = self._claims.claim(request)
        return answer

    def _send_claims(self, claims: list[dict[str, Any]]) -> list[Any]:
        answers: list[Any] = []
        version = self._claim_version
        if version != "1.3":
            claims = [{k: v for k, v in claim.items() if k != "published_for"} for claim in claims]
        if version == "1.0":
            for claim in claims:
                try:
                    answers.append(self._call("claim", "1.0", **claim))
                except Exception as exc:  # noqa: BLE001 - handed to the worker that made the claim
                    answers.append(exc)
            return answers
        try:
            answers = self._call("claim_batch", version, claims=claims)
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type != "UnsupportedVersion":
                raise
            # An older plugin (a rolling upgrade): the next older way.
            self._claim_version = "1.2" if version == "1.3" else "1.0"
            LOG.info("the plugin does not take claim API %s yet; using %s", version, self._claim_version)
            return self._send_claims(claims)
        return [
            ClaimFailed(
                task_id=claim["task_id"], error_type=answer["error"]["type"], error=answer["error"]["message"]
            )
            if "error" in answer
            else answer
            for claim, answer in zip(claims, answers, strict=True)
        ]

    def progress(
        self, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "progress",
            "1.1",
            task_id=task_id,
            attempt=attempt,
            agent_id=agent_id,
            message=message,
            expect_within=expect_within,
        )

    def plan_steps(self, task_id: str, attempt: int, agent_id: str, names: list[str]) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "plan_steps", "1.4", task_id=task_id, attempt=attempt, agent_id=agent_id, names=names
        )

    def step(
        self,
        task_id: str,
        attempt: int,
        agent_id: str,
        position: int,
        state: str,
        error_type: str | None = None,
        error_message: str | None = None,
    ) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "step",
            "1.4",
            task_id=task_id,
            attempt=attempt,
            agent_id=agent_id,
            position=position,
            state=state,
            error_type=error_type,
            error_message=error_message,
        )

    def audit_targets(self, agent_id: str, provider: str) -> dict[str, Any]:
        return self._call("audit_targets", "1.5", agent_id=agent_id, provider=provider)  # type: ignore[no-any-return]

    def report_drift(
        self,
        agent_id: str,
        provider: str,
        audited: dict[str, int],
        drifted: dict[str, Any],
        undesired: list[str],
        repair: list[str],
    ) -> dict[str, Any]:
        return self._call(  # type: ignore[no-any-return]
            "report_drift",
            "1.5",
            agent_id=agent_id,
            provider=provider,
            audited=audited,
            drifted=drifted,
            undesired=undesired,
            repair=repair,
        )

    def status_targets(self, agent_id: str, provider: str) -> dict[str, Any]:
        return self._call("status_targets", "1.7", agent_id=agent_id, provider=provider)  # type: ignore[no-any-return]

    def report_status(self, agent_id: str, reports: dict[str, Any]) -> dict[str, Any]:
        return self._call("report_status", "1.7", agent_id=agent_id, reports=reports)  # type: ignore[no-any-return]

    def standby_sync(self, agent_id: str, provider: str, held: dict[str, str]) -> dict[str, Any]:
        return self._call("standby_sync", "1.8", agent_id=agent_id, provider=provider, held=held)  # type: ignore[no-any-return]

    def report_state(self, state: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """:param timeout: seconds to wait for the answer, less than
        ``[agent] rpc_timeout`` while the agent has never been heard."""
        answer: dict[str, Any] = self._call("report_state", "1.0", timeout=timeout, state=state)
        kombu_claims = answer.get("kombu_claims") in claims.KNOWN_VERSIONS and self._channel is not None
        if kombu_claims != self.kombu_claims:
            LOG.info(
                "claiming over %s: the plugin %s claims on the claims queue",
                "kombu" if kombu_claims else "oslo.messaging",
                "takes" if kombu_claims else "does not take",
            )
        self.kombu_claims = kombu_claims
        self.result_batches = answer.get("result_batches") in messages.KNOWN_VERSIONS
        self.status_reports = answer.get("status_reports") is True
        return answer

    def resync(self, agent_id: str, started_at: str) -> dict[str, Any]:
        return self._call("resync", "1.0", agent_id=agent_id, started_at=started_at)  # type: ignore[no-any-return]

    def claim_until_answered(
        self,
        task_id: str,
        agent_id: str,
        redelivered: bool,
        driver_timeout: float,
        stopping: threading.Event,
        published_for: int | None = None,
    ) -> dict[str, Any]:
        """Claim, retrying with backoff while the plugin or the broker is away.

        One claim id for all retries makes them one claim on the plugin side.

        :raises Stopping: when the agent stops before the plugin answers.
        :raises ClaimFailed: when the plugin answered with an error.
        """
        claim_id = str(uuid.uuid4())
        failures = 0
        while True:
            failures += 1
            delay = backoff.CLAIM.delay(failures)
            try:
                return self.claim(task_id, agent_id, claim_id, redelivered, driver_timeout, published_for)
            except oslo_messaging.RemoteError as exc:
                # A MessagingException like the outages below, but an answer,
                # unless the answer is that the plugin's database is away.
                if exc.exc_type != ServiceUnavailable.__name__:
                    raise ClaimFailed(
                        task_id=task_id,
                        error_type=exc.exc_type or "RemoteError",
                        error=_first_line(exc.value),
                    ) from exc
                LOG.warning(
                    "claiming task %s: %s; retrying in %.1f s", task_id, _first_line(exc.value), delay
                )
            except ServiceUnavailable as exc:  # the same, on the in-process transport
                LOG.warning("claiming task %s: %s; retrying in %.1f s", task_id, exc.msg, delay)
            except rpc.RECOVERABLE as exc:
                LOG.warning(
                    "claiming task %s failed (%s: %s); retrying in %.1f s",
                    task_id,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            except ClaimFailed:
                raise
            except Exception as exc:
                # oslo.messaging rebuilds the plugin's builtin exceptions
                # (TypeError, KeyError...) as themselves, and the in-process
                # transport hands over the endpoint's exception as it is.
                raise ClaimFailed(
                    task_id=task_id, error_type=_type_name(exc), error=_first_line(exc)
                ) from exc
            if stopping.wait(delay):
                raise Stopping(task_id=task_id)

    def _call(self, method: str, version: str, timeout: float | None = None, **kwargs: Any) -> Any:
        # Each call names the oldest API version that has it, so agents
        # and plugins can be upgraded in any order.
        prepared = self._client.prepare(timeout=timeout or self.timeout, retry=1, version=version)
        return prepared.call({}, method, **kwargs)


def _answer(task_id: str, answer: claims.ClaimAnswer) -> dict[str, Any]:
    """A kombu claim's answer as the workers take it, or the exception it stands for."""
    if answer.error_type == ServiceUnavailable.__name__:
        raise ServiceUnavailable(reason=answer.error_message or "the plugin is unavailable")
    if answer.error_type is not None:
        raise ClaimFailed(task_id=task_id, error_type=answer.error_type, error=answer.error_message or "")
    return answer.as_dict()


def _type_name(exc: BaseException) -> str:
    # oslo.messaging names a rebuilt exception type FooError_Remote.
    return type(exc).__name__.removesuffix("_Remote")


def _first_line(value: object) -> str:
    """The message without the remote traceback oslo.messaging appends to it."""
    lines = str(value if value is not None else "").strip().splitlines()
    text = lines[0] if lines else "(no message)"
    return text if len(text) <= _MAX_ERROR else f"{text[: _MAX_ERROR - 1]}…"


#: Claims one call carries at most (the plugin takes up to 256).
MAX_CLAIMS_PER_CALL = 64


class _Batcher:
    """Claims made by concurrent workers travel together.

    While one call is out, the claims made meanwhile gather and go in the
    next: one round trip and one plugin transaction for many tasks when the
    agent is busy, no added wait when it is not. A worker whose claim waits
    sends the next call itself when no call is out, and stops sending once
    its own claim is answered, so no worker is kept from its task.
    """

    def __init__(self, send: Callable[[list[dict[str, Any]]], list[Any]], most: int) -> None:
        self._send = send
        self._most = most
        self._turn = threading.Condition()
        self._waiting: list[_BatchSlot] = []
        self._sending = False

    def claim(self, request: dict[str, Any]) -> Any:
        slot = _BatchSlot(request)
        with self._turn:
            self._waiting.append(slot)
            while not slot.done:
                if self._sending:
                    self._turn.wait()
                    continue
                self._sending = True
                batch, self._waiting = self._waiting[: self._most], self._waiting[self._most :]
                self._turn.release()
                try:
                    answers = self._answers(batch)
                finally:
                    self._turn.acquire()
                for waiting, answer in zip(batch, answers, strict=True):
                    waiting.answer, waiting.done = answer, True
                self._sending = False
                self._turn.notify_all()
        if isinstance(slot.answer, BaseException):
            raise slot.answer
        return slot.answer

    def _answers(self, batch: list[_BatchSlot]) -> list[Any]:
        try:
            return self._send([slot.request for slot in batch])
        except Exception as exc:  # noqa: BLE001 - each worker of the batch gets it to handle
            return [exc] * len(batch)


class _BatchSlot:
    def __init__(self, request: dict[str, Any]) -> None:
        self.request = request
        self.answer: Any = None
        self.done = False
