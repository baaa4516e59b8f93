"""Agents on separate hosts, and a host whose network link is cut.

Three test hosts (network namespaces behind a bridge, see netns.py) each run
one tether-agent, and a fourth is a client with an HTTP backend; the plugin
and a RabbitMQ node of this module's own run in the root namespace, on the
bridge's address. The agents reach the plugin only through the broker: work
and results over kombu, claims, progress and state reports over
oslo.messaging RPC (tether/agent/ has no other client). The
plugin's API listens on the root namespace's loopback, which no host can
reach, so the test would fail if an agent needed it.

Then one host's cable is pulled (its bridge port goes down, so packets are
dropped silently, as in a real partition) while it runs work of both
placements, and the test checks what an operator is promised:

(a) the plugin declares that agent dead for its missed state reports;
(b) the shared work it held, running or prefetched, finishes on the others;
(c) the roots bound to it (host placement) move to live agents and are
    applied there, including a change accepted after the cut but before the
    death was noticed;
(d) when the cable is back, the agent rejoins, removes its stale copies of the
    moved roots from its own host and undoes nothing: no resource moves back
    or changes state, no task changes, and the journal of the drivers shows no
    change applied by it after its return;
(e) the VIP moves with its load balancer: an ``haproxy`` load balancer on the
    cut host, its VIP an address of the test network that the agent adds to
    its host's eth0 (``[driver:haproxy] vip_interface``), serves the client
    through it before the cut; after, the agent it moves to adds the VIP and
    announces it by gratuitous ARP, which the client's ARP cache shows before
    the client sends anything (without the announcement the cache would
    still name the cut host), and serves it again; the returning agent
    removes the VIP from its host.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import pathlib
import signal
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from . import dataplane, hostfake
from .daemons import Database, Deployment
from .netns import Host, Network
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

T = TypeVar("T")
ADMIN = {"X-Roles": "admin"}
VICTIM = "agent-2"
#: The agents serving haproxy: an idle load balancer is bound to the first, the victim.
HAPROXY_AGENTS = (VICTIM, "agent-3")

# Failure detection, shortened so the whole story takes well under a minute
# (docs/operating.md, "Tuning failure detection"):
REPORT_INTERVAL = 1.0  # [agent] report_interval: a state report every second ...
AGENT_DOWN_TIME = 6.0  # [plugin] agent_down_time: ... dead after 6 s without one
STATUS_INTERVAL = 2.0  # [agent] status_interval: the owner of a VIP announces it again at each poll
AMQP_HEARTBEAT = 2  # [messaging] heartbeat: the broker drops a silent kombu connection after 2-3 of these
RPC_HEARTBEAT = 4  # [oslo_messaging_rabbit] heartbeat_timeout_threshold: the same for the RPC connections

# The fake driver's instructions (tether/reference_drivers/fake.py). Long enough to be
# in the works when the cable is pulled, short enough that the victim's own
# copies finish while it is cut off.
LONG_OPERATION = {"fake.operation_s": "10"}  # the device works on; the agent acks and polls
BLOCKING_CALL = {"fake.delay_ms": "6000"}  # the driver call holds a worker and an unacked message
# Started first, so it must last until the shared work has been created too.
LONG_BLOCKING_CALL = {"fake.delay_ms": "10000"}


def _eventually(
    what: str,
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.2,
    explain: Callable[[], object] | None = None,
) -> T:
    """``probe()``'s first truthy answer within ``timeout`` seconds; else an
    AssertionError naming ``what`` and what ``explain()`` says."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not within {timeout:.0f} s: {what}" + (f"\n{explain()}" if explain else "")
            )
        time.sleep(interval)


class Cluster:
    """The deployment as the test sees it: the API and the drivers' journal."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.http = deployment.http

    def create(self, provider: str, name: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        body = {"provider": provider, "name": name, "metadata": metadata or {}}
        response = self.http.post("/v1/loadbalancers", json=body)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def update(self, lb_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        response = self.http.put(f"/v1/loadbalancers/{lb_id}", json={"metadata": metadata})
        assert response.status_code == 202, response.text
        return dict(response.json())

    def lb(self, lb_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/loadbalancers/{lb_id}").json())

    def task(self, task_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/v1/tasks/{task_id}").json())

    def tasks(self) -> dict[str, dict[str, Any]]:
        return {t["id"]: t for t in self.http.get("/v1/tasks", params={"limit": 1000}).json()["tasks"]}

    def lbs(self) -> dict[str, dict[str, Any]]:
        page = self.http.get("/v1/loadbalancers", params={"limit": 1000}).json()
        return {lb["id"]: lb for lb in page["loadbalancers"]}

    def agents(self) -> dict[str, dict[str, Any]]:
        return {a["id"]: a for a in self.http.get("/v1/agents", headers=ADMIN).json()["agents"]}

    def settled(self, ids: list[str]) -> dict[str, dict[str, Any]] | None:
        """The loadbalancers ``ids``, once none is PENDING; else None."""
        lbs = {i: self.lb(i) for i in ids}
        return None if any(lb["provisioning_status"].startswith("PENDING") for lb in lbs.values()) else lbs

    def unsettled(self, ids: list[str]) -> list[tuple[str, str, str | None, list[Any]]]:
        """What keeps ``ids`` from settling: name, status, bound agent, unfinished tasks."""
        lbs = [self.lb(i) for i in ids]
        unfinished = [t for t in self.tasks().values() if t["state"] in ("QUEUED", "PENDING", "RUNNING")]
        return [
            (
                lb["name"],
                lb["provisioning_status"],
                lb.get("agent_id"),
                [
                    (t["operation"], t["state"], t["attempt"], t["agent_id"])
                    for t in unfinished
                    if t["root_id"] == lb["id"]
                ],
            )
            for lb in lbs
            if lb["provisioning_status"].startswith("PENDING")
        ]

    def journal(self, offset: int = 0) -> list[dict[str, Any]]:
        """The drivers' journal from byte ``offset``: what reached a device, in order."""
        path = self.deployment.journal
        if not path.exists():
            return []
        with open(path, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode().split("\n")
        return [json.loads(line) for line in lines[:-1]]  # the last one is "" or still being written

    def journal_size(self) -> int:
        path = self.deployment.journal
        return path.stat().st_size if path.exists() else 0


def _agent_of_entry(cluster: Cluster, entry: dict[str, Any], histories: dict[str, dict[int, str]]) -> str:
    """Who wrote a journal entry: hostfake says so; for fake, the task's
    history says which agent held that attempt."""
    if "agent_id" in entry:
        return str(entry["agent_id"])
    task_id = entry["task_id"]
    if task_id not in histories:
        histories[task_id] = {h["attempt"]: h["agent_id"] for h in cluster.task(task_id)["history"]}
    return histories[task_id].get(entry["attempt"], "?")


def _served(client: Host, vip: str) -> bool:
    """Does a request from ``client`` to the VIP reach the backend?"""
    return dataplane.fetch(client, vip) == dataplane.ANSWER


def _start(deployment: Deployment, network: Network, drivers: pathlib.Path) -> None:
    """The plugin here, agent-N on host N; all of them find the hostfake driver."""
    env = {"PYTHONPATH": hostfake.pythonpath(drivers)}
    deployment.migrate()
    deployment.start_plugin(env=env)
    for agent, host in zip(deployment.agents, network.hosts[:3], strict=True):
        agent.argv = host.command(agent.argv)
        agent.start(env)


def test_a_host_cut_off_the_network_loses_its_work_to_the_others_and_rejoins_undoing_nothing(
    network: Network, node: RabbitMQNode, database: Database, tmp_path: pathlib.Path
) -> None:
    journal = tmp_path / "journal.jsonl"
    deployment = Deployment(
        tmp_path,
        node,
        database,
        agents=3,
        agent_workers=4,
        broker_host=network.gateway,
        plugin_options={
            "providers": f"fake,{hostfake.NAME},haproxy",
            "agent_down_time": AGENT_DOWN_TIME,
            "reaper_interval": 0.5,
            "retry_backoff": 0.5,
            "retry_backoff_max": 2,
        },
        agent_options={
            "providers": f"fake,{hostfake.NAME},haproxy",
            # Shared out among an agent's queues: 4 for each of its three.
            "prefetch": 12,
            "report_interval": REPORT_INTERVAL,
            "status_interval": STATUS_INTERVAL,
            "rpc_timeout": 2,
        },
        agent_sections={
            f"driver:{hostfake.NAME}": {"journal_path": journal},
            "driver:haproxy": {"vip_interface": "eth0"},
        },
        sections={
            "messaging": {"heartbeat": AMQP_HEARTBEAT},
            "oslo_messaging_rabbit": {"heartbeat_timeout_threshold": RPC_HEARTBEAT},
        },
    )
    assert deployment.journal == journal
    # Only the victim and agent-3 serve haproxy: a load balancer created while they are as loaded
    # as each other lands on the victim. Each agent's consumer of the shared queue prefetches 4.
    for agent in deployment.agents:
        if agent.name not in HAPROXY_AGENTS:
            ini = tmp_path / f"{agent.name}.ini"
            ini.write_text(
                ini.read_text().replace(",haproxy\n", "\n").replace("prefetch = 12\n", "prefetch = 8\n")
            )
    cluster = Cluster(deployment)
    victim_host, other_host, client = network.hosts[1:]
    vip = dataplane.vip_of(network)
    (tmp_path / "backend").mkdir()
    backend = dataplane.start_backend(client, tmp_path / "backend")
    _start(deployment, network, tmp_path / "drivers")
    try:
        _eventually(
            "three agents report",
            lambda: len([a for a in cluster.agents().values() if a["alive"]]) == 3,
            60,
        )
        # They really are on the other side of the bridge.
        vhost = deployment.transport_url.rsplit("/", 1)[1]
        peers = set(node.rabbitmqctl("-q", "list_connections", "-p", vhost, "peer_host").split())
        assert {h.address for h in network.hosts[:3]} <= peers, peers

        # Twelve host-placed roots, bound in turn: four on each agent.
        roots = [cluster.create(hostfake.NAME, f"host-{i}")["id"] for i in range(12)]
        placed = _eventually("the host-placed roots are ACTIVE", lambda: cluster.settled(roots), 60)
        assert {lb["provisioning_status"] for lb in placed.values()} == {"ACTIVE"}, placed
        on_victim = [i for i in roots if placed[i]["agent_id"] == VICTIM]
        assert len(on_victim) == 4, {i: lb["agent_id"] for i, lb in placed.items()}
        moved_long, moved_block, moved_idle, moved_late = on_victim

        # (e) A load balancer on a VIP: bound to the victim (of the two haproxy agents, as loaded
        # as each other, the first), which adds the VIP to its eth0 and serves the client through it.
        vip_created = time.monotonic()
        vip_lb, vip_member = dataplane.create_load_balancer(deployment.http, vip, client)

        def vip_settled() -> tuple[dict[str, Any], dict[str, Any]] | None:
            lb, member = cluster.lb(vip_lb), deployment.http.get(f"/v1/members/{vip_member}").json()
            return (
                None
                if any(r["provisioning_status"].startswith("PENDING") for r in (lb, member))
                else (lb, member)
            )

        vip_held, member = _eventually("the VIP's load balancer settles", vip_settled, 30)
        assert (vip_held["provisioning_status"], member["provisioning_status"]) == ("ACTIVE", "ACTIVE")
        assert vip_held["agent_id"] == VICTIM, vip_held
        assert vip in victim_host.addresses() and vip not in other_host.addresses()
        _eventually("the client reaches the VIP", lambda: _served(client, vip), 10)
        assert client.neighbour(vip) == victim_host.mac
        vip_serving = time.monotonic() - vip_created

        # Work in flight on the victim: a long device operation and a blocking
        # call on roots bound to it, and shared work that every agent takes a
        # share of. RabbitMQ hands the shared queue's messages round robin to
        # the agents, up to each one's prefetch (4 here): the victim gets at
        # least one long operation, and blocking calls for its 3 free workers
        # plus one more that waits, unclaimed, behind them.
        long_task = cluster.update(moved_long, LONG_OPERATION)["task"]["id"]
        block_task = cluster.update(moved_block, LONG_BLOCKING_CALL)["task"]["id"]
        shared_long = [cluster.create("fake", f"shared-long-{i}", LONG_OPERATION)["id"] for i in range(4)]
        shared_block = [cluster.create("fake", f"shared-block-{i}", BLOCKING_CALL)["id"] for i in range(15)]
        shared = shared_long + shared_block

        def victim_busy() -> dict[str, dict[str, Any]] | None:
            running = {
                t["resource_id"]: t
                for t in cluster.tasks().values()
                if t["state"] == "RUNNING" and t["agent_id"] == VICTIM
            }
            kinds = {
                "host long": moved_long in running,
                "host blocking": moved_block in running,
                "shared long": any(i in running for i in shared_long),
                "shared blocking": any(i in running for i in shared_block),
                # What it holds (in_flight) but has not claimed: waiting for a worker.
                "shared waiting": cluster.agents()[VICTIM]["in_flight"] > len(running),
            }
            return running if all(kinds.values()) else None

        held = _eventually("the victim runs work of every kind", victim_busy, 30, interval=0.05)
        victim_tasks = {t["id"] for t in held.values()}
        assert {long_task, block_task} <= victim_tasks

        # Pull the cable.
        victim_host.cut()
        cut = time.monotonic()
        # A change accepted while the victim still counts as alive goes to its queue.
        late_task = cluster.update(moved_late, {"changed": "after the cut"})["task"]["id"]
        assert cluster.agents()[VICTIM]["alive"], "the victim was declared dead too soon for this test"

        # (a) Missed state reports: the plugin declares it dead, and only it.
        agents = _eventually(
            f"{VICTIM} is declared dead", lambda: (a := cluster.agents()) and not a[VICTIM]["alive"] and a, 30
        )
        declared_dead = time.monotonic() - cut
        assert [a for a in agents.values() if a["alive"]] and all(
            a["alive"] for name, a in agents.items() if name != VICTIM
        ), agents

        # (b) Its shared work, and (c) its roots, finish on the others.
        everything = [*shared, *on_victim, vip_lb]
        done = _eventually(
            "the victim's work finishes elsewhere",
            lambda: cluster.settled(everything),
            90,
            explain=lambda: cluster.unsettled(everything),
        )
        recovered = time.monotonic() - cut
        assert {lb["provisioning_status"] for lb in done.values()} == {"ACTIVE"}, done
        assert all(lb["in_sync"] for lb in done.values()), done
        shared_tasks = [cluster.task(done[lb_id]["task"]["id"]) for lb_id in shared]
        for task in shared_tasks:
            assert task["state"] == "SUCCEEDED", task
            if task["id"] in victim_tasks:
                assert task["agent_id"] != VICTIM, task
                assert not [h for h in task["history"] if h["agent_id"] == VICTIM and h["applied"]], task
        # The work the victim held but had not started: its first claim is
        # another agent's, of a message the broker took back from the victim.
        handed_over = [
            t for t in shared_tasks if t["history"][0]["redelivered"] and t["id"] not in victim_tasks
        ]
        assert handed_over and all(VICTIM not in {h["agent_id"] for h in t["history"]} for t in handed_over)
        for lb_id in on_victim:
            assert done[lb_id]["agent_id"] not in (None, VICTIM), done[lb_id]
            task = cluster.task(done[lb_id]["task"]["id"])
            assert (task["state"], task["agent_id"]) == ("SUCCEEDED", done[lb_id]["agent_id"]), task
        # The idle root was applied in full on its new host: the reaper's re-apply.
        reapply = cluster.task(done[moved_idle]["task"]["id"])
        assert (reapply["operation"], reapply["generation"]) == ("update", placed[moved_idle]["generation"])
        for task_id in (long_task, block_task, late_task):
            task = cluster.task(task_id)
            assert task["state"] in ("SUCCEEDED", "SUPERSEDED"), task
            assert task["state"] == "SUPERSEDED" or task["agent_id"] != VICTIM, task
        # (e) The VIP moved with its load balancer: its new agent added it and announced it, and
        # the client's ARP cache names the new host before the client has sent it anything.
        assert done[vip_lb]["agent_id"] == "agent-3", done[vip_lb]
        assert vip in other_host.addresses()
        _eventually(
            "the client's ARP cache names the VIP's new host",
            lambda: client.neighbour(vip) == other_host.mac,
            5,
            explain=lambda: f"{client.neighbour(vip)} (the cut host: {victim_host.mac})",
        )
        _eventually("the client reaches the VIP on its new host", lambda: _served(client, vip), 5)

        # What the cluster looks like now is what must stay.
        lbs_before = cluster.lbs()
        tasks_before = cluster.tasks()
        assert all(t["state"] in ("SUCCEEDED", "SUPERSEDED") for t in tasks_before.values()), tasks_before
        rejoin_offset = cluster.journal_size()

        # (d) Plug the cable back in: the agent rejoins ...
        victim_host.restore()
        restored = time.monotonic()
        _eventually(f"{VICTIM} is alive again", lambda: cluster.agents()[VICTIM]["alive"], 90)
        rejoined = time.monotonic() - restored

        # ... drops its own copies of the roots that moved away ...
        def removed_stale_copies() -> bool:
            entries = cluster.journal(rejoin_offset)
            gone = {
                e["resource_id"]
                for e in entries
                if e.get("agent_id") == VICTIM and e["operation"] == "remove"
            }
            return gone >= set(on_victim)

        _eventually(f"{VICTIM} removes its copies of the moved roots", removed_stale_copies, 30)
        _eventually(f"{VICTIM} removes the VIP from its host", lambda: vip not in victim_host.addresses(), 30)
        vip_released = time.monotonic() - restored
        # Until then it could answer for the VIP and mislead the client; the
        # owner's announcement at its next status poll sets the client right.
        _eventually(
            "the client's ARP cache names the VIP's owner again",
            lambda: client.neighbour(vip) == other_host.mac,
            STATUS_INTERVAL + 5,
            explain=lambda: f"{client.neighbour(vip)} (the rejoined host: {victim_host.mac})",
        )
        assert _served(client, vip)

        # ... and has dealt with everything it held: nothing in flight, and its
        # own queue (the moved roots' stale messages) drained.
        victim = next(agent for agent in deployment.agents if agent.name == VICTIM)

        def victim_load() -> tuple[list[str], int]:
            queues = node.rabbitmqctl(
                "-q", "list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged"
            )
            counts = {line.split()[0]: line.split()[1:] for line in queues.splitlines() if line.strip()}
            own = counts.get(f"tether.work.{hostfake.NAME}.{VICTIM}", ["0", "0"])
            return own, cluster.agents()[VICTIM]["in_flight"]

        _eventually(
            f"{VICTIM} is idle",
            lambda: victim_load() == (["0", "0"], 0),
            60,
            interval=0.5,
            explain=lambda: f"own queue (ready, unacked), in flight: {victim_load()}\n{victim.log()[-8000:]}",
        )
        drained = time.monotonic() - restored

        # Nothing was undone: the same placement and states, the same tasks.
        lbs_after, tasks_after = cluster.lbs(), cluster.tasks()
        keys = ("agent_id", "provisioning_status", "generation", "applied_generation", "in_sync")
        assert {i: [lb.get(k) for k in keys] for i, lb in lbs_after.items()} == {
            i: [lb.get(k) for k in keys] for i, lb in lbs_before.items()
        }
        keys = ("state", "attempt", "agent_id", "finished_at")
        assert {i: [t[k] for k in keys] for i, t in tasks_after.items()} == {
            i: [t[k] for k in keys] for i, t in tasks_before.items()
        }
        # What the victim reported after all is kept in history, never applied.
        for task_id in victim_tasks | {late_task}:
            history = cluster.task(task_id)["history"]
            assert all(not h["applied"] for h in history if h["agent_id"] == VICTIM), history
        # And no device was changed by it since it came back, but for its own stale copies.
        histories: dict[str, dict[int, str]] = {}
        since = [
            (_agent_of_entry(cluster, e, histories), e["operation"], e["resource_id"])
            for e in cluster.journal(rejoin_offset)
        ]
        by_victim = collections.Counter((op, r) for who, op, r in since if who == VICTIM)
        assert by_victim == collections.Counter(("remove", r) for r in on_victim), since
        assert not [s for s in since if s[0] != VICTIM], since

        print(
            f"\n  {VICTIM} declared dead {declared_dead:.1f} s after its link was cut; its work done "
            f"elsewhere after {recovered:.1f} s; alive again {rejoined:.1f} s after the link returned, "
            f"its queue drained after {drained:.1f} s; the VIP's load balancer served {vip_serving:.1f} s "
            f"after its create, its VIP was removed from {VICTIM}'s host {vip_released:.1f} s after the "
            "link returned"
        )
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        if not victim_host.linked:
            victim_host.restore()
        backend.kill()
        backend.wait(10)
        codes = deployment.stop()
        # HAProxy outlives its agent, as it would on a real host; not the test.
        for pidfile in tmp_path.glob("agent-*/haproxy/*/haproxy.pid"):
            for pid in pidfile.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    assert set(codes.values()) == {0}, f"a daemon did not stop cleanly: {codes}\n{deployment.logs()}"
