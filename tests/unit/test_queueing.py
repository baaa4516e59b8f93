"""One change at a time per tree: queueing, coalescing, deletes that fold."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, claim, finish, task_view
from tether.common import messages
from tether.common.states import Outcome
from tether.plugin.service import Plugin


def test_queued_changes_are_dispatched_in_order_as_the_tree_frees_up(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    )
    pool = accepted(
        client, "pools", {"loadbalancer_id": lb["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
    )
    assert [task_view(client, t["task"]["id"])["state"] for t in (lb, listener, pool)] == [
        "PENDING",
        "QUEUED",
        "QUEUED",
    ]
    finish(plugin, lb["task"]["id"])
    assert [task_view(client, t["task"]["id"])["state"] for t in (listener, pool)] == ["PENDING", "QUEUED"]
    finish(plugin, listener["task"]["id"])
    assert task_view(client, pool["task"]["id"])["state"] == "PENDING"


def test_queued_updates_are_dispatched_once_with_the_newest_desired_state(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, lb["task"]["id"])
    first = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()  # dispatched at once
    second = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()
    third = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "c", "description": "x"}).json()
    assert task_view(client, second["task"]["id"])["state"] == "QUEUED"
    finish(plugin, first["task"]["id"])
    carried = task_view(client, third["task"]["id"])
    folded = task_view(client, second["task"]["id"])  # folded into the newest
    assert (carried["state"], carried["generation"]) == ("PENDING", 4)
    assert (folded["state"], folded["superseded_by"]) == ("SUPERSEDED", third["task"]["id"])
    finish(plugin, third["task"]["id"])
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["name"], body["description"], body["in_sync"], body["applied_generation"]) == (
        "c",
        "x",
        True,
        4,
    )


def test_a_delete_while_the_create_is_still_queued_finishes_both_without_device_work(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 80}
    )
    gone = client.delete(f"/v1/listeners/{listener['id']}")
    assert gone.status_code == 202
    assert task_view(client, listener["task"]["id"])["state"] == "SUPERSEDED"
    assert task_view(client, gone.json()["task"]["id"])["state"] == "SUCCEEDED"
    assert client.get(f"/v1/listeners/{listener['id']}").status_code == 404
    assert task_view(client, lb["task"]["id"])["state"] == "PENDING"  # the tree's work goes on


def test_a_delete_of_a_resource_whose_create_was_never_claimed_needs_no_agent(
    client: TestClient, plugin: Plugin
) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})  # PENDING, not claimed
    gone = client.delete(f"/v1/loadbalancers/{lb['id']}").json()
    assert task_view(client, lb["task"]["id"])["state"] == "SUPERSEDED"
    assert task_view(client, gone["task"]["id"])["state"] == "SUCCEEDED"
    assert client.get(f"/v1/loadbalancers/{lb['id']}").status_code == 404


def test_a_delete_after_queued_updates_supersedes_them(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, lb["task"]["id"])
    running = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "a"}).json()
    queued = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()
    finish_first = running["task"]["id"]
    from tests.unit.conftest import claim

    claim(plugin, finish_first)  # the first update is on a device now
    gone = client.delete(f"/v1/loadbalancers/{lb['id']}").json()
    assert (
        task_view(client, queued["task"]["id"])["state"],
        task_view(client, queued["task"]["id"])["superseded_by"],
    ) == ("SUPERSEDED", gone["task"]["id"])
    assert task_view(client, gone["task"]["id"])["state"] == "QUEUED"
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "PENDING_DELETE"


def test_the_queue_of_one_tree_is_bounded(conf: Any, plugin: Plugin) -> None:
    conf.set_override("max_queued_per_tree", 2, group="api")
    with TestClient(Plugin(conf).app) as client:
        lb = accepted(client, "loadbalancers", {"provider": "noop"})
        for port in (80, 81):
            accepted(
                client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": port}
            )
        response = client.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": 82}
        )
    assert response.status_code == 409
    assert (
        "2 changes already wait on this resource tree (the limit is 2)" in response.json()["error"]["message"]
    )


def test_one_batch_of_results_frees_several_trees_and_looks_up_their_queues_at_once(
    client: TestClient, plugin: Plugin
) -> None:
    trees = []
    for port in (80, 81, 82):
        lb = accepted(client, "loadbalancers", {"provider": "noop"})
        listener = accepted(
            client, "listeners", {"loadbalancer_id": lb["id"], "protocol": "TCP", "protocol_port": port}
        )
        trees.append((lb, listener))
    answers = [claim(plugin, lb["task"]["id"]) for lb, _ in trees]
    statements: list[str] = []

    def count(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        statements.append(sql)

    sqlalchemy.event.listen(plugin.engine, "before_cursor_execute", count)
    plugin.pipeline.results.recorder.record(
        [
            messages.Result(
                task_id=lb["task"]["id"],
                attempt=answer["attempt"],
                outcome=Outcome.SUCCEEDED,
                agent_id="test-agent",
            )
            for (lb, _), answer in zip(trees, answers, strict=True)
        ]
    )
    sqlalchemy.event.remove(plugin.engine, "before_cursor_execute", count)
    assert [task_view(client, listener["task"]["id"])["state"] for _, listener in trees] == ["PENDING"] * 3
    # One statement tells which trees have a queue, one loads those queues:
    # two for the batch, not one per tree.
    queue_reads = [s for s in statements if "WHERE tasks.root_id" in s]
    assert len(queue_reads) == 2, queue_reads
