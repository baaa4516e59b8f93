"""oslo.messaging notifications of task and resource state changes."""

from __future__ import annotations

import datetime
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg
from oslo_messaging.notify import _impl_test

from tests.unit.conftest import finish, make_plugin, report, wait_for
from tether.plugin.db.models import AgentRecord, ResourceRecord, utcnow
from tether.plugin.service import Plugin


def _events() -> list[tuple[str, dict[str, Any]]]:
    return [(n[1]["event_type"], n[1]["payload"]) for n in _impl_test.NOTIFICATIONS]


def test_task_and_resource_changes_are_notified_when_enabled(conf: cfg.ConfigOpts, plugin: Plugin) -> None:
    conf.set_override("driver", ["test"], group="oslo_messaging_notifications")
    _impl_test.reset()
    enabled = Plugin(conf)
    try:
        with TestClient(enabled.app) as client:
            lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
            finish(enabled, lb["task"]["id"])
        wait_for(lambda: len(_events()) >= 4)
        types = [t for t, _ in _events()]
        assert types[:4] == [
            "tether.task.pending",
            "tether.task.running",
            "tether.loadbalancer.active",
            "tether.task.succeeded",
        ]
        payload = dict(_events())["tether.task.succeeded"]
        assert (payload["task_id"], payload["resource_id"]) == (lb["task"]["id"], lb["id"])
    finally:
        enabled.notifications.stop()
        _impl_test.reset()


def test_nothing_is_notified_by_default(client: TestClient, plugin: Plugin) -> None:
    _impl_test.reset()
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    finish(plugin, lb["task"]["id"])
    assert not plugin.notifications.enabled
    assert _events() == []


def test_the_trees_of_a_dead_agent_going_offline_are_notified(conf: cfg.ConfigOpts, plugin: Plugin) -> None:
    conf.set_override("driver", ["test"], group="oslo_messaging_notifications")
    enabled = make_plugin(conf)
    try:
        with TestClient(enabled.app) as client:
            lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
            report(enabled, "gone", ["noop"])
            with enabled.sessionmaker.begin() as session:
                session.execute(
                    sa.update(ResourceRecord).where(ResourceRecord.id == lb["id"]).values(agent_id="gone")
                )
                session.execute(
                    sa.update(AgentRecord)
                    .where(AgentRecord.id == "gone")
                    .values(last_heartbeat=utcnow() - datetime.timedelta(hours=1))
                )
            _impl_test.reset()
            enabled.pipeline.reaper.reap()
        wait_for(lambda: _events())
        ((event_type, payload),) = _events()
        assert event_type == "tether.loadbalancer.offline"
        assert (payload["resource_id"], payload["agent_id"]) == (lb["id"], "gone")
        assert payload["reason"] == "agent gone on host h was declared dead"
    finally:
        enabled.notifications.stop()
        _impl_test.reset()
