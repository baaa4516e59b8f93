"""Cancelling a change that has not started."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, claim, finish
from tether.plugin.service import Plugin


def _cancel(client: TestClient, task_id: str) -> Any:
    return client.post(f"/v1/tasks/{task_id}/cancel")


def test_a_cancelled_create_leaves_no_resource(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    response = _cancel(client, lb["task"]["id"])
    assert response.status_code == 200
    assert response.json()["state"] == "CANCELLED"
    assert client.get(f"/v1/loadbalancers/{lb['id']}").status_code == 404
    # ... and an agent that gets the message later skips it.
    assert claim(plugin, lb["task"]["id"])["run"] is False


def test_a_cancelled_create_takes_the_children_queued_under_it(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    )
    assert _cancel(client, lb["task"]["id"]).status_code == 200
    assert client.get(f"/v1/listeners/{listener['id']}").status_code == 404
    assert client.get(f"/v1/tasks/{listener['task']['id']}").json()["state"] == "CANCELLED"


def test_a_cancelled_update_restores_the_last_applied_state_and_status(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop", "name": "before"})
    finish(plugin, lb["task"]["id"])
    update = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "after"}).json()
    assert update["provisioning_status"] == "PENDING_UPDATE"
    assert _cancel(client, update["task"]["id"]).status_code == 200
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["name"], body["provisioning_status"], body["in_sync"]) == ("before", "ACTIVE", True)


def test_a_cancelled_delete_keeps_the_resource_as_it_was(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, lb["task"]["id"])
    delete = client.delete(f"/v1/loadbalancers/{lb['id']}").json()
    assert _cancel(client, delete["task"]["id"]).status_code == 200
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"]) == ("ACTIVE", True)


def test_a_running_task_cannot_be_cancelled_and_the_answer_names_its_agent(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    claim(plugin, lb["task"]["id"], agent_id="agent-7")
    response = _cancel(client, lb["task"]["id"])
    assert response.status_code == 409
    assert "running on agent agent-7" in response.json()["error"]["message"]


def test_only_the_newest_change_of_a_resource_can_be_cancelled(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, lb["task"]["id"])
    client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "running"})
    first = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()
    second = client.delete(f"/v1/loadbalancers/{lb['id']}").json()
    response = _cancel(client, first["task"]["id"])
    assert response.status_code == 409  # superseded by the delete already
    response = _cancel(client, second["task"]["id"])
    assert response.status_code == 200


def test_another_projects_task_cannot_be_cancelled(client: TestClient) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    response = client.post(f"/v1/tasks/{lb['task']['id']}/cancel", headers={"X-Project-Id": "other"})
    assert response.status_code == 404
