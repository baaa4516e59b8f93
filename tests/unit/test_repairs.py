"""The actions that fix what is stuck: retry a failed task, re-apply a
resource, and the reason every action (cancel and agent updates included)
keeps in the history with who asked."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, claim, finish, report, task_view
from tether.common.messages import ReportedError
from tether.plugin.db.models import ResourceRecord
from tether.plugin.service import Plugin

ADMIN = {"X-Roles": "admin"}
BROKEN = ReportedError(type="DriverError", message="the device refused it")


def _failed(plugin: Plugin, task_id: str, **extra: Any) -> None:
    finish(plugin, task_id, "FAILED", error=BROKEN, **extra)


def _lb(client: TestClient, plugin: Plugin, **attributes: Any) -> Any:
    """An ACTIVE load balancer."""
    lb = accepted(client, "loadbalancers", {"provider": "noop", **attributes})
    finish(plugin, lb["task"]["id"])
    return lb


def _retry(client: TestClient, task_id: str, body: Any = None, **kwargs: Any) -> Any:
    return client.post(f"/v1/tasks/{task_id}/retry", json=body, **kwargs)


def _reapply(client: TestClient, lb_id: str, body: Any = None, headers: Any = ADMIN) -> Any:
    return client.post(f"/v1/loadbalancers/{lb_id}/reapply", json=body, headers=headers)


def _show(client: TestClient, lb_id: str) -> Any:
    return client.get(f"/v1/loadbalancers/{lb_id}").json()


# -- retry ------------------------------------------------------------------


def test_a_failed_create_is_retried_as_a_new_create_that_names_it(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    failed = lb["task"]["id"]
    _failed(plugin, failed)
    assert _show(client, lb["id"])["provisioning_status"] == "ERROR"
    answer = _retry(client, failed, {"reason": "device rebooted"})
    assert answer.status_code == 202, answer.text
    retry = answer.json()
    assert answer.headers["Location"] == f"/v1/tasks/{retry['id']}"
    assert (retry["operation"], retry["state"], retry["retry_of"]) == ("create", "PENDING", failed)
    assert _show(client, lb["id"])["provisioning_status"] == "PENDING_CREATE"
    finish(plugin, retry["id"])
    shown = _show(client, lb["id"])
    assert (shown["provisioning_status"], shown["in_sync"]) == ("ACTIVE", True)
    # Both tasks' histories show who asked and why.
    for task_id in (failed, retry["id"]):
        (action,) = task_view(client, task_id)["actions"]
        assert action | {"at": None, "request_id": None} == {
            "action": "retry",
            "target_type": "task",
            "target_id": failed,
            "task_id": retry["id"],
            "project_id": action["project_id"],
            "roles": ["member"],
            "request_id": None,
            "reason": "device rebooted",
            "outcome": None,
            "at": None,
        }
    assert task_view(client, retry["id"])["retry_of"] == failed
    assert task_view(client, failed)["retry_of"] is None


def test_a_retry_applies_the_current_desired_state_not_the_failed_tasks(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin, name="first")
    older = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "second"}).json()["task"]["id"]
    _failed(plugin, older)
    newer = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "third"}).json()["task"]["id"]
    _failed(plugin, newer)
    retry = _retry(client, older).json()
    assert retry["operation"] == "update"
    assert task_view(client, retry["id"])["generation"] == _show(client, lb["id"])["generation"]
    finish(plugin, retry["id"])
    shown = _show(client, lb["id"])
    assert (shown["name"], shown["provisioning_status"], shown["in_sync"]) == ("third", "ACTIVE", True)


def test_a_failed_delete_is_retried_as_a_delete(client: TestClient, plugin: Plugin) -> None:
    lb = _lb(client, plugin)
    delete = client.delete(f"/v1/loadbalancers/{lb['id']}").json()["task"]["id"]
    _failed(plugin, delete)
    retry = _retry(client, delete).json()
    assert retry["operation"] == "delete"
    assert _show(client, lb["id"])["provisioning_status"] == "PENDING_DELETE"
    finish(plugin, retry["id"])
    assert client.get(f"/v1/loadbalancers/{lb['id']}").status_code == 404


def test_a_failed_cascade_delete_is_retried_with_everything_under_it(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin)
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    )
    finish(plugin, listener["task"]["id"])
    delete = client.delete(f"/v1/loadbalancers/{lb['id']}?cascade=true").json()["task"]["id"]
    _failed(plugin, delete)
    retry = _retry(client, delete).json()
    assert (retry["operation"], retry["cascade"]) == ("delete", True)
    assert client.get(f"/v1/listeners/{listener['id']}").json()["provisioning_status"] == "PENDING_DELETE"
    finish(plugin, retry["id"])
    assert client.get(f"/v1/listeners/{listener['id']}").status_code == 404


@pytest.mark.parametrize("state", ["PENDING", "RUNNING", "SUCCEEDED", "CANCELLED", "SUPERSEDED", "QUEUED"])
def test_only_a_failed_task_can_be_retried_and_the_answer_names_the_state(
    client: TestClient, plugin: Plugin, state: str
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    task_id = lb["task"]["id"]
    if state == "RUNNING":
        claim(plugin, task_id)
    elif state == "SUCCEEDED":
        finish(plugin, task_id)
    elif state == "CANCELLED":
        client.post(f"/v1/tasks/{task_id}/cancel")
    elif state in ("SUPERSEDED", "QUEUED"):
        finish(plugin, task_id)
        claim(plugin, client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()["task"]["id"])
        task_id = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()["task"]["id"]
        if state == "SUPERSEDED":
            client.delete(f"/v1/loadbalancers/{lb['id']}")  # folds the waiting update into it
    assert task_view(client, task_id)["state"] == state
    answer = _retry(client, task_id)
    assert answer.status_code == 409, answer.text
    message = answer.json()["error"]["message"]
    assert f"Task {task_id} is {state}; only a FAILED task can be retried" in message


def test_a_retry_is_refused_while_the_resource_has_a_change_in_flight(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin)
    failed = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()["task"]["id"]
    _failed(plugin, failed)
    busy = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()["task"]["id"]
    answer = _retry(client, failed)
    assert answer.status_code == 409
    message = answer.json()["error"]["message"]
    assert f"is PENDING_UPDATE: a change of it is in flight (task {busy}, update, PENDING)" in message
    assert f"GET /v1/tasks/{busy}?wait=30" in message


def test_a_retry_is_refused_when_the_resource_is_gone(client: TestClient, plugin: Plugin) -> None:
    lb = _lb(client, plugin)
    failed = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()["task"]["id"]
    _failed(plugin, failed)
    finish(plugin, client.delete(f"/v1/loadbalancers/{lb['id']}").json()["task"]["id"])
    answer = _retry(client, failed)
    assert answer.status_code == 409
    assert f"failed on loadbalancer {lb['id']}, which is gone" in answer.json()["error"]["message"]


def test_an_older_failure_is_not_retried_over_a_later_delete_nor_a_delete_over_a_later_change(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin)
    update = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()["task"]["id"]
    _failed(plugin, update)
    delete = client.delete(f"/v1/loadbalancers/{lb['id']}").json()["task"]["id"]
    _failed(plugin, delete)
    answer = _retry(client, update)
    assert answer.status_code == 409
    assert f"retry that one (POST /v1/tasks/{delete}/retry)" in answer.json()["error"]["message"]
    later = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()["task"]["id"]
    _failed(plugin, later)
    answer = _retry(client, delete)
    assert answer.status_code == 409
    assert "changed since this delete failed" in answer.json()["error"]["message"]


def test_retrying_an_unknown_task_answers_404(client: TestClient) -> None:
    assert _retry(client, "no-such-task").status_code == 404


@pytest.mark.parametrize("body", [{"reason": "x" * 256}, {"reason": 7}, {"why": "x"}, ["reason"], "text"])
def test_a_reason_is_a_short_line_and_nothing_else_is_taken(
    client: TestClient, plugin: Plugin, body: Any
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    _failed(plugin, lb["task"]["id"])
    for url in (f"/v1/tasks/{lb['task']['id']}/retry", f"/v1/tasks/{lb['task']['id']}/cancel"):
        answer = client.post(url, json=body)
        assert answer.status_code == 400, (url, answer.text)
        assert "body at $" in answer.json()["error"]["message"]
    assert _reapply(client, lb["id"], body).status_code == 400


# -- reapply ----------------------------------------------------------------


def test_an_admin_reapplies_a_settled_resource_through_the_queue(client: TestClient, plugin: Plugin) -> None:
    lb = _lb(client, plugin)
    answer = _reapply(client, lb["id"], {"reason": "device replaced"})
    assert answer.status_code == 202, answer.text
    task = answer.json()
    assert (task["operation"], task["state"], task["resource_id"]) == ("update", "PENDING", lb["id"])
    assert answer.headers["Location"] == f"/v1/tasks/{task['id']}"
    assert _show(client, lb["id"])["provisioning_status"] == "PENDING_UPDATE"
    (action,) = task_view(client, task["id"])["actions"]
    assert (action["action"], action["target_id"], action["reason"]) == (
        "reapply",
        lb["id"],
        "device replaced",
    )
    finish(plugin, task["id"])
    shown = _show(client, lb["id"])
    assert (shown["provisioning_status"], shown["in_sync"]) == ("ACTIVE", True)


def test_a_reapply_clears_drift_once_applied(client: TestClient, plugin: Plugin) -> None:
    lb = _lb(client, plugin)
    with plugin.sessionmaker.begin() as session:
        session.get(ResourceRecord, lb["id"]).drift = {"missing": True, "summary": "missing on the device"}
    assert _show(client, lb["id"])["in_sync"] is False
    finish(plugin, _reapply(client, lb["id"]).json()["id"])
    shown = _show(client, lb["id"])
    assert (shown["drift"], shown["in_sync"]) == (None, True)


def test_a_reapply_after_a_failed_update_applies_the_desired_state(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin)
    _failed(plugin, client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()["task"]["id"])
    assert _show(client, lb["id"])["provisioning_status"] == "ERROR"
    finish(plugin, _reapply(client, lb["id"]).json()["id"])
    shown = _show(client, lb["id"])
    assert (shown["name"], shown["provisioning_status"], shown["in_sync"]) == ("a", "ACTIVE", True)


def test_a_reapply_waits_behind_the_change_its_tree_has_in_flight(client: TestClient, plugin: Plugin) -> None:
    lb = _lb(client, plugin)
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    )
    task = _reapply(client, lb["id"]).json()
    assert task["state"] == "QUEUED"
    finish(plugin, listener["task"]["id"])
    assert task_view(client, task["id"])["state"] == "PENDING"


def test_a_reapply_is_refused_while_a_change_is_in_flight_naming_it(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    answer = _reapply(client, lb["id"])
    assert answer.status_code == 409
    message = answer.json()["error"]["message"]
    assert (
        f"is PENDING_CREATE: a change of it is in flight (task {lb['task']['id']}, create, PENDING)"
        in message
    )


def test_a_reapply_after_a_failed_create_says_to_retry_the_create(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    _failed(plugin, lb["task"]["id"])
    answer = _reapply(client, lb["id"])
    assert answer.status_code == 409
    message = answer.json()["error"]["message"]
    assert "ERROR from a failed create" in message
    assert f"retry its create (POST /v1/tasks/{lb['task']['id']}/retry)" in message


def test_reapply_is_for_admins_by_default_and_404_for_an_unknown_resource(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _lb(client, plugin)
    answer = _reapply(client, lb["id"], headers={})
    assert answer.status_code == 403
    assert "tether:loadbalancer:reapply" in answer.json()["error"]["message"]
    assert _reapply(client, "no-such-lb").status_code == 404


# -- reasons on the actions that existed -------------------------------------


def test_a_cancel_keeps_its_reason_in_the_task_history(
    client: TestClient, plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    with caplog.at_level("INFO", logger="tether.plugin.tasks.operator_actions"):
        answer = client.post(f"/v1/tasks/{lb['task']['id']}/cancel", json={"reason": "wrong project"})
    assert answer.status_code == 200, answer.text
    assert f"cancel of task {lb['task']['id']} asked by project" in caplog.text
    assert "'wrong project'" in caplog.text
    (action,) = task_view(client, lb["task"]["id"])["actions"]
    assert (action["action"], action["reason"]) == ("cancel", "wrong project")
    # Without a body, as before.
    other = accepted(client, "loadbalancers", {"provider": "noop"})
    assert client.post(f"/v1/tasks/{other['task']['id']}/cancel").status_code == 200


def test_disabling_an_agent_keeps_who_and_why_on_the_agent(client: TestClient, plugin: Plugin) -> None:
    report(plugin, "agent-1", ["noop"])
    url = "/v1/agents/agent-1"
    answer = client.put(url, json={"admin_state_up": False, "reason": "host maintenance"}, headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert answer.json()["admin_state_up"] is False
    client.put(url, json={"admin_state_up": True}, headers=ADMIN)
    actions = client.get(url, headers=ADMIN).json()["actions"]
    assert [(a["action"], a["reason"]) for a in actions] == [
        ("disable", "host maintenance"),
        ("enable", None),
    ]
    for bad in ({"admin_state_up": "no"}, {"admin_state_up": False, "why": "x"}, {"reason": "x"}):
        assert client.put(url, json=bad, headers=ADMIN).status_code == 400, bad
