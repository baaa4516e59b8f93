"""A plugin's API and pipeline as two halves that share only the database
and the link: what tether-plugin runs in two processes, here in one (the
in-memory transport reaches no further), each half with its own engines."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent import service as agent_service
from tether.plugin import link
from tether.plugin.pipeline import Pipeline
from tether.plugin.service import Core, Plugin


class Halves:
    def __init__(self, conf: cfg.ConfigOpts) -> None:
        api_end, pipeline_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.core = Core(conf, migrate=True)
        self.pipeline = Pipeline(self.core)
        self.pipeline.link_to_apis([link.Link(pipeline_end, "link-to-api")])
        self.api = Plugin(conf, to_pipeline=link.Link(api_end, "link-to-pipeline"))
        self.pipeline_stopped = False

    def stop_pipeline(self) -> None:
        if not self.pipeline_stopped:
            self.pipeline_stopped = True
            self.pipeline.stop()
            self.core.dispose()


@pytest.fixture
def halves(conf: cfg.ConfigOpts) -> Iterator[Halves]:
    # Only the link wakes the relay: its own look at the outbox comes too late to pass.
    conf.set_override("relay_interval", 3600, group="plugin")
    halves = Halves(conf)
    agent = agent_service.Agent(conf, agent_id="agent-1")
    halves.pipeline.start()
    halves.api.start()
    agent.start()
    yield halves
    agent.stop()
    halves.api.stop()
    halves.stop_pipeline()


def test_an_accept_wakes_the_other_process_relay_and_its_finish_wakes_the_waiter(halves: Halves) -> None:
    with TestClient(halves.api.app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
        task = client.get(f"/v1/tasks/{lb['task']['id']}?wait=30").json()
        assert task["state"] == "SUCCEEDED"
        assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["provisioning_status"] == "ACTIVE"


def test_the_api_is_not_ready_while_its_pipeline_is_silent(halves: Halves) -> None:
    with TestClient(halves.api.app) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200)
        halves.stop_pipeline()
        body = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r.json(), timeout=10)
        assert any("the pipeline process has not reported for" in p for p in body["problems"]), body


def test_agents_are_judged_by_what_the_pipeline_has_heard(halves: Halves) -> None:
    with TestClient(halves.api.app) as client:
        admin = {"X-Roles": "admin"}
        agents = wait_for(lambda: client.get("/v1/agents", headers=admin).json()["agents"])
        assert [a["alive"] for a in agents] == [True]
    heard = halves.api.agents.listening_since
    assert heard is not None
    assert wait_for(heard) == halves.pipeline.traffic.connected_since


def test_finished_tasks_that_found_no_room_wake_every_waiter_later() -> None:
    api_end, pipeline_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    api_end.setblocking(False)
    to_api = link.Link(pipeline_end, "link-to-api")
    sent = 0
    while to_api.send(link.FINISHED, b"x" * 4000):
        sent += 1
    # The socket is full: this list is dropped, and the next message that
    # fits is preceded by a word that some were.
    to_api.send_finished(["lost-task"])
    assert _kinds(api_end) == [link.FINISHED] * sent
    assert to_api.send(link.STATUS, link.status(None, time.monotonic()))
    assert _kinds(api_end) == [link.LOST, link.STATUS]
    api_end.close()
    pipeline_end.close()


def _kinds(end: socket.socket) -> list[bytes]:
    kinds = []
    while True:
        try:
            kinds.append(end.recv(65536)[:1])
        except BlockingIOError:
            return kinds
