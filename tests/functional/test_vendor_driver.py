"""An out-of-tree vendor driver (examples/acme-driver), pip-installed like any
vendor's package, driven end to end through a real plugin and agent, and
under the all-in-one as docs/drivers.md tells a vendor to run it."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import time
from typing import Any

import httpx2
import pytest

from .daemons import Daemon, Database, Deployment, free_port
from .pacing import eventually
from .rabbitmq import RabbitMQNode

REPO = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent

pytestmark = pytest.mark.functional


def _settled(deployment: Deployment, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = deployment.http.get(f"{path}?wait=10")
        if response.status_code == 404:
            return {"gone": True}
        body = response.json()
        if not body["provisioning_status"].startswith("PENDING"):
            return dict(body)
    raise AssertionError(f"{path} still pending:\n{deployment.logs()}")


def test_the_acme_driver_realises_a_tree_on_its_appliance_and_removes_it(
    rabbitmq: RabbitMQNode, database: Database, tmp_path: pathlib.Path
) -> None:
    appliance = tmp_path / "appliance"
    deployment = Deployment(
        tmp_path,
        rabbitmq,
        database,
        agents=1,
        plugin_options={"providers": "noop,fake,acme"},
        agent_options={"providers": "acme"},
        agent_sections={"driver:acme": {"device_dir": appliance, "max_members": 1}},
    )
    deployment.start()
    try:
        http = deployment.http
        # What the plugin judges acme's changes against, once its agent has reported.
        declared = eventually(
            lambda: _declared(deployment, "acme"),
            60,
            "the acme agent reports its capabilities",
            deployment.logs,
        )
        assert {"kind": "max_children", "resource_type": "pool", "child_type": "member", "limit": 1} in (
            declared["constraints"]
        )
        lb = http.post("/v1/loadbalancers", json={"provider": "acme", "name": "shop"}).json()
        assert lb["task"].get("notes") is None, lb
        listener = http.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 443}
        ).json()
        # Refused at accept, before anything is written, instead of an ERROR from the appliance.
        udp = http.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
        )
        assert udp.status_code == 400, udp.text
        assert udp.json()["error"]["path"] == "$.protocol"
        assert udp.json()["error"]["message"] == (
            "listener protocol UDP is not supported by provider acme (supported: HTTP, HTTPS, TCP, "
            "TERMINATED_HTTPS); use one of those, or a provider that supports it."
        )
        assert len(http.get("/v1/listeners").json()["listeners"]) == 1
        pool = http.post(
            "/v1/pools", json={"loadbalancer_id": lb["id"], "protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
        ).json()
        member = {"pool_id": pool["id"], "address": "192.0.2.10", "protocol_port": 80}
        assert http.post("/v1/members", json=member).status_code == 202
        crowded = http.post("/v1/members", json=member | {"protocol_port": 81})
        assert crowded.status_code == 400, crowded.text
        assert crowded.json()["error"]["path"] == "$.pool_id"
        assert "supports at most 1 per pool" in crowded.json()["error"]["message"]
        assert _settled(deployment, f"/v1/loadbalancers/{lb['id']}")["provisioning_status"] == "ACTIVE"
        assert _settled(deployment, f"/v1/listeners/{listener['id']}")["operating_status"] == "ONLINE"
        deployment.wait_settled()
        document = json.loads((appliance / f"{lb['id']}.json").read_text())
        assert [c["attributes"].get("protocol_port") for c in document["children"]] == [443, None]
        assert len(document["children"][1]["children"]) == 1
        members = http.get("/v1/members", params={"pool_id": pool["id"]}).json()["members"]
        for path in (
            *(f"/v1/members/{m['id']}" for m in members),
            f"/v1/pools/{pool['id']}",
            f"/v1/listeners/{listener['id']}",
            f"/v1/loadbalancers/{lb['id']}",
        ):
            assert http.delete(path).status_code == 202
            assert _settled(deployment, path) == {"gone": True}
        assert not (appliance / f"{lb['id']}.json").exists()
    finally:
        assert set(deployment.stop().values()) == {0}


def _declared(deployment: Deployment, provider: str) -> dict[str, Any] | None:
    providers = deployment.http.get("/v1/providers", headers={"X-Roles": "admin"}).json()["providers"]
    return next((p["capabilities"] for p in providers if p["name"] == provider), None)


def _documented_ini() -> str:
    """The all-in-one ini docs/drivers.md gives a vendor, as it is written there."""
    text = (REPO / "docs" / "drivers.md").read_text()
    found = re.search(r"<!-- all-in-one ini:.*?-->\n```ini\n(.*?)```", text, re.DOTALL)
    assert found, "docs/drivers.md lost its all-in-one ini"
    return found.group(1)


@pytest.mark.allinone
def test_a_pip_installed_driver_runs_under_the_all_in_one_with_the_documented_ini(
    tmp_path: pathlib.Path,
) -> None:
    # The vendor's package, built and installed from outside this repository.
    source = tmp_path / "vendor" / "acme-driver"
    shutil.copytree(
        REPO / "examples" / "acme-driver", source, ignore=shutil.ignore_patterns("*.egg-info", "tests")
    )
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, source],
        check=True,
        timeout=300,
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    found = subprocess.run(
        [sys.executable, "-c", "import acme_tether; print(acme_tether.__file__)"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.startswith(str(site)), found.stdout

    state = tmp_path / "acme-try"
    ini = tmp_path / "acme-allinone.ini"
    ini.write_text(_documented_ini().replace("/tmp/acme-try", str(state)))
    port = free_port()
    (tmp_path / "port.ini").write_text(f"[api]\nbind_port = {port}\n")
    allinone = Daemon(
        "allinone",
        [
            str(BIN / "tether-allinone"),
            "--config-file",
            str(ini),
            "--config-file",
            str(tmp_path / "port.ini"),
        ],
        tmp_path / "allinone.log",
    )
    allinone.start(env)
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _answers(url), 60, "the all-in-one's API answers", allinone.log)
        created = subprocess.run(
            [
                str(BIN / "tether"),
                "--url",
                url,
                "loadbalancer",
                "create",
                "--provider",
                "acme",
                "--name",
                "shop",
                "--wait",
                "-f",
                "json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert created.returncode == 0, f"{created.stdout}{created.stderr}\n{allinone.log()}"
        # --wait answers with the finished task.
        task = json.loads(created.stdout)
        assert (task["state"], task["provider"]) == ("SUCCEEDED", "acme"), created.stdout
        assert (state / "appliance" / f"{task['resource_id']}.json").exists(), allinone.log()
    finally:
        assert allinone.stop() == 0, allinone.log()


def _answers(url: str) -> bool:
    try:
        return httpx2.get(f"{url}/v1", timeout=2).status_code == 200
    except httpx2.HTTPError:
        return False
