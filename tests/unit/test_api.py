"""The REST API: what it accepts, what it refuses and how it says so."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
import sqlalchemy.exc
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import finish
from tether.plugin.db import queries
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.db.models import Outbox
from tether.plugin.service import Plugin


def _create(client: TestClient, collection: str, body: dict[str, Any], **headers: str) -> Any:
    response = client.post(f"/v1/{collection}", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response


def _finish(plugin: Plugin, task_id: str, outcome: str = "SUCCEEDED") -> None:
    finish(plugin, task_id, outcome)


def test_create_answers_202_with_the_resource_its_task_and_a_location(client: TestClient) -> None:
    response = _create(client, "loadbalancers", {"provider": "noop", "name": "web"})
    body = response.json()
    assert body["provisioning_status"] == "PENDING_CREATE"
    assert body["operating_status"] == "UNKNOWN"
    assert body["in_sync"] is False
    assert body["name"] == "web"
    assert body["admin_state_up"] is True
    assert body["task"]["state"] == "PENDING"
    assert response.headers["Location"] == f"/v1/loadbalancers/{body['id']}"
    assert response.headers["X-Request-Id"].startswith("req-")


def test_accepting_a_change_commits_resource_task_and_outbox_row_together(
    client: TestClient, plugin: Plugin
) -> None:
    body = _create(client, "loadbalancers", {"provider": "noop"}).json()
    with plugin.sessionmaker() as session:
        rows = session.scalars(sa.select(Outbox)).all()
    assert [r.task_id for r in rows] == [body["task"]["id"]]
    assert rows[0].routing_key == "noop"


def test_a_body_breaking_the_schema_gets_400_with_path_and_reason(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", json={"provider": "noop", "vip_address": "nope"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["path"] == "$.vip_address"
    assert "'nope' is not a valid ipv4 or ipv6 value" in error["message"]
    assert error["request_id"] == response.headers["X-Request-Id"]


def test_a_body_that_is_not_json_gets_400(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", content=b"{provider: noop")
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_an_unconfigured_provider_gets_400_listing_the_configured_ones(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", json={"provider": "acme"})
    assert response.status_code == 400
    assert "configured providers: fake, noop" in response.json()["error"]["message"]


def test_an_unknown_parent_gets_404(client: TestClient) -> None:
    response = client.post(
        "/v1/listeners", json={"loadbalancer_id": "missing", "protocol": "TCP", "protocol_port": 80}
    )
    assert response.status_code == 404
    assert "Loadbalancer missing was not found" in response.json()["error"]["message"]


def test_a_change_to_a_busy_tree_is_queued_behind_the_one_in_flight(client: TestClient) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    listener = _create(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    assert listener["task"]["state"] == "QUEUED"
    assert lb["task"]["state"] == "PENDING"


def test_under_the_reject_policy_a_busy_tree_answers_409_naming_the_task(
    conf: cfg.ConfigOpts, plugin: Plugin
) -> None:
    conf.set_override("busy_policy", "reject", group="api")
    with TestClient(Plugin(conf).app) as client:
        lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
        response = client.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
        )
    assert response.status_code == 409
    assert lb["task"]["id"] in response.json()["error"]["message"]


def test_changing_an_immutable_attribute_gets_400_naming_it(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    _finish(plugin, lb["task"]["id"])
    response = client.put(f"/v1/loadbalancers/{lb['id']}", json={"provider": "fake"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("provider of a loadbalancer cannot change")


def test_update_answers_202_pending_update_with_a_new_generation(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop", "name": "a"}).json()
    _finish(plugin, lb["task"]["id"])
    response = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"})
    assert response.status_code == 202
    body = response.json()
    assert (body["provisioning_status"], body["name"], body["generation"]) == ("PENDING_UPDATE", "b", 2)


def test_deleting_a_parent_with_children_gets_409_naming_them(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    _finish(plugin, lb["task"]["id"])
    pool = _create(
        client, "pools", {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    ).json()
    _finish(plugin, pool["task"]["id"])
    response = client.delete(f"/v1/loadbalancers/{lb['id']}")
    assert response.status_code == 409
    assert f"pool {pool['id']}" in response.json()["error"]["message"]


def test_delete_answers_202_pending_delete_and_the_resource_is_gone_after(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    _finish(plugin, lb["task"]["id"])
    response = client.delete(f"/v1/loadbalancers/{lb['id']}")
    assert response.status_code == 202
    assert response.json()["provisioning_status"] == "PENDING_DELETE"
    _finish(plugin, response.json()["task"]["id"])
    assert client.get(f"/v1/loadbalancers/{lb['id']}").status_code == 404
    history = client.get(f"/v1/tasks?resource_id={lb['id']}").json()["tasks"]
    assert [t["operation"] for t in history] == ["create", "delete"]


def test_list_filters_and_pages_with_limit_and_marker(client: TestClient) -> None:
    ids = [
        _create(client, "loadbalancers", {"provider": "noop", "name": f"lb{i}"}).json()["id"]
        for i in range(5)
    ]
    first = client.get("/v1/loadbalancers?limit=2").json()
    assert [lb["id"] for lb in first["loadbalancers"]] == ids[:2]
    assert first["links"][0]["rel"] == "next"
    second = client.get(f"/v1/loadbalancers?limit=2&marker={ids[1]}").json()
    assert [lb["id"] for lb in second["loadbalancers"]] == ids[2:4]
    named = client.get("/v1/loadbalancers?name=lb3").json()["loadbalancers"]
    assert [lb["id"] for lb in named] == [ids[3]]


def test_list_refuses_an_unknown_filter_naming_the_accepted_ones(client: TestClient) -> None:
    response = client.get("/v1/loadbalancers?colour=blue")
    assert response.status_code == 400
    assert "colour" in response.json()["error"]["message"]
    assert "provisioning_status" in response.json()["error"]["message"]


def test_children_list_filters_by_parent_id(client: TestClient, plugin: Plugin) -> None:
    lbs = []
    for _ in range(2):
        lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
        _finish(plugin, lb["task"]["id"])
        lbs.append(lb["id"])
    listener = _create(
        client, "listeners", {"loadbalancer_id": lbs[1], "protocol": "TCP", "protocol_port": 443}
    ).json()
    found = client.get(f"/v1/listeners?loadbalancer_id={lbs[1]}").json()["listeners"]
    assert [item["id"] for item in found] == [listener["id"]]
    assert client.get(f"/v1/listeners?loadbalancer_id={lbs[0]}").json()["listeners"] == []


def test_tasks_filter_by_state_and_by_task_state(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    _finish(plugin, lb["task"]["id"], "FAILED")
    for param in ("state", "task_state"):
        tasks = client.get(f"/v1/tasks?resource_id={lb['id']}&{param}=FAILED").json()["tasks"]
        assert [t["id"] for t in tasks] == [lb["task"]["id"]]
    assert client.get("/v1/tasks?state=SUCCEEDED").json()["tasks"] == []


def test_another_projects_resources_are_not_found(client: TestClient) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}, **{"X-Project-Id": "alpha"}).json()
    other = {"X-Project-Id": "beta"}
    assert client.get(f"/v1/loadbalancers/{lb['id']}", headers=other).status_code == 404
    assert client.get("/v1/loadbalancers", headers=other).json()["loadbalancers"] == []
    assert client.get(f"/v1/tasks/{lb['task']['id']}", headers=other).status_code == 404


def test_discovery_lists_every_type_with_its_schema(client: TestClient) -> None:
    types = {t["name"]: t for t in client.get("/v1").json()["resource_types"]}
    assert types["member"]["parent_key"] == "pool_id"
    assert "address" in types["member"]["schema"]["properties"]
    assert types["loadbalancer"]["collection"] == "/v1/loadbalancers"


def test_an_openapi_document_describes_every_collection(client: TestClient) -> None:
    document = client.get("/v1/openapi.json").json()
    assert "/v1/healthmonitors/{resource_id}" in document["paths"]
    create = document["paths"]["/v1/members"]["post"]
    assert "address" in create["requestBody"]["content"]["application/json"]["schema"]["properties"]


def test_an_unknown_path_gets_a_404_that_says_where_to_look(client: TestClient) -> None:
    response = client.get("/v1/widgets")
    assert response.status_code == 404
    assert "GET /v1 lists the resource types" in response.json()["error"]["message"]


def test_a_body_over_the_limit_gets_413(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert response.status_code == 413
    assert "larger than 1048576 bytes" in response.json()["error"]["message"]


def test_a_body_nested_too_deeply_gets_400_not_500(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", content=b"[" * 100_000)
    assert response.status_code == 400


def test_an_integral_number_is_an_integer_and_a_fraction_is_not(client: TestClient, plugin: Plugin) -> None:
    lb = _create(client, "loadbalancers", {"provider": "noop"}).json()
    _finish(plugin, lb["task"]["id"])
    listener = {"loadbalancer_id": lb["id"], "protocol": "TCP"}
    response = client.post("/v1/listeners", json=listener | {"protocol_port": 80.5})
    assert response.status_code == 400
    assert response.json()["error"]["path"] == "$.protocol_port"
    # JSON has one kind of number: 80.0 is 80, and reaches the driver as the integer.
    response = client.post("/v1/listeners", content=json.dumps(listener | {"protocol_port": 80.0}))
    assert response.status_code == 202, response.text
    assert response.json()["protocol_port"] == 80 and isinstance(response.json()["protocol_port"], int)
    for constant in ("NaN", "Infinity", "1e999"):
        body = json.dumps(listener)[:-1] + f', "protocol_port": {constant}}}'
        refused = client.post("/v1/listeners", content=body)
        assert refused.status_code == 400 and "not valid JSON" in refused.json()["error"]["message"]


def test_a_nul_character_in_a_string_gets_400_with_its_path(client: TestClient) -> None:
    response = client.post("/v1/loadbalancers", json={"provider": "noop", "name": "web\x00"})
    assert response.status_code == 400
    assert response.json()["error"]["path"] == "$.name"


def test_a_project_header_too_long_gets_400(client: TestClient) -> None:
    response = client.get("/v1/loadbalancers", headers={"X-Project-Id": "p" * 256})
    assert response.status_code == 400


def test_conflicting_state_and_task_state_filters_get_400(client: TestClient) -> None:
    assert client.get("/v1/tasks?state=FAILED&task_state=PENDING").status_code == 400


def test_an_unexpected_failure_answers_500_with_the_request_id(
    plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(queries, "list_tasks", broken)
    with TestClient(plugin.app, raise_server_exceptions=False) as client:
        response = client.get("/v1/tasks")
    assert response.status_code == 500
    assert response.json()["error"]["request_id"] == response.headers["X-Request-Id"]
    assert "boom" not in response.text


def test_a_database_that_is_locked_or_down_answers_503_with_retry_after(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(*args: Any, **kwargs: Any) -> None:
        raise DatabaseUnavailable(detail="database is locked", retry_after=1)  # as the engine raises it

    monkeypatch.setattr(queries, "list_tasks", locked)
    response = client.get("/v1/tasks")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
