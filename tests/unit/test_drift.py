"""The drift audit through the whole pipeline in one process: the fake
device forgets or changes what it was given, an agent's audit finds it, and
the plugin repairs it when told to."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import oslo_messaging
import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.audit import Auditor, compare
from tether.agent.service import Agent
from tether.drivers.base import Callbacks
from tether.plugin.service import Plugin
from tether.reference_drivers.noop import NoopDriver


@pytest.fixture
def device(conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> pathlib.Path:
    """The fake device both agents share; asked for before the agents start."""
    conf.set_override("device_dir", str(tmp_path / "device"), group="driver:fake")
    conf.set_override("audit_interval", 3600, group="agent")  # the tests audit when they choose
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


def test_an_agent_reports_only_on_what_it_audits_and_in_the_shape_agreed(
    device: pathlib.Path, client: TestClient, pipeline: list[Agent], plugin: Plugin
) -> None:
    lb = _active(client, client.post("/v1/loadbalancers", json={"provider": "fake"}).json())
    endpoint = plugin.pipeline.endpoint
    auditor, other = sorted(a.agent_id for a in pipeline)
    missing = {lb["id"]: {"missing": True}}
    # Not the agent that audits the shared fake device, or not the provider of the resource.
    assert endpoint.report_drift({}, other, "fake", {lb["id"]: 1}, missing, [], True) == {"repairing": []}
    assert endpoint.report_drift({}, auditor, "noop", {lb["id"]: 1}, missing, [], True) == {"repairing": []}
    # Compared at another generation than the resource has now.
    endpoint.report_drift({}, auditor, "fake", {lb["id"]: 7}, missing, [], False)
    assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["drift"] is None
    for drifted in (
        {lb["id"]: {"attributes": ["name"]}},
        {lb["id"]: "missing"},
        {"not-audited": {"missing": True}},
    ):
        with pytest.raises(oslo_messaging.ExpectedException) as raised:
            endpoint.report_drift({}, auditor, "fake", {lb["id"]: 1}, drifted, [], False)
        assert "report_drift: drifted" in raised.value.__cause__.msg  # type: ignore[union-attr]


class _Plugin:
    timeout = 1.0

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.repairs: list[list[str]] = []

    def audit_targets(self, agent_id: str, provider: str) -> dict[str, Any]:
        self.calls.append("targets")
        return {"audit": True, "resources": {"r": {"generation": 1, "attributes": {"port": 80}}}}

    def report_drift(self, *args: Any) -> dict[str, Any]:
        self.repairs.append(args[-1])
        return {"repairing": args[-1]}


class _Device(NoopDriver):
    """A noop device that lists what it holds otherwise than it was given."""

    def inventory(self) -> dict[str, Any]:
        self.calls.append("inventory")  # type: ignore[attr-defined]
        return {"r": {"port": "80"}}  # listed otherwise than applied: a string


def test_the_audit_asks_what_should_be_there_before_looking_and_repairs_a_difference_once(
    conf: cfg.ConfigOpts, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    driver = _Device(conf, Callbacks())
    driver.calls = calls  # type: ignore[attr-defined]
    plugin = _Plugin(calls)
    auditor = Auditor({"device": driver}, plugin, "agent-1", 60, repair=True)  # type: ignore[arg-type]
    for _ in range(3):
        auditor.audit()
    assert calls[:2] == ["targets", "inventory"]
    # The repair left the same difference: asked for once, then given up on, and said why.
    assert plugin.repairs == [["r"], [], []]
    assert sum("still differs the same way after its repair" in r.getMessage() for r in caplog.records) == 1
