"""The plugin refuses, before writing anything, a change no live driver of
its provider declared it can carry out; with no declaration ever reported it
accepts, and the task says so."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg

from tether.agent import service as agent_service
from tether.common.capabilities import (
    AllowedValues,
    Capabilities,
    Constraint,
    MaxChildren,
    UnsupportedAttribute,
)
from tether.plugin.agents.provider_capabilities import UNCHECKED, ProviderCapabilities
from tether.plugin.db.models import AgentRecord, ResourceRecord, Task, utcnow
from tether.plugin.service import Plugin

ACME: list[str | Constraint] = [
    "operating_status",
    AllowedValues("listener", "protocol", {"HTTP", "HTTPS", "TCP"}),
    AllowedValues("pool", "lb_algorithm", {"ROUND_ROBIN"}),
    UnsupportedAttribute("pool", "session_persistence"),
    MaxChildren("pool", "member", 2),
]
ADMIN = {"X-Roles": "admin"}


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each request reads what the agents reported last, not a second ago.
    monkeypatch.setattr(ProviderCapabilities, "CACHE", -1.0)


def _report(
    plugin: Plugin, agent_id: str, declared: list[str | Constraint] | None, ago: float = 0.0, **extra: Any
) -> None:
    state = {
        "agent_id": agent_id,
        "host": "h",
        "providers": ["noop"],
        "version": "t",
        "started_at": utcnow().isoformat(),
        **extra,
    }
    if declared is not None:
        state["capabilities"] = {"noop": Capabilities.of(declared).to_wire()}
    plugin.pipeline.endpoint.report_state({}, state=state)
    if ago:
        with plugin.sessionmaker.begin() as session:
            agent = session.get(AgentRecord, agent_id)
            assert agent is not None
            agent.last_heartbeat = utcnow() - datetime.timedelta(seconds=ago)


def _post(client: TestClient, collection: str, body: dict[str, Any]) -> Any:
    return client.post(f"/v1/{collection}", json=body)


def _created(client: TestClient, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    response = _post(client, collection, body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _rows(plugin: Plugin) -> tuple[int, int]:
    with plugin.sessionmaker() as session:
        return (
            session.scalar(sa.select(sa.func.count()).select_from(ResourceRecord)) or 0,
            session.scalar(sa.select(sa.func.count()).select_from(Task)) or 0,
        )


@pytest.fixture
def lb(client: TestClient) -> Iterator[dict[str, Any]]:
    yield _created(client, "loadbalancers", {"provider": "noop"})


def test_a_listener_no_live_driver_supports_is_refused_with_400_before_anything_is_written(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    _report(plugin, "agent-1", ACME)
    before = _rows(plugin)
    response = _post(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "UnsupportedByProvider"
    assert error["path"] == "$.protocol"
    assert error["message"] == (
        "listener protocol UDP is not supported by provider noop (supported: HTTP, HTTPS, TCP); "
        "use one of those, or a provider that supports it."
    )
    assert _rows(plugin) == before
    listener = _created(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 5}
    )
    assert "notes" not in listener["task"]
    assert client.get(f"/v1/tasks/{listener['task']['id']}").json()["notes"] == []


def test_a_new_root_is_judged_too(client: TestClient, plugin: Plugin) -> None:
    _report(plugin, "agent-1", [UnsupportedAttribute("loadbalancer", "vip_address")])
    response = _post(client, "loadbalancers", {"provider": "noop", "vip_address": "192.0.2.1"})
    assert response.status_code == 400
    assert response.json()["error"]["path"] == "$.vip_address"
    assert "loadbalancer vip_address is not supported by provider noop" in response.json()["error"]["message"]
    _created(client, "loadbalancers", {"provider": "noop"})


def test_with_no_declaration_ever_reported_a_change_is_accepted_and_its_task_says_so(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    # An agent of a release that reports no declaration does not count either.
    _report(plugin, "agent-old", None)
    listener = _created(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
    )
    note = UNCHECKED.format(provider="noop")
    assert listener["task"]["notes"] == [note]
    task = client.get(f"/v1/tasks/{listener['task']['id']}").json()
    assert task["notes"] == [note]
    assert "no agent of provider noop has reported what its driver supports" in note
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["notes"] == [note]


def test_an_update_is_judged_on_its_merged_attributes(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    # Accepted unchecked before any agent reported: sticky sessions it cannot do.
    pool = _created(
        client,
        "pools",
        {
            "loadbalancer_id": lb["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "SOURCE_IP"},
        },
    )
    _report(plugin, "agent-1", ACME)
    renamed = client.put(f"/v1/pools/{pool['id']}", json={"name": "web"})
    assert renamed.status_code == 400
    assert renamed.json()["error"]["path"] == "$.session_persistence"
    assert renamed.json()["error"]["message"].startswith(
        "pool session_persistence is not supported by provider noop; leave it out (or null)"
    )
    algorithm = client.put(
        f"/v1/pools/{pool['id']}", json={"session_persistence": None, "lb_algorithm": "SOURCE_IP"}
    )
    assert algorithm.status_code == 400
    assert algorithm.json()["error"]["path"] == "$.lb_algorithm"
    fixed = client.put(f"/v1/pools/{pool['id']}", json={"session_persistence": None, "name": "web"})
    assert fixed.status_code == 202, fixed.text
    assert client.get(f"/v1/pools/{pool['id']}").json()["name"] == "web"


def test_a_child_past_the_limit_of_its_parent_is_refused_naming_both(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    _report(plugin, "agent-1", ACME)
    pool = _created(
        client, "pools", {"loadbalancer_id": lb["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
    )
    members = [
        _created(client, "members", {"pool_id": pool["id"], "address": "192.0.2.1", "protocol_port": port})
        for port in (1, 2)
    ]
    third = _post(client, "members", {"pool_id": pool["id"], "address": "192.0.2.1", "protocol_port": 3})
    assert third.status_code == 400
    assert third.json()["error"]["path"] == "$.pool_id"
    assert third.json()["error"]["message"] == (
        f"pool {pool['id']} would hold 3 members; provider noop supports at most 2 per pool. Put the "
        "member in another pool, or delete one of its members first."
    )
    # Other children of the pool do not count, nor does a member being deleted.
    _created(
        client,
        "healthmonitors",
        {"pool_id": pool["id"], "type": "TCP", "delay": 1, "timeout": 1, "max_retries": 1},
    )
    assert client.delete(f"/v1/members/{members[0]['id']}").status_code == 202
    _created(client, "members", {"pool_id": pool["id"], "address": "192.0.2.1", "protocol_port": 3})


def test_mixed_driver_versions_accept_what_any_live_agent_supports(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    _report(plugin, "agent-old", [AllowedValues("listener", "protocol", {"HTTP", "TCP"})])
    _report(plugin, "agent-new", [AllowedValues("listener", "protocol", {"HTTP", "HTTPS"})])
    body = {"loadbalancer_id": lb["id"], "protocol": "HTTPS", "protocol_port": 443}
    assert _post(client, "listeners", body).status_code == 202
    udp = _post(client, "listeners", body | {"protocol": "UDP", "protocol_port": 53})
    assert "(supported: HTTP, HTTPS, TCP)" in udp.json()["error"]["message"]
    # The newer agent disabled, then dead: only what the older one supports is accepted.
    assert (
        client.put("/v1/agents/agent-new", json={"admin_state_up": False}, headers=ADMIN).status_code == 200
    )
    assert _post(client, "listeners", body | {"protocol_port": 444}).status_code == 400
    _report(plugin, "agent-new", [AllowedValues("listener", "protocol", {"HTTP", "HTTPS"})], ago=3600)
    with plugin.sessionmaker.begin() as session:
        agent = session.get(AgentRecord, "agent-new")
        assert agent is not None
        agent.admin_state_up = True
    assert _post(client, "listeners", body | {"protocol_port": 445}).status_code == 400


def test_with_every_agent_down_the_one_heard_last_still_counts(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    _report(plugin, "agent-1", [AllowedValues("listener", "protocol", {"TCP"})], ago=7200)
    _report(plugin, "agent-2", [AllowedValues("listener", "protocol", {"HTTP"})], ago=3600)
    body = {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    response = _post(client, "listeners", body)
    assert response.status_code == 400
    assert "(supported: HTTP)" in response.json()["error"]["message"]
    assert _post(client, "listeners", body | {"protocol": "HTTP"}).status_code == 202


def test_a_malformed_declaration_is_ignored_and_the_agent_stays_alive(
    client: TestClient, plugin: Plugin, lb: dict[str, Any]
) -> None:
    _report(plugin, "agent-1", None, capabilities={"noop": {"constraints": [{"kind": "max_value"}]}, "x": {}})
    agent = client.get("/v1/agents/agent-1", headers=ADMIN).json()
    assert agent["alive"] is True
    assert agent["capabilities"] == {}
    listener = _created(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
    )
    assert listener["task"]["notes"] == [UNCHECKED.format(provider="noop")]


def test_operators_see_what_each_agent_and_provider_declared(client: TestClient, plugin: Plugin) -> None:
    _report(plugin, "agent-1", ACME)
    declared = Capabilities.of(ACME).to_wire()
    assert client.get("/v1/agents/agent-1", headers=ADMIN).json()["capabilities"] == {"noop": declared}
    providers = {p["name"]: p for p in client.get("/v1/providers", headers=ADMIN).json()["providers"]}
    assert providers["noop"]["capabilities"] == declared
    assert providers["fake"]["capabilities"] is None


def test_agents_report_what_their_drivers_support(conf: cfg.ConfigOpts, plugin: Plugin) -> None:
    agent = agent_service.Agent(conf, agent_id="agent-1")
    state = agent.state()
    assert state["capabilities"] == {
        "noop": {"features": ["operating_status"], "constraints": []},
        "fake": {"features": ["operating_status"], "constraints": []},
    }
    plugin.pipeline.endpoint.report_state({}, state=state)
    with plugin.sessionmaker() as session:
        row = session.get(AgentRecord, "agent-1")
        assert row is not None and row.capabilities == state["capabilities"]
