"""Operations in steps, through the whole pipeline in one process: each step
recorded, a retry resuming at the step that failed, undo in reverse order;
and progress and counters a driver reports while it works."""

from __future__ import annotations

from typing import Any

import oslo_messaging
import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import claim, wait_for
from tether.agent.service import Agent
from tether.common.exceptions import MalformedMessage
from tether.plugin.service import Plugin


@pytest.fixture
def quick_retries(conf: cfg.ConfigOpts) -> None:
    """Retries after 50 ms, at most two attempts; asked for before the plugin is made."""
    conf.set_override("retry_backoff", 0.05, group="plugin")
    conf.set_override("max_attempts", 2, group="plugin")


def _finished(client: TestClient, task_id: str) -> Any:
    def check() -> Any:
        task = client.get(f"/v1/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCEEDED", "FAILED") else None

    return wait_for(check)


def _create(client: TestClient, **metadata: str) -> Any:
    return client.post("/v1/loadbalancers", json={"provider": "fake", "metadata": metadata}).json()


def _states(task: Any) -> list[tuple[str, str, int | None]]:
    return [(s["name"], s["state"], s["attempt"]) for s in task["steps"]]


def test_each_step_is_recorded_with_its_attempt_agent_and_times(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client, **{"fake.steps": "3"})
    task = _finished(client, lb["task"]["id"])
    assert task["state"] == "SUCCEEDED"
    assert _states(task) == [(f"fake step {n} of 3", "DONE", 1) for n in (1, 2, 3)]
    for step in task["steps"]:
        assert step["agent_id"] == task["agent_id"]
        assert step["finished_at"] >= step["started_at"] >= task["running_at"]
        assert step["error"] is None
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"]) == ("ACTIVE", True)


def test_a_step_that_fails_for_good_undoes_the_steps_before_it_in_reverse(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client, **{"fake.steps": "4", "fake.fail_step": "3", "fake.fail": "no VLAN left"})
    task = _finished(client, lb["task"]["id"])
    assert task["state"] == "FAILED"
    assert task["error"] == {
        "type": "DriverError",
        "message": "no VLAN left (step 3 of 4, 'fake step 3 of 4', failed; "
        "undone: fake step 2 of 4, fake step 1 of 4)",
    }
    assert [s["state"] for s in task["steps"]] == ["UNDONE", "UNDONE", "FAILED", "PENDING"]
    first, second, failed, _ = task["steps"]
    assert failed["error"] == {"type": "DriverError", "message": "no VLAN left"}
    assert first["finished_at"] >= second["finished_at"] >= failed["finished_at"]
    # A create has no earlier state to return to.
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["last_error"]) == ("ERROR", task["error"]["message"])


def test_an_update_undone_in_full_leaves_the_last_applied_state_active_and_not_in_sync(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client)
    _finished(client, lb["task"]["id"])
    update = client.put(
        f"/v1/loadbalancers/{lb['id']}",
        json={"name": "blue", "metadata": {"fake.steps": "2", "fake.fail_step": "2"}},
    ).json()
    task = _finished(client, update["task"]["id"])
    assert task["state"] == "FAILED"
    assert [s["state"] for s in task["steps"]] == ["UNDONE", "FAILED"]
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert body["provisioning_status"] == "ACTIVE"
    assert body["in_sync"] is False
    assert body["last_error"] == task["error"]["message"]


def test_an_undo_that_fails_stops_the_undoing_and_leaves_the_resource_in_error_naming_it(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client)
    _finished(client, lb["task"]["id"])
    update = client.put(
        f"/v1/loadbalancers/{lb['id']}",
        json={"metadata": {"fake.steps": "3", "fake.fail_step": "3", "fake.fail_undo": "2"}},
    ).json()
    task = _finished(client, update["task"]["id"])
    assert [s["state"] for s in task["steps"]] == ["DONE", "UNDO_FAILED", "FAILED"]
    assert task["steps"][1]["error"]["message"] == "the fake device refused to undo fake step 2 of 3"
    assert task["error"]["message"].endswith(
        "(step 3 of 3, 'fake step 3 of 3', failed; undoing 'fake step 2 of 3' failed (the fake device "
        "refused to undo fake step 2 of 3), so the device still holds: fake step 1 of 3, fake step 2 of 3)"
    )
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert body["provisioning_status"] == "ERROR"


def test_a_retryable_step_failure_retries_that_step_and_not_the_steps_before_it(
    quick_retries: None, client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client, **{"fake.steps": "3", "fake.unreachable_step": "2"})
    task = _finished(client, lb["task"]["id"])
    assert (task["state"], task["attempt"]) == ("SUCCEEDED", 2)
    assert _states(task) == [
        ("fake step 1 of 3", "DONE", 1),
        ("fake step 2 of 3", "DONE", 2),
        ("fake step 3 of 3", "DONE", 2),
    ]
    assert task["history"][0]["error"]["type"] == "DeviceUnreachable"


def test_a_retryable_step_failure_on_the_last_attempt_is_undone(
    quick_retries: None, client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(
        client, **{"fake.steps": "3", "fake.unreachable_step": "2", "fake.unreachable_attempts": "9"}
    )
    task = _finished(client, lb["task"]["id"])
    assert (task["state"], task["attempt"]) == ("FAILED", 2)
    assert task["error"]["type"] == "DeviceUnreachable"
    assert _states(task) == [
        ("fake step 1 of 3", "UNDONE", 2),
        ("fake step 2 of 3", "FAILED", 2),
        ("fake step 3 of 3", "PENDING", None),
    ]


def test_a_step_report_from_an_attempt_that_was_taken_over_changes_nothing(plugin: Plugin) -> None:
    endpoint = plugin.pipeline.endpoint
    with TestClient(plugin.app) as client:
        lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    task_id = lb["task"]["id"]
    assert claim(plugin, task_id, "agent-a")["attempt"] == 1
    assert endpoint.plan_steps({}, task_id, 1, "agent-a", ["a", "b"]) == {"current": True, "done": []}
    assert endpoint.step({}, task_id, 1, "agent-a", 0, "DONE") == {"current": True}
    # The broker gave the work to another agent, which took the task over.
    assert claim(plugin, task_id, "agent-b", redelivered=True)["attempt"] == 2
    assert endpoint.step({}, task_id, 1, "agent-a", 1, "DONE") == {"current": False}
    assert endpoint.plan_steps({}, task_id, 1, "agent-a", ["a", "b"]) == {"current": False}
    assert endpoint.plan_steps({}, task_id, 2, "agent-b", ["a", "b"]) == {"current": True, "done": ["a"]}
    # A driver whose steps changed between attempts starts the changed ones over.
    assert endpoint.plan_steps({}, task_id, 2, "agent-b", ["z", "b"]) == {"current": True, "done": []}


def test_malformed_step_reports_are_refused_with_the_argument_named(plugin: Plugin) -> None:
    endpoint = plugin.pipeline.endpoint
    with TestClient(plugin.app) as client:
        lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    task_id = lb["task"]["id"]
    claim(plugin, task_id, "agent-a")
    cases = [
        (lambda: endpoint.plan_steps({}, task_id, 1, "agent-a", []), "names must be a list of 1 to 1000"),
        (lambda: endpoint.plan_steps({}, task_id, 1, "agent-a", ["a", "a"]), "distinct step names"),
        (lambda: endpoint.step({}, task_id, 1, "agent-a", 0, "SLEEPING"), "state must be one of DONE"),
        (lambda: endpoint.step({}, task_id, 1, "agent-a", -1, "DONE"), "position must be an integer"),
        (lambda: endpoint.step({}, task_id, 1, "agent-a", 0, "DONE"), "has no step 1 planned"),
    ]
    for call, expected in cases:
        # oslo.messaging hands the caller the MalformedMessage behind this.
        with pytest.raises(oslo_messaging.ExpectedException) as raised:
            call()
        assert isinstance(raised.value.__cause__, MalformedMessage)
        assert expected in raised.value.__cause__.msg


def test_progress_a_driver_reports_during_its_call_shows_on_the_running_task(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client, **{"fake.delay_ms": "2000", "fake.progress": "4"})

    def shown() -> Any:
        task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
        return task["progress"] if task["state"] == "RUNNING" and task["progress"] else None

    assert wait_for(shown).startswith("fake progress ")
    _finished(client, lb["task"]["id"])


def test_counters_a_driver_reports_from_its_own_thread_reach_the_resource(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _create(client, **{"fake.stats": "sessions=12,bytes_in=3400"})
    _finished(client, lb["task"]["id"])
    # Sent on their own within about a second; the bound is loose for a
    # loaded machine running the unit tests four at a time on two cores.
    body = wait_for(lambda: (b := client.get(f"/v1/loadbalancers/{lb['id']}").json()).get("stats") and b, 10)
    assert body["stats"] == {"sessions": 12.0, "bytes_in": 3400.0}
