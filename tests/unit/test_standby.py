"""Active-standby placement, the plugin's side: two agents per root, the
standby kept in step by standby_sync, promoted when the active dies."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg
from oslo_messaging.notify import _impl_test

from tests.unit.conftest import agent_state, make_plugin, wait_for
from tether.common import messages
from tether.common.capabilities import AllowedValues, Capabilities
from tether.common.exceptions import MalformedMessage
from tether.common.states import Outcome
from tether.plugin.db.models import AgentRecord, ResourceRecord, Task, utcnow
from tether.plugin.service import Plugin

PAIRED = {"provider": "haproxy", "vip_address": "10.0.0.10", "topology": "ACTIVE_STANDBY"}


@pytest.fixture
def plugin(conf: cfg.ConfigOpts) -> Plugin:
    conf.set_override("providers", ["noop", "haproxy"], group="plugin")
    return make_plugin(conf)


@pytest.fixture
def client(plugin: Plugin) -> Iterator[TestClient]:
    with TestClient(plugin.app) as test_client:
        yield test_client


def _report(plugin: Plugin, agent_id: str, host: str, ago: float = 0.0, **extra: Any) -> Any:
    state = agent_state(agent_id, ["haproxy"], host=host, addresses={"haproxy": f"192.0.2.{len(agent_id)}"})
    answer = plugin.pipeline.endpoint.report_state({}, state=state | extra)
    if ago:
        with plugin.sessionmaker.begin() as session:
            agent = session.get(AgentRecord, agent_id)
            assert agent is not None
            agent.last_heartbeat = utcnow() - datetime.timedelta(seconds=ago)
    return answer


def _finish(plugin: Plugin, task_id: str, error: str | None = None) -> None:
    """The task's root's active agent runs it and succeeds (or fails with ``error``)."""
    with plugin.sessionmaker() as session:
        task = session.get(Task, task_id)
        assert task is not None
        root = session.get(ResourceRecord, task.root_id)
        assert root is not None and root.agent_id
        agent_id = root.agent_id
    answer = plugin.pipeline.endpoint.claim(
        {},
        task_id=task_id,
        agent_id=agent_id,
        claim_id=f"claim-{time.monotonic()}",
        redelivered=False,
        driver_timeout=60.0,
    )
    assert answer["run"], answer
    plugin.pipeline.results.recorder.record(
        [
            messages.Result(
                task_id=task_id,
                attempt=answer["attempt"],
                outcome=Outcome.FAILED if error else Outcome.SUCCEEDED,
                agent_id=agent_id,
                statuses={} if error else {_resource_of(plugin, task_id): "ONLINE"},
                error=messages.ReportedError(type="InvalidConfiguration", message=error) if error else None,
            )
        ]
    )


def _resource_of(plugin: Plugin, task_id: str) -> str:
    with plugin.sessionmaker() as session:
        task = session.get(Task, task_id)
        assert task is not None
        return task.resource_id


def _sync(plugin: Plugin, agent_id: str, held: dict[str, str] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = plugin.pipeline.standby_endpoint.standby_sync(
        {}, agent_id=agent_id, provider="haproxy", held=held or {}
    )
    return {root["id"]: root for root in answer["roots"]}


def _paired(plugin: Plugin, client: TestClient) -> dict[str, Any]:
    lb = client.post("/v1/loadbalancers", json=PAIRED).json()
    _finish(plugin, lb["task"]["id"])
    return dict(client.get(f"/v1/loadbalancers/{lb['id']}").json())


def _standby_in_step(plugin: Plugin, lb: dict[str, Any]) -> None:
    standby = lb["standby"]["agent_id"]
    given = _sync(plugin, standby)[lb["id"]]
    _sync(plugin, standby, {lb["id"]: given["digest"]})


def test_a_paired_root_is_bound_to_an_active_and_a_standby_on_another_host(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h1")
    _report(plugin, "c", "h2")
    lb = _paired(plugin, client)
    standby = lb["standby"]
    assert lb["agent_id"] in {"a", "b"} and lb["host"] == "h1", lb
    assert standby == {"agent_id": "c", "host": "h2", "in_step": False}
    # A SINGLE root has no standby, and says nothing of one.
    single = client.post("/v1/loadbalancers", json={"provider": "haproxy"}).json()
    assert "standby" not in client.get(f"/v1/loadbalancers/{single['id']}").json()
    # The standby's host keeps its copy: converge is told it is this agent's.
    assert _report(plugin, "c", "h2")["bound"] == {"haproxy": [lb["id"]]}


def test_the_standby_is_given_the_settled_tree_and_shows_in_step_once_it_holds_it(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h2")
    lb = _paired(plugin, client)
    active, standby = lb["agent_id"], lb["standby"]["agent_id"]
    given = _sync(plugin, standby)[lb["id"]]
    assert given["role"] == "standby"
    assert given["peer"] == {"agent_id": active, "host": "h1", "address": "192.0.2.1"}
    assert given["tree"]["id"] == lb["id"] and given["tree"]["attributes"]["topology"] == "ACTIVE_STANDBY"
    # The active is told of its peer, never given the tree.
    assert _sync(plugin, active)[lb["id"]] == {
        "id": lb["id"],
        "role": "active",
        "peer": {"agent_id": standby, "host": "h2", "address": "192.0.2.1"},
    }
    held = _sync(plugin, standby, {lb["id"]: given["digest"]})[lb["id"]]
    assert held["tree"] is None and held["digest"] == given["digest"]  # nothing new to apply
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["in_step"] is True

    # A change: out of step, and no tree while the active applies it ...
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    busy = _sync(plugin, standby, {lb["id"]: given["digest"]})[lb["id"]]
    assert busy["tree"] is None and busy["digest"] is None
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["in_step"] is False
    # ... then the new tree once it has.
    _finish(plugin, listener["task"]["id"])
    after = _sync(plugin, standby, {lb["id"]: given["digest"]})[lb["id"]]
    assert after["digest"] != given["digest"]
    assert [c["id"] for c in after["tree"]["children"]] == [listener["id"]]


def test_after_a_change_failed_on_the_active_the_standby_holds_what_the_active_holds(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h2")
    lb = _paired(plugin, client)
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    _finish(plugin, listener["task"]["id"])
    changed = client.put(f"/v1/listeners/{listener['id']}", json={"connection_limit": 10}).json()
    _finish(plugin, changed["task"]["id"], error="the device refused it")
    assert client.get(f"/v1/listeners/{listener['id']}").json()["provisioning_status"] == "ERROR"
    given = _sync(plugin, lb["standby"]["agent_id"])[lb["id"]]
    (held,) = given["tree"]["children"]
    assert held["attributes"]["connection_limit"] == -1  # the generation the active applied


def test_when_the_active_dies_its_standby_is_promoted_at_once_and_never_shows_offline(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h2")
    lb = _paired(plugin, client)
    active, standby = lb["agent_id"], lb["standby"]["agent_id"]
    _standby_in_step(plugin, lb)
    _report(plugin, "c", "h3")  # a third host for the new standby
    _report(plugin, active, "h1", ago=3600)
    plugin.pipeline.reaper.reap()
    after = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert after["agent_id"] == standby
    assert after["standby"]["agent_id"] == "c" and after["standby"]["in_step"] is False
    assert (after["provisioning_status"], after["operating_status"]) == ("ACTIVE", "ONLINE")
    # In step: nothing to apply again on the promoted agent.
    assert client.get("/v1/tasks", params={"state": "QUEUED"}).json()["tasks"] == []
    assert client.get("/v1/tasks", params={"state": "PENDING"}).json()["tasks"] == []
    # The promoted agent is told it is active, with its new peer.
    assert _sync(plugin, standby)[lb["id"]]["role"] == "active"
    assert _sync(plugin, standby)[lb["id"]]["peer"]["agent_id"] == "c"
    assert _sync(plugin, "c")[lb["id"]]["peer"]["agent_id"] == standby


def test_a_standby_that_was_behind_gets_the_tree_in_full_when_promoted(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h2")
    lb = _paired(plugin, client)
    active, standby = lb["agent_id"], lb["standby"]["agent_id"]
    _report(plugin, active, "h1", ago=3600)
    plugin.pipeline.reaper.reap()
    after = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert after["agent_id"] == standby and after["provisioning_status"] == "PENDING_UPDATE"
    assert after["standby"] == {"agent_id": None, "host": None, "in_step": False}  # no third agent
    pending = client.get("/v1/tasks", params={"state": "PENDING"}).json()["tasks"]
    assert [(t["resource_id"], t["operation"]) for t in pending] == [(lb["id"], "update")]
    with plugin.sessionmaker() as session:
        routed = session.scalars(sa.text("SELECT routing_key FROM outbox")).all()
    assert routed == [f"haproxy.{standby}"]


def test_a_dead_standby_is_replaced_and_a_root_without_one_gets_one_when_an_agent_comes(
    plugin: Plugin, client: TestClient
) -> None:
    _report(plugin, "a", "h1")
    lb = _paired(plugin, client)
    assert lb["standby"]["agent_id"] is None  # no second agent yet
    _report(plugin, "b", "h2")
    plugin.pipeline.reaper.reap()
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["agent_id"] == "b"
    _report(plugin, "c", "h3")
    _report(plugin, "b", "h2", ago=3600)
    plugin.pipeline.reaper.reap()
    after = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (after["agent_id"], after["standby"]["agent_id"]) == ("a", "c")
    assert after["operating_status"] == "ONLINE"


def test_a_disabled_standby_agent_is_replaced(plugin: Plugin, client: TestClient) -> None:
    _report(plugin, "a", "h1")
    _report(plugin, "b", "h2")
    _report(plugin, "c", "h3")
    lb = _paired(plugin, client)
    standby = lb["standby"]["agent_id"]
    plugin.pipeline.reaper.reap()
    response = client.put(
        f"/v1/agents/{standby}", json={"admin_state_up": False}, headers={"X-Roles": "admin"}
    )
    assert response.status_code == 200, response.text
    plugin.pipeline.reaper.reap()
    after = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert after["standby"]["agent_id"] not in (None, standby, after["agent_id"]), after


def test_a_driver_that_cannot_pair_refuses_active_standby_at_accept(
    plugin: Plugin, client: TestClient
) -> None:
    declared = Capabilities.of([AllowedValues("loadbalancer", "topology", {"SINGLE"})])
    _report(plugin, "a", "h1", capabilities={"haproxy": declared.to_wire()})
    response = client.post("/v1/loadbalancers", json=PAIRED)
    assert response.status_code == 400, response.text
    assert "topology" in response.text and "ACTIVE_STANDBY" in response.text and "SINGLE" in response.text
    assert client.post("/v1/loadbalancers", json={"provider": "haproxy"}).status_code == 202


def test_a_shared_providers_root_gets_no_standby(plugin: Plugin, client: TestClient) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop", "topology": "ACTIVE_STANDBY"}).json()
    assert "standby" not in client.get(f"/v1/loadbalancers/{lb['id']}").json()


def test_only_agents_whose_driver_can_pair_hold_a_paired_root(plugin: Plugin, client: TestClient) -> None:
    single = Capabilities.of([AllowedValues("loadbalancer", "topology", {"SINGLE"})]).to_wire()
    paired = Capabilities.of([AllowedValues("loadbalancer", "topology", {"SINGLE", "ACTIVE_STANDBY"})])
    # "a" is the least loaded, but its driver (no keepalived, say) cannot hold either side.
    _report(plugin, "a", "h1", capabilities={"haproxy": single})
    _report(plugin, "b", "h2", capabilities={"haproxy": paired.to_wire()})
    _report(plugin, "c", "h3", capabilities={"haproxy": paired.to_wire()})
    for _ in range(2):
        client.post("/v1/loadbalancers", json={"provider": "haproxy"})  # load on b and c
    lb = _paired(plugin, client)
    assert {lb["agent_id"], lb["standby"]["agent_id"]} == {"b", "c"}, lb


def test_the_topology_cannot_change_after_create(plugin: Plugin, client: TestClient) -> None:
    _report(plugin, "a", "h1")
    lb = _paired(plugin, client)
    response = client.put(f"/v1/loadbalancers/{lb['id']}", json={"topology": "SINGLE"})
    assert response.status_code == 400 and "topology" in response.text, response.text


def test_standby_sync_refuses_malformed_arguments(plugin: Plugin) -> None:
    with pytest.raises(Exception) as raised:
        plugin.pipeline.standby_endpoint.standby_sync({}, agent_id="a", provider="haproxy", held=["x"])
    assert isinstance(raised.value.__cause__, MalformedMessage) and "held" in str(raised.value.__cause__)


def test_a_promotion_is_notified(conf: cfg.ConfigOpts) -> None:
    conf.set_override("providers", ["noop", "haproxy"], group="plugin")
    conf.set_override("driver", ["test"], group="oslo_messaging_notifications")
    enabled = make_plugin(conf)
    try:
        with TestClient(enabled.app) as client:
            _report(enabled, "a", "h1")
            _report(enabled, "b", "h2")
            lb = _paired(enabled, client)
            _report(enabled, lb["agent_id"], "h1", ago=3600)
            _impl_test.reset()
            enabled.pipeline.reaper.reap()

            def failovers() -> list[Any]:
                return [
                    n[1]["payload"]
                    for n in _impl_test.NOTIFICATIONS
                    if n[1]["event_type"].endswith(".failover")
                ]

            (payload,) = wait_for(failovers)
        assert payload == {
            "resource_id": lb["id"],
            "resource_type": "loadbalancer",
            "project_id": lb["project_id"],
            "agent_id": lb["standby"]["agent_id"],
            "dead_agent_id": lb["agent_id"],
            "standby_agent_id": None,
            "in_step": False,
        }
        # Nothing of it went OFFLINE.
        assert not [n for n in _impl_test.NOTIFICATIONS if n[1]["event_type"].endswith(".offline")]
    finally:
        enabled.notifications.stop()
        _impl_test.reset()
