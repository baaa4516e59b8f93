"""Recording results: idempotent, fenced by attempt, truthful about status."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.unit.conftest import claim, finish
from tether.common.messages import ReportedError, Result
from tether.common.states import Outcome
from tether.plugin.db.models import ResourceRecord
from tether.plugin.service import Plugin


def _result(task_id: str, outcome: Outcome = Outcome.SUCCEEDED, attempt: int = 1, **kw: Any) -> Result:
    return Result(task_id=task_id, attempt=attempt, outcome=outcome, agent_id="agent-x", **kw)


def _create(client: TestClient) -> Any:
    return client.post("/v1/loadbalancers", json={"provider": "noop"}).json()


def test_recording_the_same_result_twice_changes_nothing(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    finish(plugin, lb["task"]["id"], statuses={lb["id"]: "ONLINE"})
    first = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    task_first = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert not plugin.pipeline.results.recorder.record(
        [_result(lb["task"]["id"], Outcome.FAILED, error=ReportedError(type="X", message="late"))]
    )
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json() == first
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == task_first["state"]


def test_a_result_from_an_earlier_attempt_is_kept_in_history_but_not_applied(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _create(client)
    task_id = lb["task"]["id"]
    assert claim(plugin, task_id, agent_id="agent-a")["attempt"] == 1
    # agent-a's delivery came back to the queue: agent-b takes over as attempt 2
    assert claim(plugin, task_id, agent_id="agent-b", redelivered=True)["attempt"] == 2
    assert not plugin.pipeline.results.recorder.record(
        [
            _result(
                task_id,
                Outcome.FAILED,
                attempt=1,
                error=ReportedError(type="DriverError", message="stale news"),
            )
        ]
    )
    task = client.get(f"/v1/tasks/{task_id}").json()
    assert (task["state"], task["attempt"], task["agent_id"]) == ("RUNNING", 2, "agent-b")
    history = {h["attempt"]: h for h in task["history"]}
    assert (history[1]["outcome"], history[1]["applied"]) == ("FAILED", False)
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "PENDING_CREATE"
    assert not plugin.pipeline.results.recorder.record([_result(task_id, attempt=2)])
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "ACTIVE"
    assert client.get(f"/v1/tasks/{task_id}").json()["history"][1]["applied"] is True


def test_a_result_for_an_unclaimed_task_is_not_applied(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    assert not plugin.pipeline.results.recorder.record([_result(lb["task"]["id"])])
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"


def test_a_result_for_an_unknown_task_is_named_and_changes_nothing(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _create(client)
    finish(plugin, lb["task"]["id"])
    before = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    # A batch may mix them: the known task's late copy is kept apart, the unknown one named.
    unknown = plugin.pipeline.results.recorder.record([_result("no-such-task"), _result(lb["task"]["id"])])
    assert unknown == {"no-such-task"}
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json() == before
    assert [t["id"] for t in client.get("/v1/tasks").json()["tasks"]] == [lb["task"]["id"]]


def test_a_failure_records_error_type_message_and_last_error(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    finish(
        plugin,
        lb["task"]["id"],
        "FAILED",
        error=ReportedError(type="InvalidConfiguration", message="VIP 10.0.0.5 is in use"),
    )
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["operating_status"], body["last_error"]) == (
        "ERROR",
        "OFFLINE",
        "VIP 10.0.0.5 is in use",
    )
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["error"] == {"type": "InvalidConfiguration", "message": "VIP 10.0.0.5 is in use"}


def test_a_retryable_failure_dispatches_again_after_a_backoff(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    finish(
        plugin,
        lb["task"]["id"],
        "FAILED",
        error=ReportedError(type="DeviceUnreachable", message="no route to 10.1.1.1", retryable=True),
    )
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["attempt"]) == ("PENDING", 1)
    assert task["error"]["message"] == "no route to 10.1.1.1"
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "PENDING_CREATE"


def test_a_retryable_failure_on_the_last_attempt_fails_saying_so(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client)
    for _ in range(plugin.policy.max_attempts):
        finish(
            plugin,
            lb["task"]["id"],
            "FAILED",
            error=ReportedError(type="DeviceUnreachable", message="no route to 10.1.1.1", retryable=True),
        )
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "FAILED"
    assert task["error"]["message"] == "no route to 10.1.1.1 (attempt 3 of 3)"


def test_operating_status_reports_apply_only_inside_the_tasks_tree(
    client: TestClient, plugin: Plugin
) -> None:
    a, b = _create(client), _create(client)
    finish(plugin, a["task"]["id"], statuses={a["id"]: "DEGRADED", b["id"]: "OFFLINE"})
    assert client.get(f"/v1/loadbalancers/{a['id']}").json()["operating_status"] == "DEGRADED"
    assert client.get(f"/v1/loadbalancers/{b['id']}").json()["operating_status"] == "UNKNOWN"


def test_a_success_records_the_desired_state_as_applied_and_closes_its_attempt(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _create(client)
    finish(plugin, lb["task"]["id"])
    update = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "renamed"}).json()
    answer = claim(plugin, update["task"]["id"], agent_id="agent-b")
    assert not plugin.pipeline.results.recorder.record([_result(update["task"]["id"], host="host-b")])
    view = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (view["provisioning_status"], view["generation"], view["applied_generation"]) == ("ACTIVE", 2, 2)
    assert view["in_sync"] is True
    with plugin.sessionmaker() as session:
        resource = session.get(ResourceRecord, lb["id"])
        assert resource is not None and resource.applied_attributes == resource.attributes
        assert resource.applied_attributes["name"] == "renamed"
    task = client.get(f"/v1/tasks/{update['task']['id']}").json()
    assert (task["state"], task["host"], task["attempt"]) == ("SUCCEEDED", "host-b", answer["attempt"])
    assert [(h["outcome"], h["applied"]) for h in task["history"]] == [("SUCCEEDED", True)]


def test_two_results_of_one_attempt_in_one_batch_settle_the_task_once(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _create(client)
    task_id = lb["task"]["id"]
    claim(plugin, task_id)
    assert not plugin.pipeline.results.recorder.record(
        [
            _result(task_id),
            _result(task_id, Outcome.FAILED, error=ReportedError(type="X", message="late copy")),
        ]
    )
    task = client.get(f"/v1/tasks/{task_id}").json()
    assert task["state"] == "SUCCEEDED" and task["error"] is None
    assert [(h["outcome"], h["applied"]) for h in task["history"]] == [("SUCCEEDED", True)]
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "ACTIVE"
