"""An agent started before its plugin listens registers as soon as the
plugin answers, not a whole RPC timeout and report interval later."""

from __future__ import annotations

import logging
from typing import Any

import oslo_messaging
import pytest

from tests.unit.conftest import wait_for
from tether.agent.heartbeat import Heartbeat


class Plugin:
    """Answers from its ``unanswered + 1``-th report on, as a plugin that
    starts listening late does."""

    timeout = 10.0

    def __init__(self, unanswered: int) -> None:
        self.unanswered = unanswered
        self.waits: list[float | None] = []
        self.resynced = False

    def report_state(self, state: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        self.waits.append(timeout)
        if len(self.waits) <= self.unanswered:
            raise oslo_messaging.MessagingTimeout("no reply")
        return {"admin_state_up": True}

    def resync(self, agent_id: str, started_at: float) -> dict[str, Any]:
        self.resynced = True
        return {"redispatched": []}


def _heartbeat(plugin: Plugin) -> Heartbeat:
    # A report interval no test would wait for: reports before the first
    # answer must not wait for it.
    return Heartbeat(
        plugin,  # type: ignore[arg-type]
        interval=3600,
        state=lambda: {"agent_id": "a", "started_at": 0.0},
        on_admin_state=lambda up: None,
    )


def test_reports_before_the_first_answer_wait_little_and_go_out_again_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plugin = Plugin(unanswered=3)
    heartbeat = _heartbeat(plugin)
    heartbeat.start()
    try:
        wait_for(lambda: plugin.resynced)
        # Then the usual cadence, each report waiting two intervals at most (the
        # test's interval is an hour: the RPC timeout).
        heartbeat.beat()
    finally:
        heartbeat._stop.set()
    assert plugin.waits == [1.0, 2.0, 4.0, 8.0, 10.0]
    # A plugin that starts a few seconds after its agents is not a failure to report.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_plugin_silent_past_the_rpc_timeout_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "tether.agent.heartbeat")
    plugin = Plugin(unanswered=7)
    heartbeat = _heartbeat(plugin)
    heartbeat.start()
    try:
        wait_for(lambda: "state reports reach the plugin again" in caplog.text, timeout=20)
    finally:
        heartbeat._stop.set()
    assert plugin.waits == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("the plugin has not answered this agent's state reports yet")


def test_a_steady_report_waits_two_intervals_for_its_answer() -> None:
    plugin = Plugin(unanswered=0)
    heartbeat = Heartbeat(
        plugin,  # type: ignore[arg-type]
        interval=2,
        state=lambda: {"agent_id": "a", "started_at": 0.0},
        on_admin_state=lambda up: None,
    )
    heartbeat.beat()
    heartbeat.beat()
    # A report lost in a broker outage goes again in seconds, well inside agent_down_time.
    assert plugin.waits == [1.0, 4.0]
