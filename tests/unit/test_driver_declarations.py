"""The plugin learns each provider's placement and resource types from its
agents' state reports: before any report its tasks wait unpublished and are
published once an agent has declared the provider; a declaration limits the
resource types; what is malformed or contradictory is logged, not fatal."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg

from tether.common.states import TaskState
from tether.plugin.agents.providers import Providers
from tether.plugin.db.models import AgentRecord, Outbox, Task, utcnow
from tether.plugin.service import Plugin

from .conftest import accepted, agent_state

LB_TYPES = ["healthmonitor", "listener", "loadbalancer", "member", "pool"]
SHARED = {"placement": "shared", "resource_types": LB_TYPES}


@pytest.fixture(autouse=True)
def _no_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each question reads what the agents reported last, not a second ago.
    monkeypatch.setattr(Providers, "CACHE", -1.0)


@pytest.fixture
def plugin(conf: cfg.ConfigOpts) -> Iterator[Plugin]:
    """A plugin that no agent has reported to, and that assumes nothing."""
    plugin = Plugin(conf, migrate=True)
    plugin.pipeline.traffic.connected_since = -1e9
    yield plugin
    plugin.dispose()


def _report(plugin: Plugin, agent_id: str, drivers: dict[str, Any] | None, **extra: Any) -> None:
    state = agent_state(agent_id, ["noop"], **extra)
    if drivers is None:
        del state["drivers"]
    else:
        state["drivers"] = drivers
    plugin.pipeline.endpoint.report_state({}, state=state)


def _outbox(plugin: Plugin, task_id: str) -> list[str]:
    with plugin.sessionmaker() as session:
        return list(session.scalars(sa.select(Outbox.routing_key).where(Outbox.task_id == task_id)))


def _task(plugin: Plugin, task_id: str) -> Task:
    with plugin.sessionmaker() as session:
        task = session.get(Task, task_id)
        assert task is not None
        session.expunge(task)
        return task


def test_a_provider_no_agent_declared_waits_unpublished_and_is_published_once_one_has(
    client: TestClient, plugin: Plugin
) -> None:
    answer = accepted(client, "loadbalancers", {"provider": "noop"})
    task_id = answer["task"]["id"]
    assert any("no agent of provider noop has reported" in note for note in answer["task"]["notes"])
    assert plugin.providers.placement("noop") is None
    listed = client.get("/v1/providers", headers={"X-Roles": "admin"}).json()["providers"]
    assert {p["name"]: p["placement"] for p in listed} == {"fake": None, "noop": None}
    # Nobody knows where noop's tasks go: nothing is published anywhere.
    plugin.pipeline.reaper.reap()
    assert _outbox(plugin, task_id) == []
    assert _task(plugin, task_id).state == TaskState.PENDING

    _report(plugin, "agent-1", {"noop": SHARED})

    assert plugin.providers.placement("noop") == "shared"
    plugin.pipeline.reaper.reap()
    assert _outbox(plugin, task_id) == ["noop"]
    # A task accepted now is published at once.
    later = accepted(client, "loadbalancers", {"provider": "noop"})["task"]
    assert _outbox(plugin, later["id"]) == ["noop"]


def test_the_declared_resource_types_are_all_a_provider_takes(client: TestClient, plugin: Plugin) -> None:
    _report(plugin, "agent-1", {"noop": {"placement": "shared", "resource_types": ["pool"]}})
    refused = client.post("/v1/loadbalancers", json={"provider": "noop"})
    assert refused.status_code == 400
    assert refused.json()["error"]["message"] == (
        "Provider 'noop' does not support loadbalancer resources (it supports: pool)."
    )
    unknown = client.post("/v1/loadbalancers", json={"provider": "acme"})
    assert unknown.status_code == 400
    assert "configured providers: fake, noop" in unknown.json()["error"]["message"]


def test_a_host_placed_declaration_binds_roots_to_live_agents(client: TestClient, plugin: Plugin) -> None:
    _report(plugin, "agent-1", {"noop": {"placement": "host", "resource_types": LB_TYPES}})
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    assert _outbox(plugin, lb["task"]["id"]) == ["noop.agent-1"]


def test_the_live_agent_heard_from_last_counts_and_a_disagreement_is_logged(
    client: TestClient, plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    _report(plugin, "agent-1", {"noop": SHARED})
    _report(plugin, "agent-2", {"noop": {"placement": "host", "resource_types": LB_TYPES}})
    with caplog.at_level(logging.ERROR):
        assert plugin.providers.placement("noop") == "host"
    assert "live agents of provider noop declare different placements (host, shared)" in caplog.text
    # agent-2 falls silent: the live one counts, whoever spoke last.
    with plugin.sessionmaker.begin() as session:
        agent = session.get(AgentRecord, "agent-2")
        assert agent is not None
        agent.last_heartbeat = utcnow() - datetime.timedelta(hours=1)
    assert plugin.providers.placement("noop") == "shared"


def test_a_restarted_plugin_remembers_what_agents_declared(conf: cfg.ConfigOpts, plugin: Plugin) -> None:
    _report(plugin, "agent-1", {"noop": SHARED})
    again = Plugin(conf)
    try:
        assert again.providers.placement("noop") == "shared"
    finally:
        again.dispose()


def test_a_malformed_declaration_is_logged_and_the_agent_still_registers(
    plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _report(plugin, "agent-1", {"noop": {"placement": "everywhere", "resource_types": ["pool"]}})
        _report(plugin, "agent-2", ["not", "an", "object"])  # type: ignore[arg-type]
    assert "agent agent-1 reported malformed driver declarations for noop" in caplog.text
    assert "placement" in caplog.text and "everywhere" in caplog.text
    assert "driver declarations must be an object by provider, not list" in caplog.text
    with plugin.sessionmaker() as session:
        assert {a.id for a in session.scalars(sa.select(AgentRecord))} == {"agent-1", "agent-2"}
    assert plugin.providers.placement("noop") is None


def test_an_agent_of_an_older_release_is_named_and_its_waiting_tasks_fail_saying_why(
    client: TestClient, plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        _report(plugin, "old-agent", None)
    assert "agent old-agent declares no driver placement (it is of an older release)" in caplog.text
    task_id = accepted(client, "loadbalancers", {"provider": "noop"})["task"]["id"]
    plugin.pipeline.reaper.reap()
    assert _outbox(plugin, task_id) == []
    with plugin.sessionmaker.begin() as session:
        task = session.get(Task, task_id)
        assert task is not None
        task.deadline = utcnow() - datetime.timedelta(seconds=1)
    plugin.pipeline.reaper.reap()
    failed = _task(plugin, task_id)
    assert failed.state == TaskState.FAILED
    assert failed.error_message == (
        "no agent serving provider noop has declared its driver's placement (agents of an older "
        "release declare none): upgrade an agent of noop, then retry the request"
    )
