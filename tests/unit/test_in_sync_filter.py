"""``GET /v1/<collection>?in_sync=``: the filter is the ``in_sync`` field,
asked of SQL, over a fixture holding every way a resource can be out of
sync; and each one out of sync says why, with the task behind it."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, claim, finish, report
from tether.common.messages import ReportedError
from tether.plugin.db.models import AgentRecord, ResourceRecord
from tether.plugin.service import Plugin

BROKEN = ReportedError(type="DriverError", message="the device refused it")


def _lb(client: TestClient, **attributes: Any) -> Any:
    return accepted(client, "loadbalancers", {"provider": "noop", **attributes})


@pytest.fixture
def every_case(client: TestClient, plugin: Plugin) -> dict[str, tuple[str, str | None]]:
    """Load balancers (and a listener) by case: id, and the reason each out of sync shows."""
    cases: dict[str, tuple[str, str | None]] = {}

    def settled(name: str) -> Any:
        lb = _lb(client, name=name)
        finish(plugin, lb["task"]["id"])
        return lb

    cases["settled"] = (settled("settled")["id"], None)
    pending = _lb(client, name="pending create")
    cases["pending create"] = (pending["id"], "pending")
    running = _lb(client, name="running")
    claim(plugin, running["task"]["id"])
    cases["running"] = (running["id"], "pending")
    failed = _lb(client, name="failed create")
    finish(plugin, failed["task"]["id"], "FAILED", error=BROKEN)
    cases["failed create"] = (failed["id"], "failed")
    updated = settled("failed update")
    task = client.put(f"/v1/loadbalancers/{updated['id']}", json={"description": "x"}).json()["task"]
    finish(plugin, task["id"], "FAILED", error=BROKEN)
    cases["failed update"] = (updated["id"], "failed")
    undone = settled("undone update")
    task = client.put(f"/v1/loadbalancers/{undone['id']}", json={"description": "x"}).json()["task"]
    finish(plugin, task["id"], "FAILED", error=BROKEN, undone=True)
    cases["undone update"] = (undone["id"], "failed")
    queued = settled("pending update")
    client.put(f"/v1/loadbalancers/{queued['id']}", json={"description": "x"})
    cases["pending update"] = (queued["id"], "pending")
    drifted = settled("drifted")
    cases["drifted"] = (drifted["id"], "drift")
    lost = settled("agent dead")
    cases["agent dead"] = (lost["id"], "agent_dead")
    alive = settled("agent alive")
    cases["agent alive"] = (alive["id"], None)
    listener = accepted(
        client, "listeners", {"loadbalancer_id": lost["id"], "protocol": "TCP", "protocol_port": 80}
    )
    finish(plugin, listener["task"]["id"])
    report(plugin, "agent-dead", ["noop"])
    report(plugin, "agent-alive", ["noop"])
    with plugin.sessionmaker.begin() as session:
        session.get(ResourceRecord, drifted["id"]).drift = {
            "missing": True,
            "summary": "missing on the device",
        }
        session.get(ResourceRecord, lost["id"]).agent_id = "agent-dead"
        session.get(ResourceRecord, alive["id"]).agent_id = "agent-alive"
        session.get(AgentRecord, "agent-dead").alive = False  # as the reaper leaves one it declared dead
    cases["listener of a dead agent"] = (listener["id"], "agent_dead")
    return cases


def _all(client: TestClient, collection: str, query: str = "") -> list[Any]:
    """Every page of ``collection``, two at a time."""
    url: str | None = f"/v1/{collection}?limit=2{query}"
    found: list[Any] = []
    while url:
        answer = client.get(url)
        assert answer.status_code == 200, answer.text
        found += answer.json()[collection]
        links = answer.json()["links"]
        url = links[0]["href"] if links else None
    return found


def test_the_in_sync_filter_agrees_with_the_in_sync_field_over_every_case(
    client: TestClient, every_case: dict[str, tuple[str, str | None]]
) -> None:
    for collection in ("loadbalancers", "listeners"):
        everything = _all(client, collection)
        out = {r["id"] for r in everything if r["in_sync"] is False}
        assert {r["id"] for r in _all(client, collection, "&in_sync=false")} == out
        assert {r["id"] for r in _all(client, collection, "&in_sync=true")} == {
            r["id"] for r in everything
        } - out
    expected_out = {rid for rid, reason in every_case.values() if reason is not None}
    shown = {r["id"]: r for r in _all(client, "loadbalancers") + _all(client, "listeners")}
    assert {rid for rid, r in shown.items() if not r["in_sync"]} == expected_out


def test_each_resource_out_of_sync_says_why_with_the_task_behind_it(
    client: TestClient, every_case: dict[str, tuple[str, str | None]]
) -> None:
    listed = {r["id"]: r for r in _all(client, "loadbalancers", "&in_sync=false")}
    listed |= {r["id"]: r for r in _all(client, "listeners", "&in_sync=false")}
    for case, (rid, reason) in every_case.items():
        if reason is None:
            assert rid not in listed, case
            assert "out_of_sync" not in client.get(f"/v1/loadbalancers/{rid}").json(), case
            continue
        why = listed[rid]["out_of_sync"]
        assert why["reason"] == reason, case
        if reason in ("pending", "failed"):
            task = why["task"]
            assert task is not None and task["href"] == f"/v1/tasks/{task['id']}", case
            state = client.get(task["href"]).json()["state"]
            assert task["state"] == state, case
            assert state == "FAILED" if reason == "failed" else state in ("PENDING", "RUNNING", "QUEUED"), (
                case
            )
    assert listed[every_case["drifted"][0]]["out_of_sync"]["detail"] == "missing on the device"
    assert listed[every_case["failed update"][0]]["out_of_sync"]["detail"] == "the device refused it"
    # The same on a resource's own page.
    lost = every_case["agent dead"][0]
    assert client.get(f"/v1/loadbalancers/{lost}").json()["out_of_sync"]["reason"] == "agent_dead"


def test_in_sync_takes_true_or_false_only(client: TestClient) -> None:
    answer = client.get("/v1/loadbalancers?in_sync=maybe")
    assert answer.status_code == 400
    assert "in_sync must be true or false" in answer.json()["error"]["message"]


def test_the_filter_is_one_statement_of_sql_not_a_scan_in_python(client: TestClient, plugin: Plugin) -> None:
    for _ in range(3):
        _lb(client)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(plugin.read_engine, "before_cursor_execute", seen)
    try:
        assert len(client.get("/v1/loadbalancers?in_sync=false&limit=2").json()["loadbalancers"]) == 2
    finally:
        sa.event.remove(plugin.read_engine, "before_cursor_execute", seen)
    listing = [s for s in statements if "FROM resources" in s and "LIMIT" in s]
    assert len(listing) == 1 and "agents" in listing[0] and "drift IS NULL" in listing[0]
