"""Each resource in a change's tree carries its provisioning status and
whether a device holds it, from the plugin's database to the driver."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.unit.conftest import finish
from tether.agent import runner
from tether.common import messages, wire
from tether.common.states import ProvisioningStatus
from tether.plugin.service import Plugin


def _work(plugin: Plugin, task_id: str) -> messages.Work:
    with plugin.engine.connect() as conn:
        payload = conn.execute(
            sa.text("SELECT payload FROM outbox WHERE task_id = :id"), {"id": task_id}
        ).scalar_one()
    return wire.decode_work(payload.encode())


def _statuses(node: messages.DesiredResource) -> dict[str, tuple[str | None, int | None]]:
    found = {node.id: (node.provisioning_status, node.applied_generation)}
    for child in node.children:
        found |= _statuses(child)
    return found


def _rejected_listener(client: TestClient, plugin: Plugin) -> tuple[dict[str, Any], dict[str, Any]]:
    """A load balancer, ACTIVE, and a listener of it whose create the driver refused."""
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    finish(plugin, lb["task"]["id"])
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    error = messages.ReportedError(type="InvalidConfiguration", message="port 80 is taken")
    finish(plugin, listener["task"]["id"], "FAILED", error=error)
    return lb, listener


def test_a_new_root_is_sent_pending_create_and_never_applied(client: TestClient, plugin: Plugin) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    work = _work(plugin, lb["task"]["id"])
    assert _statuses(work.tree) == {lb["id"]: ("PENDING_CREATE", 0)}
    assert (work.resource.provisioning_status, work.resource.applied_generation) == ("PENDING_CREATE", 0)


def test_a_listener_whose_create_failed_is_in_the_next_tree_as_error_never_applied(
    client: TestClient, plugin: Plugin
) -> None:
    lb, listener = _rejected_listener(client, plugin)
    pool = client.post(
        "/v1/pools", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    ).json()
    work = _work(plugin, pool["task"]["id"])
    assert _statuses(work.tree) == {
        lb["id"]: ("ACTIVE", 1),
        listener["id"]: ("ERROR", 0),
        pool["id"]: ("PENDING_CREATE", 0),
    }

    change = runner._change(work, 1)
    rejected = change.tree.find(listener["id"])
    assert rejected is not None and rejected.create_failed and rejected.on_device is False
    assert rejected.provisioning_status is ProvisioningStatus.ERROR
    assert change.tree.on_device and not change.tree.create_failed
    kept = change.tree.without_failed_creates()
    assert [r.id for r in kept.walk()] == [lb["id"], pool["id"]]


def test_an_update_after_a_failed_create_is_sent_pending_update_never_applied(
    client: TestClient, plugin: Plugin
) -> None:
    _, listener = _rejected_listener(client, plugin)
    update = client.put(f"/v1/listeners/{listener['id']}", json={"connection_limit": 10}).json()
    work = _work(plugin, update["task"]["id"])
    assert (work.resource.provisioning_status, work.resource.applied_generation) == ("PENDING_UPDATE", 0)
    change = runner._change(work, 1)
    # Not a failed create any more: the update is the call that creates it.
    assert not change.resource.create_failed and change.resource.on_device is False
    assert change.tree.without_failed_creates().find(listener["id"]) is not None
