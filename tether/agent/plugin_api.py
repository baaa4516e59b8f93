"""The agent's side of the plugin's RPC API (see :mod:`tether.common.rpc`)."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from oslo_config import cfg

from tether.common import log, rpc

LOG = logging.getLogger(__name__)


class Stopping(Exception):
    """The agent is stopping; leave the message unacked for another agent."""


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
        """
        claim_id = str(uuid.uuid4())
        delay = 0.5
        while True:
            try:
                return self.claim(task_id, agent_id, claim_id, redelivered, driver_timeout)
            except rpc.RECOVERABLE as exc:
                LOG.warning(
                    "claiming task %s failed (%s: %s); retrying in %.1f s",
                    task_id,
                    type(exc).__name__,
                    exc,
                    delay,
                )
            if stopping.wait(delay):
                raise Stopping(task_id)
            delay = min(delay * 2, 10.0)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._client.prepare(timeout=self.timeout, retry=1).call(
            {}, method, **kwargs
        )
        return answer
