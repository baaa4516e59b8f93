"""Cascade deletes on the agent's side: children first, one driver call per
resource (or one for the tree, as the driver declares), each recorded as a
step; a failure part-way names what was removed and what remains, and a
retry goes on from there. The plugin's side is in test_cascade.py."""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent import cascade
from tether.agent.runner import Pending, Runner
from tether.agent.service import Agent
from tether.common import messages
from tether.common.states import Operation, Outcome
from tether.drivers.base import Change, Driver, InProgress, Resource, Step, Steps


@pytest.fixture
def device(conf: cfg.ConfigOpts, tmp_path: Any) -> dict[str, str]:
    """Where the fake driver keeps what it holds, and its journal of calls; asked for before the plugin."""
    paths = {"dir": str(tmp_path / "device"), "journal": str(tmp_path / "journal")}
    conf.set_override("device_dir", paths["dir"], group="driver:fake")
    conf.set_override("journal_path", paths["journal"], group="driver:fake")
    conf.set_override("retry_backoff", 0.05, group="plugin")
    conf.set_override("max_attempts", 2, group="plugin")
    return paths


def _post(client: TestClient, collection: str, body: dict[str, Any], **metadata: str) -> Any:
    response = client.post(f"/v1/{collection}", json=body | ({"metadata": metadata} if metadata else {}))
    assert response.status_code == 202, response.text
    return response.json()


def _tree(client: TestClient, **member1: str) -> dict[str, Any]:
    """A fake load balancer with a listener, a pool and two members, applied;
    ``member1`` is the first member's metadata."""
    made: dict[str, Any] = {}
    lb = made["loadbalancer"] = _post(client, "loadbalancers", {"provider": "fake"})
    parent = {"loadbalancer_id": lb["id"]}
    made["listener"] = _post(client, "listeners", parent | {"protocol": "TCP", "protocol_port": 80})
    pool = made["pool"] = _post(client, "pools", parent | {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"})
    for n, metadata in ((1, member1), (2, {})):
        made[f"member{n}"] = _post(
            client,
            "members",
            {"pool_id": pool["id"], "address": f"10.0.0.{n}", "protocol_port": 80},
            **metadata,
        )
    for resource in made.values():
        assert _finished(client, resource["task"]["id"])["state"] == "SUCCEEDED"
    return made


def _finished(client: TestClient, task_id: str) -> Any:
    def check() -> Any:
        task = client.get(f"/v1/tasks/{task_id}").json()
        return task if task["state"] in ("SUCCEEDED", "FAILED") else None

    return wait_for(check)


def _deletes(journal: str) -> list[tuple[str, int]]:
    with open(journal) as f:
        entries = [json.loads(line) for line in f]
    return [(e["resource_id"], e["attempt"]) for e in entries if e["operation"] == "delete"]


def _cascade(client: TestClient, made: dict[str, Any]) -> Any:
    response = client.delete(f"/v1/loadbalancers/{made['loadbalancer']['id']}?cascade=true")
    assert response.status_code == 202, response.text
    return _finished(client, response.json()["task"]["id"])


def _ids(made: dict[str, Any], *names: str) -> list[str]:
    return [made[name]["id"] for name in names]


def test_a_cascade_delete_calls_the_driver_once_per_resource_children_first(
    device: dict[str, str], client: TestClient, pipeline: list[Agent]
) -> None:
    made = _tree(client)
    task = _cascade(client, made)
    assert task["state"] == "SUCCEEDED", task["error"]
    # The reverse of the order they were built: the newest sibling first, a child before its parent.
    order = _ids(made, "member2", "member1", "pool", "listener", "loadbalancer")
    assert _deletes(device["journal"]) == [(resource_id, 1) for resource_id in order]
    assert [(s["name"].split()[-1], s["state"]) for s in task["steps"]] == [(i, "DONE") for i in order]
    assert os.listdir(device["dir"]) == []
    for name, resource in made.items():
        assert client.get(f"/v1/{name.rstrip('12')}s/{resource['id']}").status_code == 404


def test_a_failure_part_way_names_what_was_removed_and_what_remains(
    device: dict[str, str], client: TestClient, pipeline: list[Agent]
) -> None:
    made = _tree(client, **{"fake.fail": "the member is pinned", "fake.fail_operation": "delete"})
    task = _cascade(client, made)
    assert task["state"] == "FAILED"
    member1, member2, pool, listener, lb = _ids(
        made, "member1", "member2", "pool", "listener", "loadbalancer"
    )
    assert task["error"] == {
        "type": "DriverError",
        "message": f"the member is pinned (cascade delete of loadbalancer {lb} stopped "
        f"at member {member1}; removed from the device: member {member2}; remaining: member {member1}, "
        f"pool {pool}, listener {listener}, loadbalancer {lb})",
    }
    assert [s["state"] for s in task["steps"]] == ["DONE", "FAILED", "PENDING", "PENDING", "PENDING"]
    assert _deletes(device["journal"]) == [(member2, 1)]
    assert sorted(os.listdir(device["dir"])) == sorted(f"{i}.json" for i in (member1, pool, listener, lb))
    for name, resource in made.items():
        body = client.get(f"/v1/{name.rstrip('12')}s/{resource['id']}").json()
        assert (body["provisioning_status"], body["last_error"]) == ("ERROR", task["error"]["message"])


def test_a_retry_goes_on_from_the_resource_that_failed(
    device: dict[str, str], client: TestClient, pipeline: list[Agent]
) -> None:
    # Unreachable on every first attempt: its create is retried too, then the cascade.
    made = _tree(client, **{"fake.unreachable_attempts": "1"})
    task = _cascade(client, made)
    assert (task["state"], task["attempt"]) == ("SUCCEEDED", 2), task["error"]
    member1, member2, pool, listener, lb = _ids(
        made, "member1", "member2", "pool", "listener", "loadbalancer"
    )
    # member2, removed by the first attempt, is skipped by the second.
    assert _deletes(device["journal"]) == [(member2, 1), (member1, 2), (pool, 2), (listener, 2), (lb, 2)]
    assert [s["attempt"] for s in task["steps"]] == [1, 2, 2, 2, 2]
    failed = task["history"][0]
    assert failed["error"]["message"].endswith(
        f"removed from the device: member {member2}; remaining: member {member1}, pool {pool}, "
        f"listener {listener}, loadbalancer {lb})"
    )
    assert os.listdir(device["dir"]) == []


# -- the runner alone, with drivers that record what they are asked ------------------------------------


class Recorder(Driver):
    """Records each delete: the resource, what it holds under it, and what its tree still holds."""

    name = "recorder"
    resource_types = frozenset({"loadbalancer", "listener", "pool", "member"})
    #: resource id -> what its delete answers
    answers: dict[str, Any] = {}

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.calls: list[tuple[str, list[str], list[str], bool]] = []
        self.polls: list[str] = []

    def create(self, change: Change) -> None:
        return None

    def update(self, change: Change) -> None:
        return None

    def delete(self, change: Change) -> InProgress | Steps | None:
        resource = change.resource
        under = [r.id for r in resource.walk()][1:]
        self.calls.append((resource.id, under, [r.id for r in change.tree.walk()], change.cascade))
        answer: InProgress | Steps | None = self.answers.get(resource.id)
        return answer

    def poll(self, change: Change, operation: InProgress) -> InProgress | None:
        self.polls.append(change.resource.id)
        return None


class TreeDeleter(Recorder):
    deletes_tree = True


class StepsPlugin:
    """Plans and records steps as the plugin does, in memory."""

    def __init__(self) -> None:
        self.planned: list[str] = []
        self.reports: list[tuple[int, str]] = []

    def plan_steps(self, task_id: str, attempt: int, agent_id: str, names: list[str]) -> dict[str, Any]:
        self.planned = names
        return {"current": True, "done": []}

    def step(self, task_id: str, attempt: int, agent_id: str, position: int, state: str, *error: Any) -> Any:
        self.reports.append((position, state))
        return {"current": True}


def _node(kind: str, resource_id: str, parent: str | None, *children: messages.DesiredResource) -> Any:
    return messages.DesiredResource(
        type=kind, id=resource_id, project_id="p", parent_id=parent, attributes={}, children=list(children)
    )


def _work(target: str = "lb") -> messages.Work:
    members = [_node("member", m, "pool") for m in ("m1", "m2")]
    tree = _node(
        "loadbalancer", "lb", None, _node("listener", "listener", "lb"), _node("pool", "pool", "lb", *members)
    )
    task = messages.WorkTask(
        id="t",
        operation=Operation.DELETE,
        resource_type="loadbalancer" if target == "lb" else "pool",
        resource_id=target,
        root_id="lb",
        generation=2,
        attempt=1,
        project_id="p",
        provider="recorder",
        cascade=True,
    )
    target_node = tree if target == "lb" else tree.children[1]
    return messages.Work(version=messages.CASCADE_VERSION, task=task, resource=target_node, tree=tree)


def _runner(driver: Driver, plugin: StepsPlugin) -> Runner:
    return Runner({"recorder": driver}, plugin, "agent-1", "host", 30.0)  # type: ignore[arg-type]


def test_each_resource_is_deleted_with_the_tree_as_it_stands_after_those_before_it(
    conf: cfg.ConfigOpts,
) -> None:
    driver, plugin = Recorder(conf, None), StepsPlugin()  # type: ignore[arg-type]
    result = _runner(driver, plugin).apply(_work("pool"), 1)
    assert isinstance(result, messages.Result) and result.outcome == Outcome.SUCCEEDED
    assert driver.calls == [
        ("m2", [], ["lb", "listener", "pool", "m1", "m2"], False),
        ("m1", [], ["lb", "listener", "pool", "m1"], False),
        ("pool", [], ["lb", "listener", "pool"], False),
    ]
    assert plugin.planned == ["delete member m2", "delete member m1", "delete pool pool"]
    assert plugin.reports == [(n, s) for n in range(3) for s in ("RUNNING", "DONE")]


def test_a_driver_that_deletes_trees_gets_one_call_with_the_subtree(conf: cfg.ConfigOpts) -> None:
    driver, plugin = TreeDeleter(conf, None), StepsPlugin()  # type: ignore[arg-type]
    result = _runner(driver, plugin).apply(_work("pool"), 1)
    assert isinstance(result, messages.Result) and result.outcome == Outcome.SUCCEEDED
    assert driver.calls == [("pool", ["m1", "m2"], ["lb", "listener", "pool", "m1", "m2"], True)]
    assert plugin.planned == []


def test_a_resources_own_steps_run_inside_its_step_of_the_cascade(conf: cfg.ConfigOpts) -> None:
    ran: list[str] = []
    driver, plugin = Recorder(conf, None), StepsPlugin()  # type: ignore[arg-type]
    driver.answers = {
        "pool": Steps([Step("drain", lambda: ran.append("drain")), Step("drop", lambda: ran.append("drop"))])
    }
    result = _runner(driver, plugin).apply(_work("pool"), 1)
    assert isinstance(result, messages.Result) and result.outcome == Outcome.SUCCEEDED
    assert ran == ["drain", "drop"]
    assert plugin.planned == ["delete member m2", "delete member m1", "delete pool pool"]


def test_a_resources_long_delete_is_polled_and_the_cascade_goes_on_after_it(conf: cfg.ConfigOpts) -> None:
    driver, plugin = Recorder(conf, None), StepsPlugin()  # type: ignore[arg-type]
    driver.answers = {"pool": InProgress(poll_after=0.01, progress="draining")}
    runner = _runner(driver, plugin)
    pending = runner.apply(_work(), 1)
    assert isinstance(pending, Pending) and pending.change.resource.id == "pool"
    assert [call[0] for call in driver.calls] == ["m2", "m1", "pool"]
    result = runner.poll(pending)
    assert isinstance(result, messages.Result) and result.outcome == Outcome.SUCCEEDED
    assert driver.polls == ["pool"]
    assert [call[0] for call in driver.calls] == ["m2", "m1", "pool", "listener", "lb"]
    assert plugin.reports[-4:] == [(3, "RUNNING"), (3, "DONE"), (4, "RUNNING"), (4, "DONE")]


def test_the_order_is_the_reverse_of_the_order_the_tree_was_built() -> None:
    tree = Resource.from_dict(msgspec.to_builtins(_work().tree))
    assert [r.id for r in cascade.order(tree)] == ["m2", "m1", "pool", "listener", "lb"]
