"""An out-of-tree vendor driver (examples/acme-driver), pip-installed like any
vendor's package, driven end to end through a real plugin and agent."""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import pytest

from .daemons import Database, Deployment
from .rabbitmq import RabbitMQNode

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
        agent_sections={"driver:acme": {"device_dir": appliance, "max_members": 10}},
    )
    deployment.start()
    try:
        http = deployment.http
        lb = http.post("/v1/loadbalancers", json={"provider": "acme", "name": "shop"}).json()
        listener = http.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 443}
        ).json()
        udp = http.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "UDP", "protocol_port": 53}
        ).json()
        assert _settled(deployment, f"/v1/loadbalancers/{lb['id']}")["provisioning_status"] == "ACTIVE"
        assert _settled(deployment, f"/v1/listeners/{listener['id']}")["operating_status"] == "ONLINE"
        refused = _settled(deployment, f"/v1/listeners/{udp['id']}")
        assert refused["provisioning_status"] == "ERROR"
        assert refused["last_error"] == "ACME appliances do not balance UDP; use a TCP listener."
        document = json.loads((appliance / f"{lb['id']}.json").read_text())
        assert [c["attributes"]["protocol_port"] for c in document["children"]] == [443]
        for path in (
            f"/v1/listeners/{udp['id']}",
            f"/v1/listeners/{listener['id']}",
            f"/v1/loadbalancers/{lb['id']}",
        ):
            assert http.delete(path).status_code == 202
            assert _settled(deployment, path) == {"gone": True}
        assert not (appliance / f"{lb['id']}.json").exists()
    finally:
        assert set(deployment.stop().values()) == {0}
