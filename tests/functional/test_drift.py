"""What devices tell the plugin between changes, with real agents: a
resource removed from the device by hand is found by the drift audit,
reported and repaired, on either database; a status a driver pushes from a
thread of its own shows at once, and each root of the shared fake device is
polled by one agent; and the walk through steps and drift in
docs/drivers.md, run as written."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .daemons import Database, Deployment, running
from .pacing import eventually
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Two agents auditing every second and repairing what they find, and
    polling their devices' status every second."""
    options = {"audit_interval": 1, "repair_drift": True, "status_interval": 1}
    with running(
        Deployment(tmp_path_factory.mktemp("drift"), rabbitmq, database, agent_options=options)
    ) as d:
        yield d


def test_a_resource_removed_from_the_device_by_hand_is_reported_and_repaired(deployment: Deployment) -> None:
    response = deployment.http.post(
        "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.drift_after_s": "1"}}
    )
    assert response.status_code == 202, response.text
    lb = response.json()
    device = deployment.root / "fake-device" / f"{lb['id']}.json"
    eventually(device.exists, 60, "the load balancer on the device", deployment.logs)
    # The device forgets it; an audit finds it missing and the plugin queues an
    # update. The repair can follow within milliseconds, so the file's absence
    # is no moment to wait for: the fake device's log line says it forgot.

    def repaired() -> Any:
        tasks = deployment.http.get("/v1/tasks", params={"resource_id": lb["id"]}).json()["tasks"]
        return [t for t in tasks if t["operation"] == "update" and t["state"] == "SUCCEEDED"]

    (repair,) = eventually(repaired, 60, "a repair", deployment.logs)
    body = deployment.http.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"], body["drift"]) == ("ACTIVE", True, None)
    assert device.exists(), "the repair did not put the load balancer back on the device"
    agent_logs = "".join(agent.log() for agent in deployment.agents)
    assert f"fake.drift_after_s: forgetting {lb['id']} as instructed" in agent_logs
    plugin_log = deployment.plugin.log()
    assert f"loadbalancer {lb['id']} drifted on the device of agent" in plugin_log
    assert f"task {repair['id']} repairs loadbalancer {lb['id']}: missing on the device" in plugin_log


def test_a_status_a_driver_pushes_from_its_own_thread_shows_within_two_seconds(
    deployment: Deployment,
) -> None:
    metadata = {"fake.push_status": "DEGRADED", "fake.push_after_ms": "1000"}
    lb = deployment.http.post("/v1/loadbalancers", json={"provider": "fake", "metadata": metadata}).json()

    def shown() -> Any:
        body = deployment.http.get(f"/v1/loadbalancers/{lb['id']}").json()
        return body["operating_status"] == "DEGRADED" and time.time()

    seen = eventually(shown, 60, "the pushed status", deployment.logs)
    pushed = json.loads((deployment.root / "fake-device" / f"{lb['id']}.json").read_text())["pushed"]
    # The fake device reports no status when polled, and the agents' state
    # reports come every 10 s: only the push can have brought it.
    assert seen - pushed["at"] < 2.0, f"shown {seen - pushed['at']:.1f} s after the push"


def test_each_root_of_a_shared_device_is_polled_by_one_agent(deployment: Deployment) -> None:
    roots = {
        deployment.http.post("/v1/loadbalancers", json={"provider": "fake"}).json()["id"] for _ in range(20)
    }
    polls = deployment.root / "fake-device" / "polls"

    def shared_out() -> Any:
        # Each agent's latest poll; at first one agent may have polled alone.
        shares = [json.loads(p.read_text())["roots"] for p in polls.glob("*.json")]
        mine = [set(share) & roots for share in shares]
        return (
            len(mine) == 2
            and all(mine)
            and not mine[0] & mine[1]
            and mine[0] | mine[1] == roots
            and [len(share) for share in mine]
        )

    eventually(shared_out, 60, "each root polled by exactly one of the two agents", deployment.logs)


@pytest.fixture(scope="module")
def reporting(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Two agents auditing every second, reporting drift and repairing nothing."""
    options = {"audit_interval": 1}
    with running(
        Deployment(tmp_path_factory.mktemp("walkthrough"), rabbitmq, database, agent_options=options)
    ) as d:
        yield d


def test_the_walkthrough_in_drivers_md_runs_as_written(reporting: Deployment, tmp_path: pathlib.Path) -> None:
    text = (ROOT / "docs" / "drivers.md").read_text()
    section = text.split("## Walking through steps and drift", 1)[1]
    script = section.split("```sh\n", 1)[1].split("```", 1)[0]
    env = os.environ | {
        "TETHER_URL": reporting.base_url,
        "HOME": str(tmp_path),  # no cli.ini of the developer's
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{reporting.logs()}"


def test_an_operator_retries_a_failed_change_and_reapplies_what_the_device_lost(
    reporting: Deployment,
) -> None:
    http, admin = reporting.http, {"X-Roles": "admin"}

    def finished(task: Any) -> Any:
        return http.get(f"/v1/tasks/{task['id']}", params={"wait": 30}).json()

    lb = http.post("/v1/loadbalancers", json={"provider": "fake", "name": "a"}).json()
    assert finished(lb["task"])["state"] == "SUCCEEDED"
    held = reporting.root / "fake-device" / f"{lb['id']}.json"
    # The device's storage breaks: a directory where the configuration goes.
    held.unlink()
    held.mkdir()
    update = http.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "b"}).json()
    failed = finished(update["task"])
    assert failed["state"] == "FAILED", failed
    held.rmdir()
    retry = http.post(f"/v1/tasks/{failed['id']}/retry", json={"reason": "storage fixed"})
    assert retry.status_code == 202, retry.text
    assert finished(retry.json())["state"] == "SUCCEEDED"
    assert json.loads(held.read_text())["attributes"]["name"] == "b"
    # The device loses it; the audit finds it missing and lists it out of sync.
    held.unlink()

    def out_of_sync() -> Any:
        listed = http.get("/v1/loadbalancers", params={"in_sync": "false"}).json()["loadbalancers"]
        return [r["out_of_sync"] for r in listed if r["id"] == lb["id"]]

    (why,) = eventually(out_of_sync, 30, "the audit finding it missing", reporting.logs)
    assert why == {"reason": "drift", "detail": "missing on the device", "task": None}
    reapply = http.post(f"/v1/loadbalancers/{lb['id']}/reapply", json={"reason": "lost"}, headers=admin)
    assert reapply.status_code == 202, reapply.text
    done = finished(reapply.json())
    assert done["state"] == "SUCCEEDED" and [a["action"] for a in done["actions"]] == ["reapply"]
    assert held.exists()
    body = http.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"], body["name"]) == ("ACTIVE", True, "b")
    # The filter agrees with the field on this database too.
    listed = http.get("/v1/loadbalancers", params={"limit": 1000}).json()["loadbalancers"]
    for wanted in (True, False):
        filtered = http.get("/v1/loadbalancers", params={"limit": 1000, "in_sync": str(wanted).lower()})
        assert {r["id"] for r in filtered.json()["loadbalancers"]} == {
            r["id"] for r in listed if r["in_sync"] is wanted
        }
