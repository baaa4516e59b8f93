"""State reports: how the plugin knows an agent is alive.

Every ``report_interval`` the agent tells the plugin who it is, what it
serves and how busy it is; the answer says whether an administrator has
disabled it. The first answer after a start also triggers a resync: the
plugin dispatches again, at once, the tasks this agent held in an earlier
life, instead of waiting for their deadlines.

Until the plugin has answered once, reports go out every second or so, each
waiting little for its answer: an agent started beside its plugin (a host
booting) sends its first report before the plugin listens, and the broker
drops it; waiting the whole RPC timeout and then a report interval kept
such agents unregistered for about 20 seconds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from tether.agent.plugin_api import PluginApi
from tether.common import rpc

LOG = logging.getLogger(__name__)

#: the first report's wait for an answer, doubled after each unanswered one
#: up to the RPC timeout
FIRST_WAIT = 1.0
#: seconds between reports while the plugin has never answered
FIRST_PAUSE = 0.5


class Heartbeat:
    def __init__(
        self,
        plugin: PluginApi,
        interval: float,
        state: Callable[[], dict[str, Any]],
        on_admin_state: Callable[[bool], None],
        on_bound: Callable[[dict[str, list[str]], float], None] = lambda bound, sent_at: None,
    ) -> None:
        self.on_bound = on_bound
        self.plugin = plugin
        self.interval = interval
        self.state = state
        self.on_admin_state = on_admin_state
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced = False
        self._failing = False
        #: seconds the next report waits for its answer while none came yet
        self._first_wait = FIRST_WAIT
        # A report lost with a broker connection is sent again after about two
        # intervals, not the whole RPC timeout: the plugin counts the silence.
        self._steady_wait = min(plugin.timeout, max(2 * interval, 1.0))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.plugin.timeout + 1)

    def beat(self) -> None:
        sent_at = time.time()
        state = self.state()
        answer = self.plugin.report_state(
            state, timeout=self._steady_wait if self._synced else self._first_wait
        )
        self.on_admin_state(bool(answer.get("admin_state_up", True)))
        self.on_bound(answer.get("bound") or {}, sent_at)
        if not self._synced:
            redispatched = self.plugin.resync(state["agent_id"], state["started_at"])["redispatched"]
            self._synced = True
            if redispatched:
                LOG.warning(
                    "the plugin dispatched again %d task(s) this agent held before it restarted",
                    len(redispatched),
                )

    def _run(self) -> None:
        while True:
            try:
                self.beat()
                if self._failing:
                    LOG.info("state reports reach the plugin again")
                self._failing = False
            except rpc.RECOVERABLE as exc:
                # Logged once per outage: the plugin will declare this agent
                # dead after agent_down_time, and it will say so.
                if not self._failing and self._synced:
                    LOG.warning(
                        "cannot report state to the plugin (%s: %s); retrying every %.0f s",
                        type(exc).__name__,
                        exc,
                        self.interval,
                    )
                    self._failing = True
                elif not self._failing and self._first_wait >= self.plugin.timeout:
                    LOG.warning(
                        "the plugin has not answered this agent's state reports yet (%s: %s); still trying",
                        type(exc).__name__,
                        exc,
                    )
                    self._failing = True
                self._first_wait = min(self._first_wait * 2, self.plugin.timeout)
            except Exception:
                LOG.exception("state report failed")
            if self._stop.wait(self.interval if self._synced else FIRST_PAUSE):
                return
