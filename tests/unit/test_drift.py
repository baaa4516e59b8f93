"""The drift audit through the whole pipeline in one process: the fake
device forgets or changes what it was given, an agent's audit finds it, and
the plugin repairs it when told to."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.audit import compare
from tether.agent.service import Agent


@pytest.fixture
def device(conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> pathlib.Path:
    """The fake device both agents share; asked for before the agents start."""
    conf.set_override("device_dir", str(tmp_path / "device"), group="driver:fake")
    conf.set_override("audit_interval", 0, group="agent")  # the tests audit when they choose
    return tmp_path / "device"


def _active(client: TestClient, body: dict[str, Any]) -> Any:
    def check() -> Any:
        lb = client.get(f"/v1/loadbalancers/{body['id']}").json()
        return lb if lb["provisioning_status"] == "ACTIVE" else None

    return wait_for(check)


def _audit(pipeline: list[Agent]) -> dict[str, Any]:
    """Every agent audits; the one that audits the shared fake device answers."""
    reports = [agent.auditor.audit() for agent in pipeline]
    found = [r["fake"] for r in reports if "fake" in r]
    assert len(found) == 1, f"one agent audits a shared device, not {len(found)}"
    return found[0]


def test_a_resource_the_device_forgot_is_not_in_sync_and_a_repair_restores_it(
    device: pathlib.Path, client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _active(
        client,
        client.post(
            "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.drift_after_s": "0"}}
        ).json(),
    )
    assert lb["in_sync"] is True and lb["drift"] is None
    found = _audit(pipeline)
    assert found["drifted"] == {lb["id"]: {"missing": True}}
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (body["provisioning_status"], body["in_sync"]) == ("ACTIVE", False)
    assert body["drift"] == {"missing": True, "summary": "missing on the device"}
    # Told to repair, the plugin applies the desired state again, as an update.
    for agent in pipeline:
        agent.auditor.repair = True
    assert _audit(pipeline)["repairing"] == [lb["id"]]
    repaired = _active(client, lb)
    assert (repaired["in_sync"], repaired["drift"]) == (True, None)
    assert (device / f"{lb['id']}.json").exists()
    tasks = client.get("/v1/tasks", params={"resource_id": lb["id"]}).json()["tasks"]
    assert sorted(t["operation"] for t in tasks) == ["create", "update"]
    assert _audit(pipeline)["drifted"] == {}


def test_an_attribute_changed_on_the_device_is_shown_expected_against_found(
    device: pathlib.Path, client: TestClient, pipeline: list[Agent]
) -> None:
    lb = _active(client, client.post("/v1/loadbalancers", json={"provider": "fake", "name": "web"}).json())
    held = device / f"{lb['id']}.json"
    entry = json.loads(held.read_text())
    entry["attributes"]["name"] = "changed-by-hand"
    held.write_text(json.dumps(entry))
    _audit(pipeline)
    body = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert body["in_sync"] is False
    assert body["drift"] == {
        "attributes": {"name": {"expected": "web", "found": "changed-by-hand"}},
        "summary": "differs on the device: name",
    }
    # An update that applies the resource again makes it as desired.
    client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "web"})
    settled = wait_for(lambda: (b := client.get(f"/v1/loadbalancers/{lb['id']}").json())["in_sync"] and b)
    assert settled["drift"] is None


def test_what_the_device_holds_that_no_resource_desires_is_shown_on_the_agent(
    device: pathlib.Path, client: TestClient, pipeline: list[Agent]
) -> None:
    _active(client, client.post("/v1/loadbalancers", json={"provider": "fake"}).json())
    (device / "left-by-hand.json").write_text(json.dumps({"attributes": {}}))
    assert _audit(pipeline)["undesired"] == ["left-by-hand"]
    agents = client.get("/v1/agents", headers={"X-Roles": "admin"}).json()["agents"]
    assert [a["undesired"] for a in agents if a["undesired"]] == [{"fake": ["left-by-hand"]}]


def test_a_change_in_flight_is_not_drift(
    device: pathlib.Path, client: TestClient, pipeline: list[Agent]
) -> None:
    lb = client.post(
        "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.delay_ms": "1500"}}
    ).json()
    assert lb["id"] not in _audit(pipeline)["audited"]
    assert _active(client, lb)["in_sync"] is True


def test_compare_looks_only_at_what_the_device_reports() -> None:
    desired = {
        "a": {"generation": 1, "attributes": {"name": "web", "ports": [80, 443]}},
        "b": {"generation": 2, "attributes": {}},
    }
    held = {"a": {"ports": (80, 443)}, "c": {}}
    assert compare(desired, held) == ({"b": {"missing": True}}, ["c"])
    assert compare(desired, {"a": {"ports": (80,)}, "b": {}})[0] == {
        "a": {"attributes": {"ports": {"expected": [80, 443], "found": [80]}}}
    }
