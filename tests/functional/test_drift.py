"""The drift audit with real agents: a resource removed from the device by
hand is found, reported and repaired, on either database; and the walk
through steps and drift in docs/drivers.md, run as written."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
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
    """Two agents auditing every second and repairing what they find."""
    options = {"audit_interval": 1, "repair_drift": True}
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
    # The device forgets it; an audit finds it missing and the plugin queues an update.
    eventually(lambda: not device.exists(), 60, "the device forgetting it", deployment.logs)

    def repaired() -> Any:
        tasks = deployment.http.get("/v1/tasks", params={"resource_id": lb["id"]}).json()["tasks"]
        return [t for t in tasks if t["operation"] == "update" and t["state"] == "SUCCEEDED"]

    (repair,) = eventually(repaired, 60, "a repair", deployment.logs)
    body = deployment.http.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"], body["drift"]) == ("ACTIVE", True, None)
    assert device.exists(), "the repair did not put the load balancer back on the device"
    plugin_log = deployment.plugin.log()
    assert f"loadbalancer {lb['id']} drifted on the device of agent" in plugin_log
    assert f"task {repair['id']} repairs loadbalancer {lb['id']}: missing on the device" in plugin_log


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
