"""Cascade deletes on the plugin's side: what DELETE ?cascade=true accepts and
refuses, what it does to the changes waiting on the subtree, and what its
end leaves in the database. The agent's side is in test_agent_cascade.py."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg
from oslo_messaging.notify import _impl_test

from tests.unit.conftest import accepted, claim, finish, task_view, wait_for
from tether.common import messages, wire
from tether.common.states import Outcome
from tether.plugin.db.models import Outbox
from tether.plugin.service import Plugin


def _tree(client: TestClient, plugin: Plugin, done: bool = True) -> dict[str, Any]:
    """A load balancer with a listener, a pool and two members, each applied when ``done``."""
    made: dict[str, Any] = {}
    lb = made["loadbalancer"] = accepted(client, "loadbalancers", {"provider": "noop"})
    parent = {"loadbalancer_id": lb["id"]}
    made["listener"] = accepted(client, "listeners", parent | {"protocol": "TCP", "protocol_port": 80})
    pool = made["pool"] = accepted(
        client, "pools", parent | {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
    )
    for n in (1, 2):
        made[f"member{n}"] = accepted(
            client, "members", {"pool_id": pool["id"], "address": f"10.0.0.{n}", "protocol_port": 80}
        )
    if done:
        for resource in made.values():
            finish(plugin, resource["task"]["id"])
    return made


def _gets(client: TestClient, made: dict[str, Any]) -> dict[str, Any]:
    """Each resource's GET: its provisioning status, or its HTTP status when not 200."""
    paths = {name: f"/v1/{name.rstrip('12')}s/{resource['id']}" for name, resource in made.items()}
    answers = {name: client.get(path) for name, path in paths.items()}
    return {
        name: answer.json()["provisioning_status"] if answer.status_code == 200 else answer.status_code
        for name, answer in answers.items()
    }


def _work(plugin: Plugin, task_id: str) -> messages.Work:
    with plugin.sessionmaker() as session:
        row = session.scalars(sa.select(Outbox).where(Outbox.task_id == task_id)).one()
    return wire.decode_work(row.payload.encode())


def test_a_cascade_delete_is_one_task_that_marks_the_whole_subtree_pending_delete(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    lb = made["loadbalancer"]
    response = client.delete(f"/v1/loadbalancers/{lb['id']}?cascade=true")
    assert response.status_code == 202, response.text
    task = task_view(client, response.json()["task"]["id"])
    assert (task["operation"], task["cascade"], task["resource_id"], task["state"]) == (
        "delete",
        True,
        lb["id"],
        "PENDING",
    )
    assert set(_gets(client, made).values()) == {"PENDING_DELETE"}
    work = _work(plugin, task["id"])
    # Version 2: an agent that knows only version 1 refuses it rather than delete the target alone.
    assert (work.version, work.task.cascade) == (messages.CASCADE_VERSION, True)
    assert {r.id for r in _walk(work.tree)} == {r["id"] for r in made.values()}


def _walk(node: messages.DesiredResource) -> list[messages.DesiredResource]:
    return [node, *(n for child in node.children for n in _walk(child))]


def test_after_a_cascade_delete_succeeds_every_resource_of_its_subtree_answers_404(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    gone = client.delete(f"/v1/pools/{made['pool']['id']}?cascade=true").json()
    finish(plugin, gone["task"]["id"])
    assert _gets(client, made) == {
        "loadbalancer": "ACTIVE",
        "listener": "ACTIVE",
        "pool": 404,
        "member1": 404,
        "member2": 404,
    }
    # Their tasks stay as their history.
    history = client.get(f"/v1/tasks?resource_id={made['member1']['id']}").json()["tasks"]
    assert [t["operation"] for t in history] == ["create"]


@pytest.mark.parametrize(
    "query", ["cascade=yes", "cascade=1", "cascade=True", "cascade=", "cascade=true&cascade=false"]
)
def test_cascade_must_be_true_or_false_once_and_a_refusal_names_it(
    client: TestClient, plugin: Plugin, query: str
) -> None:
    made = _tree(client, plugin)
    response = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?{query}")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "InvalidInput"
    assert "query parameter cascade must be true or false" in error["message"]
    assert set(_gets(client, made).values()) == {"ACTIVE"}


@pytest.mark.parametrize("query", ["", "?cascade=false"])
def test_without_cascade_a_parent_with_children_still_gets_409_pointing_to_it(
    client: TestClient, plugin: Plugin, query: str
) -> None:
    made = _tree(client, plugin)
    pool = made["pool"]
    response = client.delete(f"/v1/pools/{pool['id']}{query}")
    assert response.status_code == 409
    message = response.json()["error"]["message"]
    assert f"member {made['member1']['id']}" in message
    assert f"DELETE /v1/pools/{pool['id']}?cascade=true" in message


def test_a_cascade_delete_of_a_resource_without_children_is_a_plain_delete(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    gone = client.delete(f"/v1/listeners/{made['listener']['id']}?cascade=true").json()
    assert task_view(client, gone["task"]["id"])["cascade"] is False
    work = _work(plugin, gone["task"]["id"])
    assert (work.version, work.task.cascade) == (messages.VERSION, False)


def test_a_cascade_delete_supersedes_the_waiting_changes_of_every_resource_it_removes(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    lb, pool, member = made["loadbalancer"], made["pool"], made["member1"]
    running = client.put(f"/v1/listeners/{made['listener']['id']}", json={"name": "x"}).json()
    claim(plugin, running["task"]["id"])  # on a device: it runs to its end
    waiting = [
        client.put(f"/v1/pools/{pool['id']}", json={"name": "p"}).json(),
        client.put(f"/v1/members/{member['id']}", json={"weight": 5}).json(),
    ]
    gone = client.delete(f"/v1/loadbalancers/{lb['id']}?cascade=true").json()
    delete_id = gone["task"]["id"]
    for change in waiting:
        task = task_view(client, change["task"]["id"])
        assert (task["state"], task["superseded_by"]) == ("SUPERSEDED", delete_id)
    assert task_view(client, running["task"]["id"])["state"] == "RUNNING"
    assert task_view(client, delete_id)["state"] == "QUEUED"
    plugin.pipeline.results.recorder.record(
        [
            messages.Result(
                task_id=running["task"]["id"], attempt=1, outcome=Outcome.SUCCEEDED, agent_id="test-agent"
            )
        ]
    )
    # The update finished under the delete: its resource stays on its way out.
    assert task_view(client, delete_id)["state"] == "PENDING"
    assert set(_gets(client, made).values()) == {"PENDING_DELETE"}


def test_a_cascade_delete_before_the_target_reached_an_agent_finishes_with_no_device_work(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin, done=False)  # the load balancer's create waits for an agent
    gone = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true").json()
    assert task_view(client, gone["task"]["id"])["state"] == "SUCCEEDED"
    for resource in made.values():
        task = task_view(client, resource["task"]["id"])
        assert (task["state"], task["superseded_by"]) == ("SUPERSEDED", gone["task"]["id"])
    assert set(_gets(client, made).values()) == {404}


def test_no_change_under_a_resource_being_cascade_deleted_is_accepted(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true")
    pool = made["pool"]["id"]
    refused = [
        client.post("/v1/members", json={"pool_id": pool, "address": "10.0.0.9", "protocol_port": 80}),
        client.put(f"/v1/members/{made['member1']['id']}", json={"weight": 3}),
        client.delete(f"/v1/members/{made['member2']['id']}"),
        client.delete(f"/v1/pools/{pool}?cascade=true"),
    ]
    assert [r.status_code for r in refused] == [409] * 4
    assert all("being deleted" in r.json()["error"]["message"] for r in refused)


def test_a_failed_cascade_delete_leaves_every_resource_of_its_subtree_in_error_with_the_reason(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    gone = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true").json()
    reason = "no (cascade delete of loadbalancer x stopped at member y; ...)"
    finish(
        plugin,
        gone["task"]["id"],
        "FAILED",
        error=messages.ReportedError(type="DriverError", message=reason),
    )
    assert set(_gets(client, made).values()) == {"ERROR"}
    for name, resource in made.items():
        assert client.get(f"/v1/{name.rstrip('12')}s/{resource['id']}").json()["last_error"] == reason
    # And the tree takes changes again: a new cascade delete, for one.
    again = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true")
    assert again.status_code == 202


def test_an_idempotency_key_stands_for_the_cascade_delete_it_was_sent_with(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    path = f"/v1/loadbalancers/{made['loadbalancer']['id']}"
    key = {"Idempotency-Key": "cascade-1"}
    first = client.delete(f"{path}?cascade=true", headers=key)
    again = client.delete(f"{path}?cascade=true", headers=key)
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (202, "true")
    assert again.json()["task"]["id"] == first.json()["task"]["id"]
    plain = client.delete(path, headers=key)
    assert plain.status_code == 422
    assert f"DELETE {path}?cascade=true" in plain.json()["error"]["message"]


def test_a_cancelled_cascade_delete_restores_every_resource_of_its_subtree(
    client: TestClient, plugin: Plugin
) -> None:
    made = _tree(client, plugin)
    running = client.put(f"/v1/listeners/{made['listener']['id']}", json={"name": "x"}).json()
    claim(plugin, running["task"]["id"])
    gone = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true").json()
    response = client.post(f"/v1/tasks/{gone['task']['id']}/cancel")
    assert response.status_code == 200, response.text
    states = _gets(client, made)
    assert states.pop("listener") == "PENDING_UPDATE"  # its update still runs
    assert set(states.values()) == {"ACTIVE"}


def test_cascade_deletes_follow_the_delete_policy(client: TestClient, plugin: Plugin) -> None:
    made = _tree(client, plugin)
    response = client.delete(
        f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true", headers={"X-Roles": "reader"}
    )
    assert response.status_code == 403
    assert set(_gets(client, made).values()) == {"ACTIVE"}


def test_a_cascade_delete_notifies_the_deletion_of_each_resource(
    conf: cfg.ConfigOpts, plugin: Plugin
) -> None:
    conf.set_override("driver", ["test"], group="oslo_messaging_notifications")
    _impl_test.reset()
    enabled = Plugin(conf)
    try:
        with TestClient(enabled.app) as client:
            made = _tree(client, enabled)
            gone = client.delete(f"/v1/pools/{made['pool']['id']}?cascade=true").json()
            finish(enabled, gone["task"]["id"])

            def deleted() -> list[str]:
                return [
                    n[1]["payload"]["resource_id"]
                    for n in _impl_test.NOTIFICATIONS
                    if n[1]["event_type"].endswith(".deleted")
                ]

            wait_for(lambda: len(deleted()) == 3)
        assert sorted(deleted()) == sorted(made[n]["id"] for n in ("pool", "member1", "member2"))
    finally:
        enabled.notifications.stop()
        _impl_test.reset()
