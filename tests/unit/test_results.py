"""Recording results: idempotent, fenced by attempt, truthful about status."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tether.common.messages import Result
from tether.common.states import Outcome
from tether.plugin.service import Plugin


def _result(task_id: str, outcome: Outcome = Outcome.SUCCEEDED, attempt: int = 1, **kw: Any) -> Result:
    return Result(task_id=task_id, attempt=attempt, outcome=outcome, agent_id="agent-x", **kw)


def _create(client: TestClient) -> Any:
    return client.post("/v1/loadbalancers", json={"provider": "noop"}).json()


def test_recording_the_same_result_twice_changes_nothing(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    recorder = plugin.results.recorder
    recorder.record([_result(lb["task"]["id"], statuses={lb["id"]: "ONLINE"})])
    first = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    task_first = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    recorder.record([_result(lb["task"]["id"], Outcome.FAILED, error_type="X", error_message="late")])
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json() == first
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json() == task_first


def test_a_result_from_another_attempt_is_not_applied(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    plugin.results.recorder.record([_result(lb["task"]["id"], attempt=2)])
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"


def test_a_result_for_an_unknown_task_is_ignored(plugin: Plugin) -> None:
    plugin.results.recorder.record([_result("no-such-task")])


def test_a_failure_records_error_type_message_and_last_error(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    plugin.results.recorder.record(
        [
            _result(
                lb["task"]["id"],
                Outcome.FAILED,
                error_type="InvalidConfiguration",
                error_message="VIP 10.0.0.5 is in use",
            )
        ]
    )
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["operating_status"], body["last_error"]) == (
        "ERROR",
        "OFFLINE",
        "VIP 10.0.0.5 is in use",
    )
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["error"] == {"type": "InvalidConfiguration", "message": "VIP 10.0.0.5 is in use"}


def test_operating_status_reports_apply_only_inside_the_tasks_tree(
    client: TestClient, plugin: Plugin
) -> None:
    a, b = _create(client), _create(client)
    plugin.results.recorder.record(
        [_result(a["task"]["id"], statuses={a["id"]: "DEGRADED", b["id"]: "OFFLINE"})]
    )
    assert client.get(f"/v1/loadbalancers/{a['id']}").json()["operating_status"] == "DEGRADED"
    assert client.get(f"/v1/loadbalancers/{b['id']}").json()["operating_status"] == "UNKNOWN"
