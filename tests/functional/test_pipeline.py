"""The pipeline with real parts: a private RabbitMQ node, tether-plugin and
two tether-agent processes, configured by ini files as an operator would."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import time
from typing import Any

import kombu
import pytest

from .browser import live, resource_status, until
from .daemons import BIN, Database, Deployment, restart_agent
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

FAKE_FAILURES = 50


def _post(deployment: Deployment, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    response = deployment.http.post(f"/v1/{collection}", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _wait_status(
    deployment: Deployment, collection: str, resource_id: str, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = deployment.http.get(f"/v1/{collection}/{resource_id}").json()
        if not body["provisioning_status"].startswith("PENDING"):
            return dict(body)
        time.sleep(0.05)
    raise AssertionError(f"{collection} {resource_id} still PENDING:\n{deployment.logs()}")


def test_five_hundred_resources_end_active_or_in_the_error_the_fake_driver_was_told(
    deployment: Deployment,
) -> None:
    # 400 loadbalancers, 50 of which the fake driver is told to fail ...
    bodies = [{"provider": "noop", "name": f"lb-{i}"} for i in range(350)]
    bodies += [
        {
            "provider": "fake",
            "name": f"doomed-{i}",
            "metadata": {
                "fake.fail": f"no capacity for doomed-{i}",
                "fake.fail_detail": f"rack 7 controller 10.0.0.5 refused doomed-{i}",
                "fake.delay_ms": "20",
            },
        }
        for i in range(FAKE_FAILURES)
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        lbs = list(pool.map(lambda b: _post(deployment, "loadbalancers", b), bodies))
    deployment.wait_settled()

    # ... and 25 full trees: listener, pool, member, health monitor (100 more).
    trees = [lb for lb in lbs if lb["name"].startswith("lb-")][:25]

    def build(lb: dict[str, Any]) -> None:
        # A port each: these load balancers have no VIP address, and so bind every address.
        port = 8000 + int(lb["name"].removeprefix("lb-"))
        listener = _post(
            deployment, "listeners", {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": port}
        )
        _wait_status(deployment, "listeners", listener["id"])
        pool_ = _post(
            deployment,
            "pools",
            {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
        )
        _wait_status(deployment, "pools", pool_["id"])
        member = _post(
            deployment,
            "members",
            {"pool_id": pool_["id"], "address": "192.0.2.10", "protocol_port": 8080, "weight": 5},
        )
        _wait_status(deployment, "members", member["id"])
        monitor = _post(
            deployment,
            "healthmonitors",
            {"pool_id": pool_["id"], "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 2},
        )
        _wait_status(deployment, "healthmonitors", monitor["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(build, trees))
    deployment.wait_settled()

    resources = {
        c: deployment.every(c) for c in ("loadbalancers", "listeners", "pools", "members", "healthmonitors")
    }
    total = sum(len(v) for v in resources.values())
    assert total >= 500
    errors = {}
    for items in resources.values():
        for item in items:
            if item["name"] and item["name"].startswith("doomed-"):
                errors[item["name"]] = item
            else:
                assert (item["provisioning_status"], item["in_sync"]) == ("ACTIVE", True), item
    assert len(errors) == FAKE_FAILURES
    agent_logs = "".join(agent.log() for agent in deployment.agents)
    tasks = {lb["name"]: lb["task"]["id"] for lb in lbs}
    for name, item in errors.items():
        assert item["provisioning_status"] == "ERROR"
        # The user message alone reaches the API; the operator's detail only the agent's log.
        assert item["last_error"] == f"no capacity for {name}"
        task = deployment.http.get(f"/v1/tasks/{tasks[name]}").json()
        assert task["error"] == {"type": "DriverError", "message": f"no capacity for {name}"}
        assert f"rack 7 controller 10.0.0.5 refused {name}" in agent_logs
    pending = deployment.http.get("/v1/tasks", params={"state": "PENDING"}).json()["tasks"]
    assert pending == []
    agents = {t["agent_id"] for t in deployment.http.get("/v1/tasks", params={"limit": 1000}).json()["tasks"]}
    assert agents == {"agent-1", "agent-2"}, "both agents should have taken work"


def test_a_malformed_work_message_is_dead_lettered_and_the_queue_keeps_flowing(
    deployment: Deployment, rabbitmq: RabbitMQNode
) -> None:
    # Confirmed: a publish still in flight when the connection closes can be lost.
    with kombu.Connection(deployment.amqp_url, transport_options={"confirm_publish": True}) as connection:
        producer = kombu.Producer(connection.channel())
        producer.publish(
            b"\x00 not json",
            exchange="tether.work",
            routing_key="noop",
            content_type="application/json",
            delivery_mode=2,
        )
        producer.publish(
            b'{"version": 42, "kind": "work"}',
            exchange="tether.work",
            routing_key="noop",
            content_type="application/json",
            delivery_mode=2,
        )
    lb = _post(deployment, "loadbalancers", {"provider": "noop"})
    assert _wait_status(deployment, "loadbalancers", lb["id"])["provisioning_status"] == "ACTIVE"
    with kombu.Connection(deployment.amqp_url) as connection:
        queue = kombu.Queue("tether.dead-letter", no_declare=True)
        reasons = []
        for _ in range(2):
            message = queue(connection.channel()).get(no_ack=True)
            assert message is not None, deployment.logs()
            reasons.append(message.headers["x-tether-dead-letter-reason"])
    assert any("not JSON" in r for r in reasons)
    assert any("version 42 is unknown" in r for r in reasons)


def test_an_agent_killed_during_a_driver_call_loses_nothing(deployment: Deployment) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake", "metadata": {"fake.crash": "yes"}})
    body = _wait_status(deployment, "loadbalancers", lb["id"], timeout=90)
    assert body["provisioning_status"] == "ACTIVE", deployment.logs()
    dead = [a for a in deployment.agents if not a.alive]
    assert len(dead) == 1, "fake.crash should have killed exactly one agent"
    assert dead[0].wait_exit(5) == -9
    restart_agent(dead[0])


def _step_journal(deployment: Deployment, resource_id: str) -> list[tuple[str, str]]:
    """(action, step) as the fake device saw them, in order."""
    entries = [json.loads(line) for line in deployment.journal.read_text().splitlines()]
    return [(e["action"], e["step"]) for e in entries if e["resource_id"] == resource_id and "step" in e]


def test_an_operation_in_steps_resumes_on_another_agent_after_its_agent_dies_mid_step(
    deployment: Deployment,
) -> None:
    lb = _post(
        deployment,
        "loadbalancers",
        {"provider": "fake", "metadata": {"fake.steps": "5", "fake.crash_step": "3", "fake.step_ms": "20"}},
    )
    body = _wait_status(deployment, "loadbalancers", lb["id"], timeout=90)
    assert body["provisioning_status"] == "ACTIVE", deployment.logs()
    task = deployment.http.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert [(s["state"], s["attempt"]) for s in task["steps"]] == [("DONE", 1)] * 2 + [("DONE", 2)] * 3
    first, resumed = task["steps"][0]["agent_id"], task["steps"][2]["agent_id"]
    assert first != resumed, "the attempt after the kill ran on the agent that died"
    # Steps 1 and 2 reached the device once; step 3, running when its agent died, twice.
    names = [f"fake step {n} of 5" for n in range(1, 6)]
    assert _step_journal(deployment, lb["id"]) == [("apply", name) for name in [*names[:3], *names[2:]]]
    dead = [a for a in deployment.agents if not a.alive]
    assert [a.name for a in dead] == [first]
    assert dead[0].wait_exit(5) == -9
    restart_agent(dead[0])


def test_a_step_failing_for_good_undoes_the_steps_before_it_in_reverse_order(deployment: Deployment) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake"})
    assert _wait_status(deployment, "loadbalancers", lb["id"])["provisioning_status"] == "ACTIVE"
    response = deployment.http.put(
        f"/v1/loadbalancers/{lb['id']}",
        json={
            "name": "v2",
            "metadata": {"fake.steps": "5", "fake.fail_step": "4", "fake.fail": "no VLAN left"},
        },
    )
    assert response.status_code == 202, response.text
    body = _wait_status(deployment, "loadbalancers", lb["id"])
    # Undone in full: the device holds the last applied state, not the new one.
    assert (body["provisioning_status"], body["in_sync"]) == ("ACTIVE", False), deployment.logs()
    task = deployment.http.get(f"/v1/tasks/{response.json()['task']['id']}").json()
    assert task["state"] == "FAILED"
    assert [s["state"] for s in task["steps"]] == ["UNDONE"] * 3 + ["FAILED", "PENDING"]
    names = [f"fake step {n} of 5" for n in range(1, 6)]
    assert _step_journal(deployment, lb["id"]) == [
        *[("apply", name) for name in names[:4]],
        *[("undo", name) for name in reversed(names[:3])],
    ]
    assert task["error"]["message"] == (
        "no VLAN left (step 4 of 5, 'fake step 4 of 5', failed; "
        "undone: fake step 3 of 5, fake step 2 of 5, fake step 1 of 5)"
    )


def test_results_published_while_the_plugin_is_down_are_recorded_when_it_returns(
    deployment: Deployment, rabbitmq: RabbitMQNode, browser: Any
) -> None:
    # The console is open on the resources page throughout, in a real browser.
    browser.get(f"{deployment.base_url}/console/resources")
    until(lambda: live(browser), "the console page's event stream opened")
    browser.execute_script("window.tetherSamePage = true;")  # gone if the page were loaded again
    lbs = [
        # Long enough that the devices finish after the plugin has stopped.
        _post(deployment, "loadbalancers", {"provider": "fake", "metadata": {"fake.delay_ms": "4000"}})
        for _ in range(5)
    ]
    # They appear on the open page as they are accepted.
    until(lambda: all(resource_status(browser, lb["id"]) for lb in lbs), "the new load balancers on the page")
    assert resource_status(browser, lbs[-1]["id"]) == "PENDING_CREATE"
    # Claimed, all five (two agents of four workers), before the plugin goes.
    tasks = [f"/v1/tasks/{lb['task']['id']}" for lb in lbs]
    until(lambda: all(deployment.http.get(t).json()["state"] == "RUNNING" for t in tasks), "all five running")
    # The page's open event stream does not hold the plugin up.
    assert deployment.plugin.stop() == 0
    # The agents finish and publish while nobody records: each work message is
    # acked once its result is confirmed, so an empty work queue after the
    # device has all five means every result was published, and those the
    # plugin's draining stop did not take wait in the results queue.
    vhost = deployment.transport_url.rsplit("/", 1)[1]

    def published() -> bool:
        journal = deployment.journal.read_text().splitlines() if deployment.journal.exists() else []
        if not {lb["id"] for lb in lbs} <= {json.loads(line)["resource_id"] for line in journal}:
            return False
        queues = rabbitmq.rabbitmqctl(
            "-q", "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"
        )
        counts = {line.split()[0]: line.split()[1:] for line in queues.splitlines() if len(line.split()) == 3}
        return counts.get("tether.work.fake") == ["0", "0"] and int(counts["tether.results"][0]) > 0

    until(published, "the agents publishing their results", timeout=30)
    deployment.start_plugin()
    for lb in lbs:
        assert _wait_status(deployment, "loadbalancers", lb["id"])["provisioning_status"] == "ACTIVE"
    # The page reconnected by itself and shows them ACTIVE, without a reload.
    until(
        lambda: all(resource_status(browser, lb["id"]) == "ACTIVE" for lb in lbs),
        "the console showing them ACTIVE after the restart",
    )
    assert browser.execute_script("return window.tetherSamePage === true;")
    if os.environ.get("TETHER_CONSOLE_SCREENSHOT"):
        browser.save_screenshot(os.environ["TETHER_CONSOLE_SCREENSHOT"])


def test_the_pipeline_carries_on_after_the_broker_restarts(
    deployment: Deployment, rabbitmq: RabbitMQNode
) -> None:
    rabbitmq.restart()
    lb = _post(deployment, "loadbalancers", {"provider": "noop"})
    body = _wait_status(deployment, "loadbalancers", lb["id"], timeout=120)
    assert body["provisioning_status"] == "ACTIVE", deployment.logs()


def test_sigterm_lets_an_agent_finish_its_running_call_then_exit(deployment: Deployment) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake", "metadata": {"fake.delay_ms": "3000"}})
    deadline = time.monotonic() + 30
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        task = deployment.http.get(f"/v1/tasks/{lb['task']['id']}").json()
        if task["state"] == "RUNNING":
            break
        time.sleep(0.05)
    holder = next(a for a in deployment.agents if a.name == task["agent_id"])
    assert holder.stop() == 0
    body = _wait_status(deployment, "loadbalancers", lb["id"])
    task = deployment.http.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert body["provisioning_status"] == "ACTIVE"
    assert (task["attempt"], task["agent_id"]) == (1, holder.name), "the call finished where it started"
    holder.start()


def test_a_locked_database_answers_503_and_everything_recovers_when_released(
    rabbitmq: RabbitMQNode, database: Database, tmp_path: Any
) -> None:
    deployment = Deployment(
        tmp_path, rabbitmq, database, agents=1, sections={"database": {"busy_timeout": 0.5}}
    )
    deployment.start()
    try:
        with deployment.lock_database():
            response = deployment.http.post("/v1/loadbalancers", json={"provider": "noop"})
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "1"
        lb = _post(deployment, "loadbalancers", {"provider": "noop"})
        assert _wait_status(deployment, "loadbalancers", lb["id"])["provisioning_status"] == "ACTIVE"
        # Nothing half-written by the refused request: one loadbalancer, one task.
        assert len(deployment.http.get("/v1/loadbalancers").json()["loadbalancers"]) == 1
        assert len(deployment.http.get("/v1/tasks").json()["tasks"]) == 1
    finally:
        assert set(deployment.stop().values()) == {0}


def test_rapid_updates_queue_behind_a_slow_change_and_reach_the_device_once(deployment: Deployment) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake", "metadata": {"fake.delay_ms": "1500"}})
    updates = [
        deployment.http.put(f"/v1/loadbalancers/{lb['id']}", json={"name": f"v{i}"}).json() for i in range(5)
    ]
    assert [u["task"]["state"] for u in updates] == ["QUEUED"] * 5
    body = deployment.http.get(f"/v1/loadbalancers/{lb['id']}?wait=30").json()
    while body["task"]["state"] not in ("SUCCEEDED", "FAILED"):
        body = deployment.http.get(f"/v1/loadbalancers/{lb['id']}?wait=30").json()
    assert (body["name"], body["provisioning_status"], body["in_sync"]) == ("v4", "ACTIVE", True)
    states = [deployment.http.get(f"/v1/tasks/{u['task']['id']}").json() for u in updates]
    assert [t["state"] for t in states] == ["SUPERSEDED"] * 4 + ["SUCCEEDED"]
    assert {t["superseded_by"] for t in states[:4]} == {updates[4]["task"]["id"]}
    applied = [json.loads(line) for line in deployment.journal.read_text().splitlines()]
    assert [a["operation"] for a in applied if a["resource_id"] == lb["id"]] == ["create", "update"]


def test_a_long_device_operation_holds_no_unacked_message_while_the_device_works(
    deployment: Deployment, rabbitmq: RabbitMQNode
) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake", "metadata": {"fake.operation_s": "8"}})
    vhost = deployment.transport_url.rsplit("/", 1)[1]
    queues, task, running_since, settled = "", {"state": "PENDING"}, None, False
    deadline = time.monotonic() + 30
    # RabbitMQ's queue counters (a second old at most here) of a moment the
    # task was running, and after the counters caught up with its claim: no
    # message ready, none unacked.
    while time.monotonic() < deadline and not settled and task["state"] in ("PENDING", "RUNNING"):
        task = deployment.http.get(f"/v1/tasks/{lb['task']['id']}").json()
        if task["state"] == "RUNNING" and running_since is None:
            running_since = time.monotonic()
        queues = rabbitmq.rabbitmqctl(
            "-q", "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"
        )
        counts = {line.split()[0]: line.split()[1:] for line in queues.splitlines() if len(line.split()) == 3}
        settled = (
            task["state"] == "RUNNING"
            and running_since is not None
            and time.monotonic() - running_since > 1.5
            and counts.get("tether.work.fake") == ["0", "0"]
        )
        time.sleep(0.3)
    assert settled, (task, queues)
    assert "fake operation" in (task["progress"] or ""), task
    body = _wait_status(deployment, "loadbalancers", lb["id"], timeout=60)
    assert body["provisioning_status"] == "ACTIVE"


def test_a_cascade_delete_empties_the_device_of_a_whole_tree_children_first(deployment: Deployment) -> None:
    lb = _post(deployment, "loadbalancers", {"provider": "fake"})
    parent = {"loadbalancer_id": lb["id"]}
    listener = _post(deployment, "listeners", parent | {"protocol": "TCP", "protocol_port": 80})
    pool_ = _post(deployment, "pools", parent | {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"})
    members = [
        _post(deployment, "members", {"pool_id": pool_["id"], "address": f"192.0.2.{n}", "protocol_port": 80})
        for n in (1, 2)
    ]
    tree = {"loadbalancers": [lb], "listeners": [listener], "pools": [pool_], "members": members}
    for collection, items in tree.items():
        for item in items:
            assert _wait_status(deployment, collection, item["id"])["provisioning_status"] == "ACTIVE"
    device = deployment.root / "fake-device"
    ids = [item["id"] for items in tree.values() for item in items]
    assert {f"{i}.json" for i in ids} <= set(os.listdir(device))
    # Through the command line, as an operator would.
    deleted = subprocess.run(
        [str(BIN / "tether"), "--url", deployment.base_url, "loadbalancer", "delete", lb["id"]]
        + ["--cascade", "--wait", "-f", "value", "-c", "state"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "SUCCEEDED"), deleted.stderr
    assert not {f"{i}.json" for i in ids} & set(os.listdir(device))
    for collection, items in tree.items():
        for item in items:
            assert deployment.http.get(f"/v1/{collection}/{item['id']}").status_code == 404
    applied = [json.loads(line) for line in deployment.journal.read_text().splitlines()]
    removed = [a["resource_id"] for a in applied if a["operation"] == "delete" and a["resource_id"] in ids]
    assert removed == [members[1]["id"], members[0]["id"], pool_["id"], listener["id"], lb["id"]]
