"""The agent's side of the plugin's RPC API (see :mod:`tether.common.rpc`).

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
from typing import Any

from oslo_config import cfg

from tether.common import log, rpc
from tether.common.exceptions import ServiceUnavailable, TetherError

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

#: Characters of the plugin's error message kept in a claim failure.
_MAX_ERROR = 500


class Stopping(Exception):
    """The agent is stopping; leave the message unacked for another agent."""


class ClaimFailed(TetherError):
    """The plugin answered a claim with an error; asking again would not help."""

    message = "the plugin answered the claim of task {task_id!r} with {error_type}: {error}"

    @property
    def error(self) -> str:
        """The plugin's error: its type and message."""
        return f"{self.kwargs['error_type']}: {self.kwargs['error']}"


class PluginApi:
    """Calls agents make to the plugin; each is retried by its caller."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self._client = rpc.get_client(rpc.get_transport(conf))
        self.timeout = conf.agent.rpc_timeout

    def claim(
        self, task_id: str, agent_id: str, claim_id: str, redelivered: bool, driver_timeout: float
    ) -> dict[str, Any]:
        return self._call(
            "claim",
            task_id=task_id,
            agent_id=agent_id,
            claim_id=claim_id,
            redelivered=redelivered,
            driver_timeout=driver_timeout,
            request_id=log.current_request_id(),
        )

    def progress(
        self, task_id: str, attempt: int, agent_id: str, message: str, expect_within: float
    ) -> dict[str, Any]:
        return self._call(
            "progress",
            task_id=task_id,
            attempt=attempt,
            agent_id=agent_id,
            message=message,
            expect_within=expect_within,
        )

    def report_state(self, state: dict[str, Any]) -> dict[str, Any]:
        return self._call("report_state", state=state)

    def resync(self, agent_id: str, started_at: str) -> dict[str, Any]:
        return self._call("resync", agent_id=agent_id, started_at=started_at)

    def claim_until_answered(
        self, task_id: str, agent_id: str, redelivered: bool, driver_timeout: float, stopping: threading.Event
    ) -> dict[str, Any]:
        """Claim, retrying with backoff while the plugin or the broker is away.

        One claim id for all retries makes them one claim on the plugin side.

        :raises Stopping: when the agent stops before the plugin answers.
        :raises ClaimFailed: when the plugin answered with an error.
        """
        claim_id = str(uuid.uuid4())
        delay = 0.5
        while True:
            try:
                return self.claim(task_id, agent_id, claim_id, redelivered, driver_timeout)
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
            except Exception as exc:
                # oslo.messaging rebuilds the plugin's builtin exceptions
                # (TypeError, KeyError...) as themselves, and the in-process
                # transport hands over the endpoint's exception as it is.
                raise ClaimFailed(
                    task_id=task_id, error_type=_type_name(exc), error=_first_line(exc)
                ) from exc
            if stopping.wait(delay):
                raise Stopping(task_id)
            delay = min(delay * 2, 10.0)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._client.prepare(timeout=self.timeout, retry=1).call(
            {}, method, **kwargs
        )
        return answer


def _type_name(exc: BaseException) -> str:
    # oslo.messaging names a rebuilt exception type FooError_Remote.
    return type(exc).__name__.removesuffix("_Remote")


def _first_line(value: object) -> str:
    """The message without the remote traceback oslo.messaging appends to it."""
    lines = str(value if value is not None else "").strip().splitlines()
    text = lines[0] if lines else "(no message)"
    return text if len(text) <= _MAX_ERROR else f"{text[: _MAX_ERROR - 1]}…"
