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
