"""Claims from the agent's side: retried while the plugin is away, never when it answered."""

from __future__ import annotations

import logging
import threading
import warnings
from typing import Any
from unittest import mock

import kombu
import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.plugin_api import ClaimFailed, PluginApi, Stopping
from tether.agent.service import Agent
from tether.common import transport
from tether.common.exceptions import MalformedMessage, ServiceUnavailable
from tether.plugin.db import attempts
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.service import Plugin

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import oslo_messaging


def _dead_letter(timeout: float = 10.0) -> Any:
    with kombu.Connection("memory://") as conn:
        queue = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel)
        return wait_for(lambda: queue.get(no_ack=True), timeout)


def _ready_work(provider: str) -> int:
    with kombu.Connection("memory://") as conn:
        declared = conn.default_channel.queue_declare(queue=f"tether.work.{provider}", passive=True)
        return int(declared.message_count)


@pytest.mark.parametrize(
    ("error", "named"),
    [
        # What RabbitMQ carries back when the plugin's endpoint raised.
        (
            oslo_messaging.RemoteError("OperationalError", "database is locked\nmore", "Traceback..."),
            "OperationalError: database is locked",
        ),
        # What the in-process transport hands over: the endpoint's exception itself.
        (MalformedMessage(reason="RPC call claim: task_id is bad"), "MalformedMessage: Malformed message"),
    ],
    ids=["remote-error", "in-process"],
)
def test_work_whose_claim_the_plugin_answers_with_an_error_is_dead_lettered_once_not_retried(
    client: TestClient, plugin: Plugin, pipeline: list[Agent], error: Exception, named: str
) -> None:
    claimed: list[str] = []

    def failing_claims(ctxt: Any, claims: list[dict[str, Any]]) -> Any:
        claimed.extend(claim["task_id"] for claim in claims)
        raise error

    for agent in pipeline:
        # Agents of the previous release, which claim over oslo.messaging.
        agent.plugin._channel = None
        agent.plugin.kombu_claims = False
    with mock.patch.object(plugin.pipeline.endpoint, "claim_batch", failing_claims):
        lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
        dead = _dead_letter()
        reason = dead.headers[transport.DEAD_LETTER_REASON]
        assert reason.startswith(f"the plugin answered the claim of task {lb['task']['id']!r} with {named}")
        assert "dead-lettered rather than claimed again and again" in reason
        assert "Traceback" not in reason
        assert dead.headers[transport.ORIGINAL_ROUTING_KEY] == "noop"
        assert dead.payload["task"]["id"] == lb["task"]["id"]
        # The worker is free and the work message acked, not held for another try.
        # Nothing holds the task any more: a claim's retries happen in its worker, which is free, and
        # the message is gone, so this is the only claim there will be.
        wait_for(lambda: not any(agent.consumer.in_flight for agent in pipeline))
        assert _ready_work("noop") == 0
        assert claimed == [lb["task"]["id"]]
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "PENDING"  # for the reaper to publish again


def test_work_whose_kombu_claim_the_plugin_fails_on_is_dead_lettered_once_not_retried(
    client: TestClient, plugin: Plugin, pipeline: list[Agent]
) -> None:
    claimed: list[str] = []

    def failing_decide(session: Any, claims: list[Any]) -> Any:
        claimed.extend(claim.task_id for claim in claims)
        raise KeyError("a bug in deciding claims")

    wait_for(lambda: all(agent.plugin.kombu_claims for agent in pipeline))
    with mock.patch.object(plugin.pipeline.claims.decider, "decide_in", failing_decide):
        lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
        reason = _dead_letter().headers[transport.DEAD_LETTER_REASON]
        task_id = lb["task"]["id"]
        assert reason.startswith(
            f"the plugin answered the claim of task {task_id!r} with KeyError: 'a bug in"
        )
        wait_for(lambda: not any(agent.consumer.in_flight for agent in pipeline))  # as above
        assert _ready_work("noop") == 0
        # Decided with the tick's results, then alone; the agent did not claim again.
        assert claimed == [lb["task"]["id"]] * 2
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"


def test_a_claim_is_retried_until_the_plugin_answers(
    conf: cfg.ConfigOpts, plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tether.agent.plugin_api")
    conf.set_override("rpc_timeout", 0.2, group="agent")
    lb = TestClient(plugin.app).post("/v1/loadbalancers", json={"provider": "noop"}).json()
    api = PluginApi(conf)
    answers: list[dict[str, Any]] = []
    claiming = threading.Thread(
        target=lambda: answers.append(
            api.claim_until_answered(lb["task"]["id"], "agent-a", False, 30.0, threading.Event())
        )
    )
    claiming.start()
    # The plugin's RPC server is not running: the first call times out.
    wait_for(lambda: f"claiming task {lb['task']['id']} failed (MessagingTimeout" in caplog.text)
    assert not answers
    plugin.start()
    try:
        claiming.join(10)
        assert answers == [{"run": True, "attempt": 1, "max_attempts": 3}]
    finally:
        plugin.stop()


@pytest.mark.parametrize(
    "outage",
    [
        oslo_messaging.MessagingTimeout("no reply"),
        kombu.exceptions.OperationalError("connection refused"),
        ConnectionResetError("reset by peer"),
        # The plugin answered that its database is away: wait it out too.
        oslo_messaging.RemoteError("ServiceUnavailable", "the plugin's database is unavailable"),
        ServiceUnavailable(reason="the plugin's database is unavailable"),
    ],
    ids=type,
)
def test_a_claim_is_retried_while_the_plugin_or_the_broker_is_away(
    conf: cfg.ConfigOpts, outage: Exception
) -> None:
    api = PluginApi(conf)
    answer = {"run": True, "attempt": 1, "max_attempts": 3}
    with mock.patch.object(api, "claim", side_effect=[outage, outage, answer]) as claim:
        assert api.claim_until_answered("t", "agent-a", False, 30.0, threading.Event()) == answer
    assert claim.call_count == 3
    # One claim id for every retry: the plugin sees them as one claim.
    assert len({call.args[2] for call in claim.call_args_list}) == 1


def test_a_stopping_agent_gives_up_a_claim_the_plugin_has_not_answered(conf: cfg.ConfigOpts) -> None:
    api = PluginApi(conf)
    stopping = threading.Event()
    stopping.set()
    with (
        mock.patch.object(api, "claim", side_effect=oslo_messaging.MessagingTimeout("no reply")),
        pytest.raises(Stopping),
    ):
        api.claim_until_answered("t", "agent-a", False, 30.0, stopping)


def test_a_remote_error_is_not_retried_and_names_the_plugins_error(conf: cfg.ConfigOpts) -> None:
    api = PluginApi(conf)
    remote = oslo_messaging.RemoteError("UnsupportedVersion", "Endpoint does not support RPC version 1.1")
    with (
        mock.patch.object(api, "claim", side_effect=remote) as claim,
        pytest.raises(ClaimFailed) as failed,
    ):
        api.claim_until_answered("t", "agent-a", False, 30.0, threading.Event())
    assert claim.call_count == 1
    assert failed.value.error == "UnsupportedVersion: Endpoint does not support RPC version 1.1"
    assert failed.value.__cause__ is remote


def test_the_plugin_answers_a_claim_during_a_database_outage_with_service_unavailable(
    client: TestClient, plugin: Plugin
) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    locked = DatabaseUnavailable(detail="database is locked", retry_after=1)  # as the engine raises it
    with (
        mock.patch.object(attempts, "for_claims", side_effect=locked),
        pytest.raises(ServiceUnavailable, match="database is unavailable"),
    ):
        plugin.pipeline.endpoint.claim(
            {}, task_id=lb["task"]["id"], agent_id="a", claim_id="c", redelivered=False, driver_timeout=30.0
        )
