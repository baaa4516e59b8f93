"""The whole pipeline in one process: API → outbox → relay → in-memory
broker → agent → driver → result → recorder."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu.transport import memory
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.runner import Tally
from tether.agent.service import Agent
from tether.common import log
from tether.plugin.service import Plugin


def _settled(client: TestClient, collection: str, resource_id: str) -> Any:
    def check() -> Any:
        response = client.get(f"/v1/{collection}/{resource_id}")
        if response.status_code == 404:
            return {"gone": True}
        body = response.json()
        return body if not body["provisioning_status"].startswith("PENDING") else None

    return wait_for(check)


def test_a_loadbalancer_goes_from_pending_create_to_active_and_in_sync(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    body = _settled(client, "loadbalancers", lb["id"])
    assert body["provisioning_status"] == "ACTIVE"
    assert body["operating_status"] == "ONLINE"
    assert body["in_sync"] is True
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "SUCCEEDED"
    assert task["agent_id"] in {"agent-1", "agent-2"}
    assert task["finished_at"] >= task["running_at"] >= task["pending_at"]


def test_the_driver_gets_the_full_desired_state_of_the_tree(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop", "name": "web"}).json()
    _settled(client, "loadbalancers", lb["id"])
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    _settled(client, "listeners", listener["id"])
    applied = {}
    for agent in pipeline:
        applied.update(agent.drivers["noop"].applied)  # type: ignore[attr-defined]
    assert applied[listener["id"]] == (
        1,
        {"protocol": "HTTP", "protocol_port": 80, "connection_limit": -1, "admin_state_up": True},
    )


def test_a_fake_failure_ends_in_error_with_the_drivers_message(
    client: TestClient, pipeline: list[Agent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="tether.agent.runner")
    detail = "controller 10.0.0.5 answered ERR 507 (job 7781)"
    lb = client.post(
        "/v1/loadbalancers",
        json={
            "provider": "fake",
            "metadata": {"fake.fail": "no capacity in rack 7", "fake.fail_detail": detail},
        },
    ).json()
    body = _settled(client, "loadbalancers", lb["id"])
    assert (body["provisioning_status"], body["last_error"]) == ("ERROR", "no capacity in rack 7")
    assert body["in_sync"] is False
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "FAILED"
    assert task["error"] == {"type": "DriverError", "message": "no capacity in rack 7"}
    assert [attempt["error"]["message"] for attempt in task["history"]] == ["no capacity in rack 7"]
    # The operator's detail is in the agent's log line for the failure, beside the user's message.
    [line] = [r.getMessage() for r in caplog.records if lb["task"]["id"] in r.getMessage()]
    assert "no capacity in rack 7" in line and detail in line


def test_an_update_applies_the_new_generation(client: TestClient, pipeline: list[Agent]) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop", "name": "a"}).json()
    _settled(client, "loadbalancers", lb["id"])
    client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"})
    body = _settled(client, "loadbalancers", lb["id"])
    assert (body["name"], body["generation"], body["applied_generation"], body["in_sync"]) == (
        "b",
        2,
        2,
        True,
    )


def test_a_delete_removes_the_resource_and_keeps_its_tasks(client: TestClient, pipeline: list[Agent]) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    _settled(client, "loadbalancers", lb["id"])
    client.delete(f"/v1/loadbalancers/{lb['id']}")
    assert _settled(client, "loadbalancers", lb["id"]) == {"gone": True}
    tasks = client.get(f"/v1/tasks?resource_id={lb['id']}").json()["tasks"]
    assert [(t["operation"], t["state"]) for t in tasks] == [("create", "SUCCEEDED"), ("delete", "SUCCEEDED")]


def test_a_failed_delete_leaves_the_resource_in_error(client: TestClient, pipeline: list[Agent]) -> None:
    lb = client.post(
        "/v1/loadbalancers",
        json={"provider": "fake", "metadata": {"fake.fail": "device busy", "fake.fail_operation": "delete"}},
    ).json()
    assert _settled(client, "loadbalancers", lb["id"])["provisioning_status"] == "ACTIVE"
    client.delete(f"/v1/loadbalancers/{lb['id']}")
    body = _settled(client, "loadbalancers", lb["id"])
    assert (body["provisioning_status"], body["last_error"]) == ("ERROR", "device busy")


def test_a_driver_bug_becomes_an_error_and_the_agent_keeps_serving(
    client: TestClient, pipeline: list[Agent]
) -> None:
    bad = client.post(
        "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.delay_ms": "soon"}}
    ).json()
    body = _settled(client, "loadbalancers", bad["id"])
    assert body["provisioning_status"] == "ERROR"
    assert "driver failed unexpectedly (ValueError" in body["last_error"]
    good = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    assert _settled(client, "loadbalancers", good["id"])["provisioning_status"] == "ACTIVE"


def test_the_request_id_appears_in_the_plugins_and_the_agents_log_lines(
    client: TestClient, pipeline: list[Agent], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    # The agent names a task that succeeded at DEBUG only.
    caplog.set_level(logging.DEBUG, logger="tether.agent.runner")
    log.install_record_factory()
    response = client.post("/v1/loadbalancers", json={"provider": "noop"})
    _settled(client, "loadbalancers", response.json()["id"])
    request_id = response.headers["X-Request-Id"]
    lines = [r for r in caplog.records if getattr(r, "request_id", None) == request_id]
    # The logger of each module; the task state machine's are its package's.
    names = {r.name.removeprefix("tether.plugin.tasks.lifecycle.") for r in lines}
    assert names >= {"tether.plugin.tasks.changes", "tether.agent.runner", "claiming", "finished"}
    # The claim, decided from the agent's claims request, carries it too.
    assert any("claimed by agent" in r.getMessage() for r in lines)


def test_a_retry_shows_why_the_resource_waits_and_a_success_carries_no_old_error(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = client.post(
        "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.unreachable_attempts": "1"}}
    ).json()

    def waiting() -> Any:
        body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
        return body["provisioning_status"] == "PENDING_CREATE" and body["last_error"]

    assert "(attempt 1 of 3 failed; retrying in" in wait_for(waiting)
    body = _settled(client, "loadbalancers", lb["id"])
    assert (body["provisioning_status"], body["last_error"]) == ("ACTIVE", None)
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["error"], task["progress"]) == ("SUCCEEDED", None, None)
    assert task["history"][0]["error"]["type"] == "DeviceUnreachable"  # kept where it belongs


def test_a_device_that_does_not_answer_at_first_is_retried_until_it_does(
    client: TestClient, pipeline: list[Agent], conf: cfg.ConfigOpts
) -> None:
    conf.set_override("retry_backoff", 0.05, group="plugin")
    lb = client.post(
        "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.unreachable_attempts": "2"}}
    ).json()
    body = _settled(client, "loadbalancers", lb["id"])
    assert body["provisioning_status"] == "ACTIVE"
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["attempt"]) == ("SUCCEEDED", 3)
    assert [h["outcome"] for h in task["history"]] == ["FAILED", "FAILED", "SUCCEEDED"]
    assert task["history"][0]["error"]["type"] == "DeviceUnreachable"


@contextlib.contextmanager
def _solo(conf: cfg.ConfigOpts) -> Iterator[TestClient]:
    """A plugin and one agent, on options a test has just set."""
    plugin = Plugin(conf, migrate=True)
    agent = Agent(conf, agent_id="solo")
    plugin.start()
    agent.start()
    try:
        with TestClient(plugin.app) as client:
            yield client
    finally:
        agent.stop()
        plugin.stop()


def test_a_driver_call_past_driver_timeout_fails_and_frees_its_worker(
    conf: cfg.ConfigOpts, plugin: Plugin
) -> None:
    conf.set_override("driver_timeout", 1.0, group="agent")
    conf.set_override("workers", 1, group="agent")
    conf.set_override("max_attempts", 1, group="plugin")
    with _solo(conf) as client:
        stuck = client.post(
            "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.delay_ms": "4000"}}
        ).json()
        body = _settled(client, "loadbalancers", stuck["id"])
        assert body["last_error"] == (
            "The fake driver did not return within 1 s (driver_timeout). (attempt 1 of 1)"
        )
        # The one worker was replaced: the next task does not wait for the stuck call.
        quick = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
        assert _settled(client, "loadbalancers", quick["id"])["provisioning_status"] == "ACTIVE"


def test_a_disabled_agent_takes_no_work_until_enabled(client: TestClient, pipeline: list[Agent]) -> None:
    admin = {"X-Roles": "admin"}
    wait_for(lambda: len(client.get("/v1/agents", headers=admin).json()["agents"]) == 2)
    for agent in ("agent-1", "agent-2"):
        assert (
            client.put(f"/v1/agents/{agent}", json={"admin_state_up": False}, headers=admin).status_code
            == 200
        )
    wait_for(lambda: not any(a.consumer._consuming for a in pipeline))
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    # Published, and left in the queue: nobody consumes it.
    wait_for(lambda: client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING")
    assert memory.Channel.queues["tether.work.noop"].qsize() == 1
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "PENDING_CREATE"
    client.put("/v1/agents/agent-1", json={"admin_state_up": True}, headers=admin)
    body = _settled(client, "loadbalancers", lb["id"])
    assert body["provisioning_status"] == "ACTIVE"
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["agent_id"] == "agent-1"


def test_agents_and_providers_are_listed_for_admins_only(client: TestClient, pipeline: list[Agent]) -> None:
    admin = {"X-Roles": "admin"}
    agents = wait_for(lambda: client.get("/v1/agents", headers=admin).json()["agents"])
    assert {a["id"] for a in agents} <= {"agent-1", "agent-2"}
    assert all(a["alive"] and a["admin_state_up"] for a in agents)
    providers = {p["name"]: p for p in client.get("/v1/providers", headers=admin).json()["providers"]}
    assert providers["noop"]["placement"] == "shared"
    assert set(providers["noop"]["live_agents"]) <= {"agent-1", "agent-2"}
    assert providers["noop"]["backlog"] == 0
    assert client.get("/v1/agents").status_code == 403
    assert client.get("/v1/providers").status_code == 403


def test_a_long_device_operation_frees_its_worker_shows_progress_and_finishes(
    conf: cfg.ConfigOpts, plugin: Plugin
) -> None:
    conf.set_override("workers", 1, group="agent")
    with _solo(conf) as client:
        slow = client.post(
            "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.operation_s": "3"}}
        ).json()
        progress = wait_for(lambda: client.get(f"/v1/tasks/{slow['task']['id']}").json()["progress"])
        assert "fake operation" in progress
        # The only worker is free while the device works: another change goes through.
        quick = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
        assert _settled(client, "loadbalancers", quick["id"])["provisioning_status"] == "ACTIVE"
        assert client.get(f"/v1/tasks/{slow['task']['id']}").json()["state"] == "RUNNING"
        body = _settled(client, "loadbalancers", slow["id"])
        assert (body["provisioning_status"], body["in_sync"]) == ("ACTIVE", True)


def test_an_agent_counts_succeeded_tasks_at_info_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tether.agent.runner")
    now = [100.0]
    tally = Tally("agent-1", clock=lambda: now[0])
    tally.count()
    assert not caplog.records
    now[0] += Tally.EVERY
    tally.count()
    assert [r.getMessage() for r in caplog.records] == ["agent agent-1: 2 task(s) succeeded in the last 60 s"]
    tally.count()
    assert len(caplog.records) == 1
