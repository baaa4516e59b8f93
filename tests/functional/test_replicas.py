"""Plugin replicas: several tether-plugin processes on one PostgreSQL.

Every replica serves the API, relays the outbox, records results and reaps;
they share the rows through ``FOR UPDATE SKIP LOCKED`` and tree locks
(docs/scaling.md). Killing one under load loses nothing: the others relay
what it left in the outbox, the broker hands its unacknowledged results to
them, and its clients carry on against the others, as behind a load balancer.

SQLite admits one plugin process per file, so these tests run in the
PostgreSQL pass of the suite (``make test`` runs both).
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from .daemons import Database, Deployment
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

REQUESTS = 400
LOAD_SECONDS = 12.0
KILL_AFTER = 5.0
RELAY_WINDOW = 20


@pytest.fixture(scope="module")
def replicas(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    if database.backend != "postgresql":
        pytest.skip(
            "plugin replicas share a PostgreSQL database: run with --database postgresql (make test does)"
        )
    deployment = Deployment(
        tmp_path_factory.mktemp("replicas"),
        rabbitmq,
        database,
        plugins=3,
        agents=2,
        agent_workers=8,
        # A small relay window bounds what a killed relay can have published
        # without deleting: the only duplicates the agents may see.
        plugin_options={"agent_down_time": 6, "reaper_interval": 0.5, "relay_batch_size": RELAY_WINDOW},
        agent_options={"report_interval": 1},
    )
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


class Load:
    """Creates and updates loadbalancers round-robin over the replicas; a
    request to a replica that is gone is sent to the next, as a load
    balancer in front of them would."""

    def __init__(self, deployment: Deployment) -> None:
        self.urls = deployment.base_urls
        self.accepted: dict[str, str] = {}  # task id -> resource id
        self.resources: dict[str, str] = {}  # resource id -> its last accepted name
        self.served_by: collections.Counter[str] = collections.Counter()
        self._next = itertools.count()
        self._lock = threading.Lock()

    def send(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        start = next(self._next)
        for hop in range(len(self.urls) * 20):
            url = self.urls[(start + hop) % len(self.urls)]
            try:
                response = httpx2.request(method, url + path, json=body, timeout=30)
            except httpx2.TransportError:
                continue  # that replica is gone: the next one
            if response.status_code == 503:
                time.sleep(0.2)
                continue
            assert response.status_code in (200, 202), response.text
            with self._lock:
                self.served_by[url] += 1
            return response.json()
        raise AssertionError(f"no replica accepted {method} {path}")

    def one(self, i: int) -> None:
        created = self.send("POST", "/v1/loadbalancers", {"provider": "fake", "name": f"r-{i}"})
        with self._lock:
            self.accepted[created["task"]["id"]] = created["id"]
            self.resources[created["id"]] = created["name"]
        # An update at once, most likely through another replica, queued
        # behind the create: the tree lock orders the two across processes.
        updated = self.send("PUT", f"/v1/loadbalancers/{created['id']}", {"name": f"r-{i}-v2"})
        with self._lock:
            self.accepted[updated["task"]["id"]] = created["id"]
            self.resources[created["id"]] = updated["name"]

    def run(self, requests: int, seconds: float) -> None:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            started = time.monotonic()
            futures = []
            for i in range(requests):
                futures.append(pool.submit(self.one, i))
                time.sleep(max(0.0, started + seconds * (i + 1) / requests - time.monotonic()))
            for future in futures:
                future.result()


def test_replicas_share_the_work_and_a_killed_one_loses_nothing(replicas: Deployment) -> None:
    deployment = replicas
    load = Load(deployment)
    victim = deployment.plugins[2]
    killer = threading.Timer(KILL_AFTER, victim.kill)
    killer.start()
    load.run(REQUESTS // 2, LOAD_SECONDS)
    killer.join()
    assert not victim.alive
    deployment.wait_settled(timeout=180)

    assert len(load.accepted) == REQUESTS, "every request was accepted by some replica"
    assert set(load.served_by) == set(deployment.base_urls), load.served_by
    tasks = {task_id: deployment.http.get(f"/v1/tasks/{task_id}").json() for task_id in load.accepted}
    states = collections.Counter(t["state"] for t in tasks.values())
    # An update accepted while its create was still queued is folded into it.
    assert set(states) <= {"SUCCEEDED", "SUPERSEDED"} and states["SUCCEEDED"] >= REQUESTS // 2, states
    for resource_id, name in load.resources.items():
        body = deployment.http.get(f"/v1/loadbalancers/{resource_id}").json()
        assert (body["provisioning_status"], body["in_sync"], body["name"]) == ("ACTIVE", True, name), body

    # No double work: the device saw each task's change once, though three
    # relays, three result consumers and three reapers shared the rows.
    journal = [json.loads(line) for line in deployment.journal.read_text().splitlines()]
    applied = collections.Counter(entry["task_id"] for entry in journal)
    twice = {task_id: n for task_id, n in applied.items() if n > 1}
    assert not twice, twice
    succeeded = {task_id for task_id, task in tasks.items() if task["state"] == "SUCCEEDED"}
    assert succeeded <= set(applied)
    # Nor did the relays publish a row twice, but for the killed one's last window.
    duplicates = sum(agent.log().count(" skips task ") for agent in deployment.agents)
    assert duplicates <= RELAY_WINDOW, duplicates

    deployment.start_plugin(replica=2)


def test_a_client_waiting_on_one_replica_hears_a_task_another_finished(replicas: Deployment) -> None:
    first, second = (httpx2.Client(base_url=url, timeout=60) for url in replicas.base_urls[:2])
    with first, second:
        lb = first.post(
            "/v1/loadbalancers", json={"provider": "fake", "metadata": {"fake.delay_ms": "1500"}}
        ).json()
        started = time.monotonic()
        task = second.get(f"/v1/tasks/{lb['task']['id']}", params={"wait": 30}).json()
        waited = time.monotonic() - started
    assert task["state"] == "SUCCEEDED", task
    # Woken by PostgreSQL's NOTIFY, not by the end of the 30 s wait.
    assert waited < 15, waited
