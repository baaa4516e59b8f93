"""The reaper: nothing stays PENDING or RUNNING past its deadline."""

from __future__ import annotations

import datetime
import logging
import time
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.unit.conftest import claim, make_plugin, report
from tether.plugin.db.models import AgentRecord, Outbox, ResourceRecord, Task, utcnow
from tether.plugin.service import Plugin


def _task(client: TestClient, provider: str = "noop") -> Any:
    return client.post("/v1/loadbalancers", json={"provider": provider}).json()


def _report(plugin: Plugin, agent_id: str, providers: list[str], ago: float = 0.0) -> None:
    report(plugin, agent_id, providers)
    if ago:
        with plugin.sessionmaker.begin() as session:
            agent = session.get(AgentRecord, agent_id)
            assert agent is not None
            agent.last_heartbeat = utcnow() - datetime.timedelta(seconds=ago)


def _expire(plugin: Plugin, task_id: str, relayed: bool = True) -> None:
    with plugin.sessionmaker.begin() as session:
        session.execute(
            sa.update(Task)
            .where(Task.id == task_id)
            .values(deadline=utcnow() - datetime.timedelta(seconds=1))
        )
        if relayed:
            session.execute(sa.delete(Outbox).where(Outbox.task_id == task_id))


def test_an_unclaimed_task_with_no_live_agent_fails_naming_the_provider(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _task(client, "fake")
    _report(plugin, "old", ["fake"], ago=3600)
    _expire(plugin, lb["task"]["id"])
    plugin.pipeline.reaper.reap()
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "FAILED"
    assert task["error"]["type"] == "NoLiveAgent"
    assert task["error"]["message"].startswith("no live agent serves provider fake")


def test_a_plugin_cut_off_from_the_broker_takes_no_silence_for_death(
    client: TestClient, plugin: Plugin
) -> None:
    # During a broker restart nobody's reports arrive: agents last known alive
    # are alive still, until the plugin has listened again for twice agent_down_time.
    lb = _task(client, "fake")
    _report(plugin, "a", ["fake"], ago=3600)
    running = _task(client, "noop")
    claim(plugin, running["task"]["id"], agent_id="a")
    _expire(plugin, lb["task"]["id"])
    for listening_since in (None, time.monotonic() - plugin.agents.hearing_time / 2):
        plugin.pipeline.traffic.connected_since = listening_since
        plugin.pipeline.reaper.reap()
        assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"
        assert client.get(f"/v1/tasks/{running['task']['id']}").json()["state"] == "RUNNING"
        assert client.get("/v1/agents/a", headers={"X-Roles": "admin"}).json()["alive"] is True
    plugin.pipeline.traffic.connected_since = time.monotonic() - plugin.agents.hearing_time
    _expire(plugin, lb["task"]["id"])  # it was published again meanwhile, for the agent taken as alive
    plugin.pipeline.reaper.reap()
    assert client.get("/v1/agents/a", headers={"X-Roles": "admin"}).json()["alive"] is False
    abandoned = client.get(f"/v1/tasks/{running['task']['id']}").json()["history"][-1]
    assert abandoned["error"]["type"] == "AgentLost"
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["error"]["type"] == "NoLiveAgent"


def test_an_unclaimed_task_with_a_live_agent_is_published_again(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    _report(plugin, "a", ["noop"])
    _expire(plugin, lb["task"]["id"])
    plugin.pipeline.reaper.reap()
    with plugin.sessionmaker() as session:
        assert session.scalar(sa.select(sa.func.count()).where(Outbox.task_id == lb["task"]["id"])) == 1
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"


def test_a_task_still_waiting_in_the_outbox_is_given_more_time(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    _report(plugin, "a", ["noop"])
    _expire(plugin, lb["task"]["id"], relayed=False)
    plugin.pipeline.reaper.reap()
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    with plugin.sessionmaker() as session:
        deadline = session.get(Task, lb["task"]["id"]).deadline  # type: ignore[union-attr]
    assert task["state"] == "PENDING"
    assert deadline is not None and deadline > utcnow()


def test_the_tasks_of_a_dead_agent_are_retried_elsewhere(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    _report(plugin, "doomed", ["noop"])
    claim(plugin, lb["task"]["id"], agent_id="doomed")
    _report(plugin, "doomed", ["noop"], ago=3600)
    plugin.pipeline.reaper.reap()
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["attempt"]) == ("PENDING", 1)
    assert task["history"][0]["outcome"] == "ABANDONED"
    assert task["history"][0]["error"]["message"] == "agent doomed died during attempt 1"


def test_a_claimed_task_without_a_result_by_its_deadline_is_retried(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _task(client)
    _report(plugin, "slow", ["noop"])
    claim(plugin, lb["task"]["id"], agent_id="slow")
    _expire(plugin, lb["task"]["id"])
    plugin.pipeline.reaper.reap()
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "PENDING"
    assert task["error"]["type"] == "ResultTimeout"


def test_an_unclaimed_task_behind_queued_messages_waits_its_turn_and_is_published_again_once_they_drain(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _task(client)
    _report(plugin, "a", ["noop"])
    queue = plugin.broker.work_queue("noop")
    with plugin.broker.connect() as connection:
        plugin.broker.declare(connection, [queue])
        producer = connection.Producer()
        for n in range(3):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key="noop")
    assert plugin.broker.work_queue_depths(["noop", "missing"]) == {"noop": 3, "missing": None}

    def republished() -> int:
        with plugin.sessionmaker() as session:
            return int(
                session.scalar(sa.select(sa.func.count()).where(Outbox.task_id == lb["task"]["id"])) or 0
            )

    _expire(plugin, lb["task"]["id"])
    plugin.pipeline.reaper.reap()
    assert republished() == 0  # still queued: no duplicate behind the others
    with plugin.sessionmaker() as session:
        deadline = session.get(Task, lb["task"]["id"]).deadline  # type: ignore[union-attr]
    assert deadline is not None and deadline > utcnow()
    with plugin.broker.connect() as connection:
        queue.bind(connection.default_channel).purge()
    _expire(plugin, lb["task"]["id"])
    plugin.pipeline.reaper.reap()
    assert republished() == 1  # the queue drained without it: its message was lost


def test_a_change_published_to_a_host_agent_that_then_dies_is_published_to_the_root_new_agent(
    conf: Any,
) -> None:
    # Accepted while the agent still counted as alive, so it went to that
    # agent's own queue, which nobody else consumes: without being published
    # again it would hold up its tree until pending_timeout.
    conf.set_override("providers", ["noop", "haproxy"], group="plugin")
    plugin = make_plugin(conf)
    with TestClient(plugin.app) as client:
        _report(plugin, "a", ["haproxy"])
        _report(plugin, "b", ["haproxy"])
        lb = client.post("/v1/loadbalancers", json={"provider": "haproxy"}).json()
        task_id = lb["task"]["id"]
        with plugin.sessionmaker.begin() as session:
            routed = session.scalars(sa.select(Outbox.routing_key).where(Outbox.task_id == task_id)).all()
            assert routed == ["haproxy.a"]
            session.execute(sa.delete(Outbox).where(Outbox.task_id == task_id))  # relayed to a's queue
        _report(plugin, "a", ["haproxy"], ago=3600)
        plugin.pipeline.reaper.reap()
        assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["agent_id"] == "b"
        task = client.get(f"/v1/tasks/{task_id}").json()
        assert (task["state"], task["attempt"]) == ("PENDING", 0)
        with plugin.sessionmaker() as session:
            routed = session.scalars(sa.select(Outbox.routing_key).where(Outbox.task_id == task_id)).all()
        assert routed == ["haproxy.b"]
        # The full re-apply of the moved tree waits behind it.
        queued = client.get("/v1/tasks", params={"state": "QUEUED"}).json()["tasks"]
        assert [(t["resource_id"], t["operation"]) for t in queued] == [(lb["id"], "update")]


def test_a_stale_copy_in_the_old_hosts_queue_cannot_take_over_a_moved_task(conf: Any) -> None:
    # The old host was cut off with the message unacked; the broker gave it
    # back to that host's own queue, and the host, back on the network,
    # consumes it while the new host runs the task.
    conf.set_override("providers", ["noop", "haproxy"], group="plugin")
    plugin = make_plugin(conf)
    with TestClient(plugin.app) as client:
        _report(plugin, "a", ["haproxy"])
        _report(plugin, "b", ["haproxy"])
        lb = client.post("/v1/loadbalancers", json={"provider": "haproxy"}).json()
        task_id = lb["task"]["id"]
        _report(plugin, "a", ["haproxy"], ago=3600)
        plugin.pipeline.reaper.reap()
        assert claim(plugin, task_id, agent_id="b")["attempt"] == 1
        answer = claim(plugin, task_id, agent_id="a", redelivered=True)
        assert answer["run"] is False and "belongs to agent b" in answer["reason"], answer
        task = client.get(f"/v1/tasks/{task_id}").json()
        assert (task["state"], task["agent_id"], task["attempt"]) == ("RUNNING", "b", 1)


def test_a_provider_whose_tasks_wait_with_no_live_agent_is_named_once_then_when_served_again(
    client: TestClient, plugin: Plugin, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="tether.plugin.tasks.reaper")
    _task(client, "fake")
    reaper = plugin.pipeline.reaper
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    reaper._watch_providers()  # first seen orphaned: nothing said yet
    clock[0] += plugin.pipeline.core.agents.down_time.total_seconds()
    reaper._watch_providers()
    reaper._watch_providers()
    said = [r.getMessage() for r in caplog.records if "no live agent has served it" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("provider fake has tasks waiting")
    assert "start or enable an agent with fake in [agent] providers" in said[0]
    _report(plugin, "a1", ["fake"])
    reaper._watch_providers()
    assert any(r.getMessage() == "provider fake has a live agent again" for r in caplog.records)


def test_the_trees_a_dead_agent_held_go_offline_at_once_and_show_in_the_metrics(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _task(client)
    listener = client.post(
        "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
    ).json()
    other = _task(client)
    _report(plugin, "gone", ["noop"])
    with plugin.sessionmaker.begin() as session:
        # Bound to the agent, as a host-placed root is, and ONLINE by its last report.
        session.execute(
            sa.update(ResourceRecord)
            .where(ResourceRecord.root_id == lb["id"])
            .values(agent_id="gone", operating_status="ONLINE")
        )
        session.execute(
            sa.update(ResourceRecord)
            .where(ResourceRecord.id == other["id"])
            .values(operating_status="ONLINE")
        )
    _report(plugin, "gone", ["noop"], ago=3600)
    plugin.pipeline.reaper.reap()
    statuses = {
        r["id"]: r["operating_status"]
        for r in (
            client.get(f"/v1/loadbalancers/{lb['id']}").json(),
            client.get(f"/v1/listeners/{listener['id']}").json(),
        )
    }
    assert statuses == {lb["id"]: "OFFLINE", listener["id"]: "OFFLINE"}
    # A tree the dead agent did not hold keeps its status.
    assert client.get(f"/v1/loadbalancers/{other['id']}").json()["operating_status"] == "ONLINE"
    metrics = client.get("/metrics", headers={"X-Roles": "admin"}).text
    assert 'tether_resources{operating_status="OFFLINE",provider="noop"} 2.0' in metrics
