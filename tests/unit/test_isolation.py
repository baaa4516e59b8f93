"""Project isolation: two projects and an admin against every operation.

Nobody reads, lists, changes, waits on or cancels another project's
resources or tasks; another project's ids answer 404 (not 403, which would
confirm they exist); an Idempotency-Key belongs to its project.
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tether.plugin.api import auth
from tether.plugin.service import Plugin

#: operations anyone may call: probes and the API's own description
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/docs"),
    ("GET", "/v1/docs/oauth2-redirect"),
}
ADMIN_ONLY = {
    ("GET", "/v1/agents"),
    ("GET", "/v1/agents/{agent_id}"),
    ("PUT", "/v1/agents/{agent_id}"),
    ("GET", "/v1/providers"),
    ("GET", "/metrics"),
    ("GET", "/v1/dead-letters"),
    ("POST", "/v1/dead-letters/replay"),
    ("POST", "/v1/dead-letters/purge"),
    *(
        ("POST", f"/v1/{collection}/{{resource_id}}/reapply")
        for collection in ("loadbalancers", "listeners", "pools", "members", "healthmonitors")
    ),
}
CHILD_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "listeners": ("lb", {"protocol": "TCP", "protocol_port": 80}),
    "pools": ("lb", {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}),
    "members": ("pool", {"address": "10.0.0.1", "protocol_port": 80}),
    "healthmonitors": ("pool", {"type": "TCP", "delay": 5, "timeout": 3, "max_retries": 3}),
}
PARENT_KEY = {"lb": "loadbalancer_id", "pool": "pool_id"}
_VIPS = itertools.count(1)


@pytest.fixture
def tokens(conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> dict[str, dict[str, str]]:
    path = tmp_path / "tokens.yaml"
    made = {
        "alice": auth.add_token(path, "project-a", ["member"]),
        "alice-reader": auth.add_token(path, "project-a", ["reader"]),
        "bob": auth.add_token(path, "project-b", ["member"]),
        "admin": auth.add_token(path, "operators", ["admin"]),
    }
    conf.set_override("auth_strategy", "token", group="api")
    conf.set_override("token_file", str(path), group="api")
    return {who: {"X-Auth-Token": token} for who, token in made.items()}


@pytest.fixture
def api(tokens: dict[str, dict[str, str]], conf: cfg.ConfigOpts) -> Iterator[TestClient]:
    with TestClient(Plugin(conf, migrate=True).app) as client:
        yield client


def _tree(api: TestClient, headers: dict[str, str]) -> dict[str, str]:
    """A whole load balancer tree of the caller's project: collection → id."""
    # A VIP of its own: two trees' listeners on one VIP and port would conflict.
    vip = f"192.0.2.{next(_VIPS)}"
    lb = api.post("/v1/loadbalancers", json={"provider": "noop", "vip_address": vip}, headers=headers)
    assert lb.status_code == 202, lb.text
    ids = {"loadbalancers": lb.json()["id"]}
    pool = api.post(
        "/v1/pools",
        json={"loadbalancer_id": ids["loadbalancers"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"},
        headers=headers,
    )
    ids["pools"] = pool.json()["id"]
    parents = {"lb": ids["loadbalancers"], "pool": ids["pools"]}
    for collection, (parent, body) in CHILD_BODIES.items():
        if collection == "pools":
            continue
        made = api.post(
            f"/v1/{collection}", json=body | {PARENT_KEY[parent]: parents[parent]}, headers=headers
        )
        assert made.status_code == 202, made.text
        ids[collection] = made.json()["id"]
    return ids


def _operations(api: TestClient) -> set[tuple[str, str]]:
    document = api.get("/v1/openapi.json").json()
    return {(method.upper(), path) for path, item in document["paths"].items() for method in item}


def test_every_operation_but_the_probes_needs_a_valid_token(api: TestClient) -> None:
    operations = _operations(api)
    assert ("POST", "/v1/tasks/{task_id}/cancel") in operations
    for method, path in sorted(operations - PUBLIC):
        concrete = path.replace("{resource_id}", "x").replace("{task_id}", "x").replace("{agent_id}", "x")
        for headers in ({}, {"X-Auth-Token": "tether_not-a-token"}, {"Authorization": "Bearer nope"}):
            answer = api.request(method, concrete, headers=headers, json={})
            assert answer.status_code == 401, (method, path, headers, answer.text)
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "token" in answer.json()["error"]["message"]
    for method, path in PUBLIC & operations:
        assert api.request(method, path).status_code in (200, 503), path  # 503: not started


def test_another_projects_resources_and_tasks_answer_404_on_every_operation(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    bobs = _tree(api, tokens["bob"])
    bob_task = api.get(f"/v1/loadbalancers/{bobs['loadbalancers']}", headers=tokens["bob"]).json()["task"]
    alice = tokens["alice"]
    tried: set[tuple[str, str]] = set()
    for collection, resource_id in bobs.items():
        item = f"/v1/{collection}/{resource_id}"
        for method, url, body in (
            ("GET", item, None),
            ("GET", item + "?wait=1", None),
            ("PUT", item, {"name": "mine now"}),
            ("DELETE", item, None),
        ):
            answer = api.request(method, url, json=body, headers=alice)
            assert answer.status_code == 404, (method, url, answer.text)
            assert resource_id in answer.json()["error"]["message"]
            tried.add((method, f"/v1/{collection}/{{resource_id}}"))
        listed = api.get(f"/v1/{collection}", headers=alice).json()[collection]
        assert listed == []
        marker = api.get(f"/v1/{collection}?marker={resource_id}", headers=alice)
        assert marker.status_code == 400 and "you can see" in marker.json()["error"]["message"]
        tried.add(("GET", f"/v1/{collection}"))
    # A child cannot be hung under another project's parent.
    for collection, (parent, body) in CHILD_BODIES.items():
        parent_id = bobs["loadbalancers" if parent == "lb" else "pools"]
        answer = api.post(f"/v1/{collection}", json=body | {PARENT_KEY[parent]: parent_id}, headers=alice)
        assert answer.status_code == 404, (collection, answer.text)
        tried.add(("POST", f"/v1/{collection}"))
    tried.add(("POST", "/v1/loadbalancers"))  # creates in the caller's own project only; see below
    filtered = api.get(f"/v1/listeners?loadbalancer_id={bobs['loadbalancers']}", headers=alice)
    assert filtered.json()["listeners"] == []
    task_url = f"/v1/tasks/{bob_task['id']}"
    for method, url in (
        ("GET", task_url),
        ("GET", task_url + "?wait=1"),
        ("POST", task_url + "/cancel"),
        ("POST", task_url + "/retry"),
    ):
        answer = api.request(method, url, headers=alice)
        assert answer.status_code == 404, (method, url, answer.text)
    tried |= {
        ("GET", "/v1/tasks/{task_id}"),
        ("POST", "/v1/tasks/{task_id}/cancel"),
        ("POST", "/v1/tasks/{task_id}/retry"),
    }
    assert api.get("/v1/tasks", headers=alice).json()["tasks"] == []
    assert api.get(f"/v1/tasks?resource_id={bobs['loadbalancers']}", headers=alice).json()["tasks"] == []
    tried |= {("GET", "/v1/tasks"), ("GET", "/v1")}
    # Bob's tree is untouched by all of that.
    assert api.get(task_url, headers=tokens["bob"]).json()["state"] == "PENDING"
    for collection, resource_id in bobs.items():
        shown = api.get(f"/v1/{collection}/{resource_id}", headers=tokens["bob"]).json()
        assert shown["provisioning_status"] == "PENDING_CREATE" and shown.get("name") != "mine now"
    # Every operation of the API is either public, the fleet's, or tried here.
    assert _operations(api) - PUBLIC - ADMIN_ONLY == tried


def test_creates_land_in_the_callers_project_whatever_the_body_says(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    made = api.post(
        "/v1/loadbalancers", json={"provider": "noop", "project_id": "project-b"}, headers=tokens["alice"]
    )
    if made.status_code == 202:
        assert made.json()["project_id"] == "project-a"
    else:
        assert made.status_code == 400, made.text
    assert api.get("/v1/loadbalancers", headers=tokens["bob"]).json()["loadbalancers"] == []


def test_an_admin_sees_and_changes_every_project(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    alices, bobs = _tree(api, tokens["alice"]), _tree(api, tokens["bob"])
    admin = tokens["admin"]
    listed = {lb["id"] for lb in api.get("/v1/loadbalancers", headers=admin).json()["loadbalancers"]}
    assert listed == {alices["loadbalancers"], bobs["loadbalancers"]}
    assert len(api.get("/v1/tasks", headers=admin).json()["tasks"]) == 10
    member = api.put(f"/v1/members/{bobs['members']}", json={"weight": 5}, headers=admin)
    assert member.status_code == 202, member.text
    for method, path in ADMIN_ONLY:
        url = path.replace("{agent_id}", "nobody")
        body = {"admin_state_up": False} if method == "PUT" else None
        if method == "POST" and "dead-letters" in path:
            body = {"all": True, "reason": "an admin may"}
        assert api.request(method, url, json=body, headers=admin).status_code in (200, 404), path


def test_the_fleet_is_for_admins_only(api: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    for who in ("alice", "alice-reader", "bob"):
        for method, path in ADMIN_ONLY:
            url = path.replace("{agent_id}", "agent-1")
            answer = api.request(method, url, json={"admin_state_up": False}, headers=tokens[who])
            assert answer.status_code == 403, (who, method, path, answer.text)
            message = answer.json()["error"]["message"]
            assert "tether:" in message and "roles" in message, message


def test_a_reader_reads_its_project_and_changes_nothing(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    ids = _tree(api, tokens["alice"])
    reader = tokens["alice-reader"]
    lb = api.get(f"/v1/loadbalancers/{ids['loadbalancers']}", headers=reader)
    assert lb.status_code == 200
    assert len(api.get("/v1/tasks", headers=reader).json()["tasks"]) == 5
    refused = [
        api.post("/v1/loadbalancers", json={"provider": "noop"}, headers=reader),
        api.put(f"/v1/loadbalancers/{ids['loadbalancers']}", json={"name": "x"}, headers=reader),
        api.delete(f"/v1/pools/{ids['pools']}", headers=reader),
        api.post(f"/v1/tasks/{lb.json()['task']['id']}/cancel", headers=reader),
    ]
    for answer in refused:
        assert answer.status_code == 403, answer.text
        assert "reader" in answer.json()["error"]["message"]


def test_an_idempotency_key_belongs_to_its_project(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    body = {"provider": "noop", "name": "same"}
    key = {"Idempotency-Key": "create-lb-1"}
    alices = api.post("/v1/loadbalancers", json=body, headers=tokens["alice"] | key)
    bobs = api.post("/v1/loadbalancers", json=body, headers=tokens["bob"] | key)
    assert alices.status_code == bobs.status_code == 202
    assert alices.json()["id"] != bobs.json()["id"]
    assert bobs.json()["project_id"] == "project-b"
    again = api.post("/v1/loadbalancers", json=body, headers=tokens["alice"] | key)
    assert again.json()["id"] == alices.json()["id"]
    assert len(api.get("/v1/loadbalancers", headers=tokens["bob"]).json()["loadbalancers"]) == 1


def test_a_policy_file_overrides_the_defaults(
    api: TestClient, tokens: dict[str, dict[str, str]], conf: cfg.ConfigOpts, tmp_path: pathlib.Path
) -> None:
    assert (
        api.post("/v1/loadbalancers", json={"provider": "noop"}, headers=tokens["alice"]).status_code == 202
    )
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"tether:loadbalancer:create": "rule:admin"\n')
    conf.set_override("policy_file", str(policy_file), group="oslo_policy")
    with TestClient(Plugin(conf).app) as strict:
        refused = strict.post("/v1/loadbalancers", json={"provider": "noop"}, headers=tokens["alice"])
        assert refused.status_code == 403
        assert "tether:loadbalancer:create" in refused.json()["error"]["message"]
        allowed = strict.post("/v1/loadbalancers", json={"provider": "noop"}, headers=tokens["admin"])
        assert allowed.status_code == 202
