"""References between resources (ResourceType.references; the listener's
default_pool_id): checked at accept, and never left dangling by a delete."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.conftest import finish
from tether.common.exceptions import ConfigError
from tether.common.resource_types import Registry, ResourceType
from tether.plugin.service import Plugin


def _tree(client: TestClient, project: str = "default") -> dict[str, str]:
    headers = {"X-Project-Id": project}
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=headers).json()
    pool = client.post(
        "/v1/pools",
        json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
        headers=headers,
    ).json()
    return {"lb": lb["id"], "pool": pool["id"]}


def _listener(client: TestClient, lb_id: str, pool_id: Any, project: str = "default") -> Any:
    body = {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": 80, "default_pool_id": pool_id}
    return client.post("/v1/listeners", json=body, headers={"X-Project-Id": project})


def test_a_listener_naming_no_pool_answers_400_naming_the_attribute_and_the_id(client: TestClient) -> None:
    tree = _tree(client)

    refused = _listener(client, tree["lb"], "no-such-pool")

    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["path"] == "$.default_pool_id"
    assert error["message"] == (
        f"default_pool_id 'no-such-pool' is no pool of this listener's loadbalancer {tree['lb']}; "
        f"name one of its pools (GET /v1/pools?loadbalancer_id={tree['lb']}), or null."
    )
    assert _listener(client, tree["lb"], tree["pool"]).status_code == 202


def test_a_pool_of_another_load_balancer_or_project_is_refused_alike(client: TestClient) -> None:
    ours, other, theirs = _tree(client), _tree(client), _tree(client, "project-b")

    across = _listener(client, ours["lb"], other["pool"])
    foreign = _listener(client, ours["lb"], theirs["pool"])

    assert across.status_code == foreign.status_code == 400
    assert foreign.json()["error"]["message"].startswith(f"default_pool_id {theirs['pool']!r} is no pool")
    assert "project-b" not in foreign.text


def test_a_reference_to_something_else_than_a_pool_is_refused(client: TestClient) -> None:
    tree = _tree(client)

    assert _listener(client, tree["lb"], tree["lb"]).status_code == 400


def test_an_update_is_checked_for_the_references_it_changes(client: TestClient) -> None:
    tree = _tree(client)
    listener = _listener(client, tree["lb"], None).json()

    refused = client.put(f"/v1/listeners/{listener['id']}", json={"default_pool_id": "nope"})
    fine = client.put(f"/v1/listeners/{listener['id']}", json={"default_pool_id": tree["pool"]})

    assert refused.status_code == 400 and refused.json()["error"]["path"] == "$.default_pool_id"
    assert fine.status_code == 202
    assert client.put(f"/v1/listeners/{listener['id']}", json={"connection_limit": 5}).status_code == 202


def test_deleting_a_pool_a_listener_names_answers_409_naming_the_listener_and_what_to_do(
    client: TestClient,
) -> None:
    tree = _tree(client)
    listener = _listener(client, tree["lb"], tree["pool"]).json()

    refused = client.delete(f"/v1/pools/{tree['pool']}")

    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        f"pool {tree['pool']} is the default_pool_id of listener {listener['id']}; change that first "
        f'(PUT /v1/listeners/{listener["id"]} {{"default_pool_id": null}} or another id), or delete the '
        f"loadbalancer {tree['lb']} with everything under it "
        f"(DELETE /v1/loadbalancers/{tree['lb']}?cascade=true)."
    )
    # The cascade of the pool alone does not cover the listener; the load balancer's does.
    assert client.delete(f"/v1/pools/{tree['pool']}?cascade=true").status_code == 409
    assert client.delete(f"/v1/loadbalancers/{tree['lb']}?cascade=true").status_code == 202


def test_a_pool_is_deleted_once_nothing_names_it(client: TestClient, plugin: Plugin) -> None:
    tree = _tree(client)
    listener = _listener(client, tree["lb"], tree["pool"]).json()
    assert client.put(f"/v1/listeners/{listener['id']}", json={"default_pool_id": None}).status_code == 202

    assert client.delete(f"/v1/pools/{tree['pool']}").status_code == 202


def test_a_listener_may_not_name_a_pool_being_deleted(client: TestClient, plugin: Plugin) -> None:
    tree = _tree(client)
    for task in client.get("/v1/tasks").json()["tasks"]:
        finish(plugin, task["id"])
    assert client.delete(f"/v1/pools/{tree['pool']}").status_code == 202

    refused = _listener(client, tree["lb"], tree["pool"])

    assert refused.status_code == 409
    assert "being deleted" in refused.json()["error"]["message"]


def test_a_type_may_reference_only_its_own_properties_and_installed_types() -> None:
    root = ResourceType(name="thing", properties={"provider": {"type": "string"}})
    wrong = ResourceType(
        name="part",
        parent="thing",
        properties={"other_id": {"type": "string"}},
        references={"other_id": "nope"},
    )
    with pytest.raises(ConfigError, match="reference 'other_id' to 'nope'"):
        Registry({"thing": root, "part": wrong})


def test_cancelling_the_create_of_a_pool_a_listener_names_answers_409(client: TestClient) -> None:
    tree = _tree(client)
    pool_task = client.get(f"/v1/pools/{tree['pool']}").json()["task"]["id"]
    listener = _listener(client, tree["lb"], tree["pool"]).json()

    refused = client.post(f"/v1/tasks/{pool_task}/cancel")

    assert refused.status_code == 409
    assert f"is the default_pool_id of listener {listener['id']}" in refused.json()["error"]["message"]


def test_a_pool_whose_listener_is_being_deleted_may_be_deleted_behind_it(
    client: TestClient, plugin: Plugin
) -> None:
    tree = _tree(client)
    listener = _listener(client, tree["lb"], tree["pool"]).json()
    for task in client.get("/v1/tasks").json()["tasks"]:
        finish(plugin, task["id"])
    assert client.delete(f"/v1/listeners/{listener['id']}").status_code == 202
    assert client.get(f"/v1/listeners/{listener['id']}").json()["provisioning_status"] == "PENDING_DELETE"

    assert client.delete(f"/v1/pools/{tree['pool']}").status_code == 202


def test_the_api_describes_the_references_of_each_type(client: TestClient) -> None:
    types = {t["name"]: t for t in client.get("/v1").json()["resource_types"]}

    assert types["listener"]["references"] == {"default_pool_id": "pool"}
    assert types["pool"]["references"] == {}
