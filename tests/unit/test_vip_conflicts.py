"""No two load balancers on one VIP address and port: a listener reserves
its load balancer's VIP, transport and port; VIPs left unspecified are given
out from [loadbalancer] vip_range, or bind every address, one per port."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import accepted, finish, make_plugin
from tether.common.exceptions import ConfigError, Conflict
from tether.plugin.context import RequestContext
from tether.plugin.lbaas.vip_range import VipRange
from tether.plugin.service import Plugin


def _lb(client: TestClient, **body: Any) -> Any:
    return accepted(client, "loadbalancers", {"provider": "noop"} | body)


def _listener(client: TestClient, lb_id: str, port: int = 80, protocol: str = "HTTP") -> Any:
    return client.post(
        "/v1/listeners", json={"loadbalancer_id": lb_id, "protocol": protocol, "protocol_port": port}
    )


def _as(project: str) -> dict[str, str]:
    return {"X-Project-Id": project}


def test_a_vip_and_port_served_by_another_load_balancer_answers_409_naming_only_the_conflict(
    client: TestClient,
) -> None:
    first = _lb(client, vip_address="10.0.0.5")
    second = _lb(client, vip_address="10.0.0.5")
    assert _listener(client, first["id"]).status_code == 202

    refused = _listener(client, second["id"])

    assert refused.status_code == 409
    message = refused.json()["error"]["message"]
    assert message == (
        "10.0.0.5:80 is already in use by another load balancer; choose another vip_address or protocol_port."
    )
    assert first["id"] not in message
    # Another port of the same address, or the same port of another address, is free.
    assert _listener(client, second["id"], port=81).status_code == 202
    assert _listener(client, _lb(client, vip_address="10.0.0.6")["id"]).status_code == 202


def test_ipv6_vips_are_compared_as_addresses_not_as_text(client: TestClient) -> None:
    assert _listener(client, _lb(client, vip_address="2001:db8::1")["id"], 443).status_code == 202

    refused = _listener(client, _lb(client, vip_address="2001:DB8:0::1")["id"], 443)

    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("[2001:db8::1]:443 is already in use")


def test_tcp_and_udp_on_one_port_do_not_conflict(client: TestClient) -> None:
    lb = _lb(client, vip_address="10.0.0.5")
    assert _listener(client, lb["id"], 53, "TCP").status_code == 202
    assert _listener(client, lb["id"], 53, "UDP").status_code == 202

    again = _listener(client, lb["id"], 53, "TCP")

    assert again.status_code == 409
    assert "another listener of this load balancer" in again.json()["error"]["message"]


def test_another_projects_load_balancer_conflicts_too_and_is_not_named(client: TestClient) -> None:
    theirs = accepted_as(client, "project-b", {"provider": "noop", "vip_address": "192.0.2.1"})
    assert _listener_as(client, "project-b", theirs["id"]).status_code == 202
    ours = accepted_as(client, "project-a", {"provider": "noop", "vip_address": "192.0.2.1"})

    refused = _listener_as(client, "project-a", ours["id"])

    assert refused.status_code == 409
    assert "project-b" not in refused.text and theirs["id"] not in refused.text


def accepted_as(client: TestClient, project: str, body: dict[str, Any]) -> Any:
    made = client.post("/v1/loadbalancers", json=body, headers=_as(project))
    assert made.status_code == 202, made.text
    return made.json()


def _listener_as(client: TestClient, project: str, lb_id: str) -> Any:
    return client.post(
        "/v1/listeners",
        json={"loadbalancer_id": lb_id, "protocol": "TCP", "protocol_port": 80},
        headers=_as(project),
    )


def test_without_a_range_load_balancers_without_a_vip_share_no_port(client: TestClient) -> None:
    first, second = _lb(client), _lb(client)
    assert first["vip_address"] is None
    assert _listener(client, first["id"]).status_code == 202

    refused = _listener(client, second["id"])

    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("Port 80 of every address")
    assert "[loadbalancer] vip_range" in refused.json()["error"]["message"]
    # 0.0.0.0 named outright is the same wildcard.
    assert _listener(client, _lb(client, vip_address="0.0.0.0")["id"]).status_code == 409


def test_a_deleted_listener_frees_its_port(client: TestClient, plugin: Plugin) -> None:
    first = _lb(client, vip_address="10.0.0.5")
    finish(plugin, first["task"]["id"])
    listener = _listener(client, first["id"]).json()
    finish(plugin, listener["task"]["id"])
    second = _lb(client, vip_address="10.0.0.5")
    deleting = client.delete(f"/v1/listeners/{listener['id']}").json()
    # Until the device has let it go, it is still served.
    assert _listener(client, second["id"]).status_code == 409

    finish(plugin, deleting["task"]["id"])

    assert _listener(client, second["id"]).status_code == 202


def test_a_cancelled_listener_create_frees_its_port(client: TestClient) -> None:
    lb = _lb(client, vip_address="10.0.0.5")
    listener = _listener(client, lb["id"]).json()

    assert client.post(f"/v1/tasks/{listener['task']['id']}/cancel").status_code == 200

    assert _listener(client, lb["id"]).status_code == 202


def test_a_refused_listener_leaves_nothing_behind(client: TestClient) -> None:
    lb = _lb(client, vip_address="10.0.0.5")
    assert _listener(client, lb["id"]).status_code == 202
    assert _listener(client, lb["id"]).status_code == 409

    listed = client.get("/v1/listeners").json()["listeners"]
    tasks = client.get("/v1/tasks").json()["tasks"]

    assert len(listed) == 1
    assert [t["resource_type"] for t in tasks].count("listener") == 1


@pytest.fixture
def ranged_plugin(conf: cfg.ConfigOpts) -> Plugin:
    conf.set_override("vip_range", ["10.1.0.0/30", "10.2.0.8-10.2.0.9"], group="loadbalancer")
    return make_plugin(conf)


@pytest.fixture
def ranged(ranged_plugin: Plugin) -> Iterator[TestClient]:
    with TestClient(ranged_plugin.app) as test_client:
        yield test_client


def test_a_load_balancer_without_a_vip_is_given_the_lowest_free_address_of_the_range(
    ranged: TestClient,
) -> None:
    given = [_lb(ranged)["vip_address"] for _ in range(3)]
    assert given == ["10.1.0.1", "10.1.0.2", "10.2.0.8"]
    lb_id = ranged.get("/v1/loadbalancers?limit=1").json()["loadbalancers"][0]["id"]
    assert ranged.get(f"/v1/loadbalancers/{lb_id}").json()["vip_address"] == "10.1.0.1"


def test_an_address_of_the_range_asked_for_is_held_alone(ranged: TestClient) -> None:
    assert _lb(ranged, vip_address="10.1.0.2")["vip_address"] == "10.1.0.2"

    refused = ranged.post("/v1/loadbalancers", json={"provider": "noop", "vip_address": "10.1.0.2"})

    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith("10.1.0.2 is already the vip_address")
    # The allocator passes it by; an address outside the range may still be shared on other ports.
    assert _lb(ranged)["vip_address"] == "10.1.0.1"
    assert _lb(ranged, vip_address="192.0.2.9")["vip_address"] == "192.0.2.9"
    assert _lb(ranged, vip_address="192.0.2.9")["vip_address"] == "192.0.2.9"


def test_an_address_of_the_range_served_before_the_range_was_configured_is_not_given_out(
    client: TestClient, conf: cfg.ConfigOpts
) -> None:
    older = _lb(client, vip_address="10.1.0.1")
    assert _listener(client, older["id"]).status_code == 202
    conf.set_override("vip_range", ["10.1.0.0/30"], group="loadbalancer")

    with TestClient(make_plugin(conf).app) as restarted:
        assert _lb(restarted)["vip_address"] == "10.1.0.2"


def test_an_exhausted_range_answers_409_saying_so(ranged: TestClient) -> None:
    for _ in range(4):
        _lb(ranged)

    refused = ranged.post("/v1/loadbalancers", json={"provider": "noop"})

    assert refused.status_code == 409
    assert refused.json()["error"]["message"].startswith(
        "No address is left to give out: all 4 of [loadbalancer] vip_range (10.1.0.0/30, 10.2.0.8-10.2.0.9)"
    )


def test_a_deleted_load_balancer_gives_its_address_back(ranged: TestClient) -> None:
    first = _lb(ranged)
    _lb(ranged)
    deleting = ranged.delete(f"/v1/loadbalancers/{first['id']}")
    assert deleting.status_code == 202
    # A delete before any agent claimed the create finishes both at once.
    assert ranged.get(f"/v1/loadbalancers/{first['id']}").status_code == 404

    assert _lb(ranged)["vip_address"] == first["vip_address"]


def test_two_listeners_on_one_vip_and_port_in_one_group_commit_one_wins(
    client: TestClient, plugin: Plugin
) -> None:
    lbs = [_lb(client, vip_address="10.0.0.5")["id"] for _ in range(2)]
    rtype = plugin.registry["listener"]
    ctx = RequestContext(project_id="default")
    gate = _hold(plugin)
    futures: list[Future[str]] = [
        plugin.changes.create(
            ctx,
            rtype,
            {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80},
            lambda session, row, task: str(row.id),
        )
        for lb in lbs
    ]
    gate.set()

    outcomes = [_outcome(f) for f in futures]

    assert sorted(type(o).__name__ for o in outcomes) == ["Conflict", "str"]
    assert len(client.get("/v1/listeners").json()["listeners"]) == 1


def test_load_balancers_given_addresses_in_one_group_commit_get_one_each(
    ranged: TestClient, ranged_plugin: Plugin
) -> None:
    rtype = ranged_plugin.registry["loadbalancer"]
    ctx = RequestContext(project_id="default")
    gate = _hold(ranged_plugin)
    futures: list[Future[Any]] = [
        ranged_plugin.changes.create(
            ctx, rtype, {"provider": "noop"}, lambda session, row, task: row.attributes["vip_address"]
        )
        for _ in range(6)
    ]
    gate.set()

    outcomes = [_outcome(f) for f in futures]

    given = [o for o in outcomes if isinstance(o, str)]
    assert sorted(given) == ["10.1.0.1", "10.1.0.2", "10.2.0.8", "10.2.0.9"]
    assert [type(o).__name__ for o in outcomes].count("Conflict") == 2


def _hold(plugin: Plugin) -> threading.Event:
    """Keep the writer busy until the gate opens, so the units submitted
    meanwhile go into one batch."""
    entered, gate = threading.Event(), threading.Event()

    def unit(session: Any) -> None:
        entered.set()
        gate.wait(10)

    plugin.writer.submit(unit)
    assert entered.wait(10)
    return gate


def _outcome(future: Future[Any]) -> Any:
    try:
        return future.result(10)
    except Conflict as exc:
        return exc


def test_a_vip_range_that_cannot_be_read_stops_the_plugin_naming_the_option() -> None:
    with pytest.raises(ConfigError, match=r"\[loadbalancer\] vip_range: '10.0.0.0/33'"):
        VipRange.parse(["10.0.0.0/33"])
    with pytest.raises(ConfigError, match=re.escape("10.0.0.9-10.0.0.1")):
        VipRange.parse(["10.0.0.9-10.0.0.1"])
    assert list(VipRange.parse(["10.0.0.0/30"])) == list(VipRange.parse(["10.0.0.1-10.0.0.2"]))
