"""tether on a three-node RabbitMQ cluster: one ``transport_url`` lists every
node, the queues are quorum queues replicated on all three, and a node that
dies under load loses no accepted request.

The cluster is private to this module (rabbitmq_cluster.py); booting and
joining it costs about half a minute, printed with the other timings (see
them with ``pytest -s``).
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from . import pacing
from .daemons import Database, Deployment
from .rabbitmq import INSTALL_HINT, RABBITMQ_SERVER, is_installed
from .rabbitmq_cluster import RabbitMQCluster

# A node's death and the queues' replication are the broker's; the plugin's
# database sees the same writes as on any other pass.
pytestmark = [pytest.mark.functional, pytest.mark.broker_only]

#: Requests posted while a node dies, at a steady rate over LOAD_SECONDS.
REQUESTS = 150
LOAD_SECONDS = 10.0
#: When, into the load, the node is killed: once this many requests were accepted.
KILL_AFTER = 45

#: Every queue tether declares on the broker itself, for providers noop and fake.
TETHER_QUEUES = {"tether.work.noop", "tether.work.fake", "tether.results", "tether.dead-letter"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitMQCluster]:
    if not is_installed():
        pytest.fail(f"{RABBITMQ_SERVER} is missing: {INSTALL_HINT}", pytrace=False)
    cluster = RabbitMQCluster(3)
    try:
        cluster.start()
        print(f"\ncluster of 3: {_seconds(cluster.timings)}")
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def deployment(
    cluster: RabbitMQCluster, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A plugin and two agents whose ``transport_url`` lists the three nodes."""
    deployment = Deployment(
        tmp_path_factory.mktemp("cluster"),
        cluster,  # stands in for a node: its add_vhost() answers a URL naming all three
        database,
        agents=2,
        plugin_options={
            "reaper_interval": 1,
            "agent_down_time": 8,
            "pending_timeout": 30,
            "result_grace": 10,
            "retry_backoff": 0.2,
        },
        agent_options={"report_interval": 1, "rpc_timeout": 5},
    )
    deployment.start()
    try:
        yield deployment
    finally:
        for daemon in (*deployment.agents, deployment.plugin):
            daemon.kill()  # a no-op for those the test stopped
        deployment.http.close()


def test_the_transport_url_lists_every_node_and_every_tether_queue_is_replicated_on_all(
    cluster: RabbitMQCluster, deployment: Deployment
) -> None:
    vhost = deployment.transport_url.rsplit("/", 1)[1]
    assert [f"127.0.0.1:{node.port}" in deployment.transport_url for node in cluster.nodes] == [True] * 3

    lbs = [_post(deployment.http, {"provider": p, "name": f"warm-{p}"}) for p in ("noop", "fake")]
    deployment.wait_settled(timeout=60)
    for lb in lbs:
        assert _get(deployment.http, lb["id"])["provisioning_status"] == "ACTIVE"

    queues = cluster.queues(vhost)
    everyone = sorted(cluster.nodenames())
    for name in TETHER_QUEUES:
        queue = queues[name]
        assert (queue["type"], queue["durable"]) == ("quorum", True), (name, queue)
        assert queue["members"] == queue["online"] == everyone, (name, queue)
    # oslo.messaging's RPC queue for the plugin is a quorum queue too (tether
    # sets rabbit_quorum_queue); its reply and fanout queues stay classic.
    assert queues["tether-plugin"]["type"] == "quorum"
    assert queues["tether-plugin"]["members"] == everyone


def test_killing_the_node_that_leads_the_queues_and_holds_the_connections_loses_nothing(
    cluster: RabbitMQCluster, deployment: Deployment
) -> None:
    vhost = deployment.transport_url.rsplit("/", 1)[1]
    leader = cluster.queues(vhost)["tether.work.fake"]["leader"]
    victim = cluster.node_named(leader)
    survivors = [node for node in cluster.nodes if node is not victim]
    # tether's own connections all go to the first reachable host of the
    # list, and the queues' leaders sit where they were first declared.
    assert victim is cluster.nodes[0]
    held = cluster.connections(vhost)[victim.nodename]
    assert held >= 4, cluster.connections(vhost)  # relay, results, one work consumer per agent

    load = _Load(deployment.base_url)
    loader = threading.Thread(target=load.run, daemon=True)
    loader.start()
    deadline = time.monotonic() + 30
    while len(load.accepted) < KILL_AFTER:
        assert time.monotonic() < deadline and not load.failed, (len(load.accepted), load.failed)
        time.sleep(0.05)
    _wait_running_task(deployment, deadline=time.monotonic() + 30)  # work in flight when it dies
    killed_at = datetime.datetime.now().astimezone()
    killed = time.monotonic()
    victim.kill()
    leaders = _wait_new_leaders(survivors[0], vhost, victim.nodename, deadline=killed + 60)
    _wait_ready(deployment, deadline=killed + 60)
    loader.join(LOAD_SECONDS + 60)
    assert not loader.is_alive()
    deployment.wait_settled(timeout=90)
    settled = time.monotonic() - killed

    # The ledger: every accepted request ended ACTIVE, none was lost.
    assert len(load.accepted) == REQUESTS and load.failed == [], load.failed
    tasks = {t: deployment.http.get(f"/v1/tasks/{t}").json() for t in load.accepted}
    lost = {t: task["state"] for t, task in tasks.items() if task["state"] != "SUCCEEDED"}
    assert not lost, f"{lost}\n{deployment.logs()}"
    for resource_id in load.accepted.values():
        resource = _get(deployment.http, resource_id)
        assert (resource["provisioning_status"], resource["in_sync"]) == ("ACTIVE", True), resource
    applied = {json.loads(line)["task_id"] for line in deployment.journal.read_text().splitlines()}
    assert set(load.accepted) <= applied  # a driver really applied each one, by its own journal

    # The daemons reconnected, each to a surviving node, and are there now.
    daemons = (deployment.plugin, *deployment.agents)
    reconnects = {d.name: _last_line(d.log(), killed_at, _tether_reconnected) for d in daemons}
    assert all(reconnects.values()), f"{reconnects}\n{deployment.logs()}"
    rpc_reconnects = {d.name: _last_line(d.log(), killed_at, _rpc_reconnected) for d in daemons}
    now = cluster.connections(vhost)
    assert now[victim.nodename] == 0 and sum(now.values()) >= 4, now
    assert all(d.alive for d in (deployment.plugin, *deployment.agents))
    # ... and never wrote the password of any host to a log while doing so.
    for daemon in (deployment.plugin, *deployment.agents):
        assert cluster.password not in daemon.log(), daemon.name

    # The quorum queues lost a member, not their majority.
    for name in TETHER_QUEUES:
        assert leaders[name] in {node.nodename for node in survivors}, (name, leaders)

    # The report (pytest -s): what an operator may expect of a node failure.
    elected = {
        name: _last_line(
            "\n".join(node.log_file.read_text(errors="replace") for node in survivors),
            killed_at,
            lambda message, name=name: f"queue '{name}' in vhost '{vhost}': candidate -> leader" in message,
        )
        for name in sorted(TETHER_QUEUES)
    }
    redelivered = sum(any(h["redelivered"] for h in t["history"]) for t in tasks.values())
    retried = sum(t["attempt"] > 1 for t in tasks.values())
    latencies = _latencies(tasks)
    last_posted = max(load.posted_at.values()) - killed
    print(
        f"\nnode {victim.nodename} killed (SIGKILL) once {KILL_AFTER} of {REQUESTS} requests "
        f"over {LOAD_SECONDS:.0f} s were accepted;"
        f"\n  quorum queue leaders elected, s after the kill: {_seconds(elected)}"
        f"\n  tether connections (kombu) up again, s after the kill: {_seconds(reconnects)}"
        f"\n  RPC connections (oslo.messaging) on the killed node up again, s after the kill "
        f"(- for none there): {_seconds(rpc_reconnects)}"
        f"\n  accept-to-ACTIVE: median {latencies[len(latencies) // 2]:.1f} s, longest {latencies[-1]:.1f} s"
        f"\n  tasks whose work was redelivered / that took a second attempt: {redelivered} / {retried}"
        f"\n  last request accepted {last_posted:.1f} s after the kill, all ACTIVE {settled:.1f} s after it"
    )

    # The node comes back as a member, and the queues have all three again.
    restarted = time.monotonic()
    victim.start()
    cluster.wait_running(cluster.nodes)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        queues = cluster.queues(vhost)
        if all(queues[name]["online"] == sorted(cluster.nodenames()) for name in TETHER_QUEUES):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"quorum members did not all come back: {queues}")
    back = time.monotonic() - restarted
    print(f"  the node was back, every quorum member online, {back:.1f} s after its start")
    codes = deployment.stop()
    assert set(codes.values()) == {0}, f"a daemon did not stop cleanly: {codes}\n{deployment.logs()}"


class _Load:
    """Posts loadbalancers at a steady rate; the plugin never goes away here,
    so every request must be accepted at once."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.accepted: dict[str, str] = {}  # task id -> resource id
        self.posted_at: dict[str, float] = {}
        self.failed: list[str] = []
        self._lock = threading.Lock()

    def post(self, i: int) -> None:
        body = {"provider": "fake", "name": f"cluster-{i}", "metadata": {"fake.delay_ms": "300"}}
        with httpx2.Client(base_url=self.base_url, timeout=30) as client:
            posted = time.monotonic()
            try:
                created = _post(client, body)
            except (AssertionError, httpx2.TransportError) as exc:
                with self._lock:
                    self.failed.append(f"{body['name']}: {exc}")
                return
        with self._lock:
            self.accepted[created["task"]["id"]] = created["id"]
            self.posted_at[created["task"]["id"]] = posted

    def run(self) -> None:
        pacing.steady(REQUESTS, LOAD_SECONDS, self.post)


def _latencies(tasks: dict[str, dict[str, Any]]) -> list[float]:
    """Seconds from accepted to finished of each task, shortest first."""
    return sorted(
        (
            datetime.datetime.fromisoformat(task["finished_at"])
            - datetime.datetime.fromisoformat(task["created_at"])
        ).total_seconds()
        for task in tasks.values()
    )


def _post(http: httpx2.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/loadbalancers", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def _get(http: httpx2.Client, resource_id: str) -> dict[str, Any]:
    return dict(http.get(f"/v1/loadbalancers/{resource_id}").json())


def _wait_running_task(deployment: Deployment, deadline: float) -> None:
    while time.monotonic() < deadline:
        if deployment.http.get("/v1/tasks", params={"state": "RUNNING", "limit": 1}).json()["tasks"]:
            return
        time.sleep(0.02)
    raise AssertionError("no task was running under the load")


def _wait_new_leaders(asked: Any, vhost: str, gone: str, deadline: float) -> dict[str, str | None]:
    """Each tether queue's leader once none is ``gone``, asked of a survivor
    (whose rabbitmqctl may take several seconds to answer just after the kill)."""
    leaders: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        out = asked.rabbitmqctl("-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "leader")
        leaders = {name: leader for name, _, leader in (line.partition("\t") for line in out.splitlines())}
        if all(leaders.get(name) not in (None, "", gone) for name in TETHER_QUEUES):
            return leaders
        time.sleep(0.2)
    raise AssertionError(f"no new leader within the deadline: {leaders}")


def _wait_ready(deployment: Deployment, deadline: float) -> None:
    """Wait until the plugin's relay and result consumer are connected again (its /readyz)."""
    while time.monotonic() < deadline:
        try:
            if deployment.http.get("/readyz").status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"the plugin is not ready again:\n{deployment.logs()}")


def _tether_reconnected(message: str) -> bool:
    return ": connected to rabbit://" in message and message.endswith(" again")


def _rpc_reconnected(message: str) -> bool:
    # oslo.messaging's, after the connection's id: "[ID] Reconnected to AMQP server on HOST:PORT ..."
    return "] Reconnected to AMQP server on " in message


def _last_line(log: str, since: datetime.datetime, matches: Any) -> float | None:
    """Seconds from ``since`` to the last line of a log whose message
    ``matches``, or None if there is none. Reads tether's log lines
    ("2025-01-31 12:00:00,123 PID LEVEL LOGGER [REQUEST] MESSAGE", local
    time) and RabbitMQ's ("2025-01-31 12:00:00.123456+00:00 [LEVEL] <PID> MESSAGE")."""
    last = None
    for line in log.splitlines():
        try:
            if line[19:20] == ",":
                at = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()
            else:
                at = datetime.datetime.fromisoformat(line.split(" [", 1)[0])
        except ValueError:
            continue
        message = line.partition("] ")[2]
        if at >= since and matches(message):
            last = (at - since).total_seconds()
    return last


def _seconds(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.1f} s" if isinstance(v, float) else f"{k} -" for k, v in values.items())
