"""Health probes and the JSON log format."""

from __future__ import annotations

import json
import logging

from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.service import Agent
from tether.common import log
from tether.plugin.service import Plugin

ADMIN = {"X-Roles": "admin"}


def test_healthz_answers_while_the_process_serves(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "alive"}


def test_readyz_is_503_naming_the_broker_until_the_plugin_is_connected(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "not connected to the broker" in response.json()["problems"][0]


def test_readyz_is_200_when_database_schema_and_broker_are_fine(
    client: TestClient, pipeline: list[Agent], plugin: Plugin
) -> None:
    wait_for(lambda: client.get("/readyz").status_code == 200)
    assert client.get("/readyz").json() == {"status": "ready", "problems": []}


def test_the_json_log_format_writes_one_object_per_line(conf: cfg.ConfigOpts) -> None:
    formatter = log.JsonFormatter()
    log.install_record_factory()
    with log.request_context("req-123"):
        record = logging.getLogger("tether.test").makeRecord(
            "tether.test", logging.INFO, __file__, 1, "task %s done", ("t1",), None
        )
    entry = json.loads(formatter.format(record))
    assert (entry["message"], entry["request_id"], entry["level"]) == ("task t1 done", "req-123", "INFO")


def test_the_plugin_serves_prometheus_metrics_of_tasks_agents_and_backlog(
    client: TestClient, pipeline: list[Agent]
) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    wait_for(lambda: client.get(f"/v1/tasks/{lb['task']['id']}?wait=5").json()["state"] == "SUCCEEDED")
    wait_for(lambda: 'tether_live_agents{provider="noop"} 2.0' in client.get("/metrics", headers=ADMIN).text)
    text = client.get("/metrics", headers=ADMIN).text
    assert 'tether_tasks_finished_total{operation="create",provider="noop",state="SUCCEEDED"}' in text
    assert "tether_task_seconds_bucket" in text
    assert 'tether_driver_call_seconds_count{driver="noop",operation="create",outcome="succeeded"}' in text


def test_an_agent_serves_metrics_and_health_on_its_own_port(
    conf: cfg.ConfigOpts, pipeline: list[Agent]
) -> None:
    import urllib.request

    from tether.agent.status_server import StatusServer

    agent = pipeline[0]
    server = StatusServer("127.0.0.1", 0, agent.problems)
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        wait_for(agent.consumer.connected.is_set)
        with urllib.request.urlopen(f"{base}/readyz") as ready:
            assert json.loads(ready.read()) == {"status": "ready", "problems": []}
        with urllib.request.urlopen(f"{base}/metrics") as scraped:
            assert b"tether_agent_tasks_in_flight" in scraped.read()
    finally:
        server.stop()
