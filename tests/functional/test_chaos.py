"""The chaos suite: a steady load while agents, the plugin and the broker
are killed, and malformed messages are thrown in; then a ledger proves that
nothing was lost, nothing is stuck and no stale result was applied.

Bounded in time: about 2,000 tasks in ~20 s of load, then at most three
minutes to settle.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import json
import random
import threading
import time
from typing import Any

import amqp.exceptions
import httpx2
import kombu
import pytest

from . import pacing
from .daemons import Database, Deployment
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

TASKS = 2000
LOAD_SECONDS = 20.0
AGENT_KILL_EVERY = 2.0
POISON = 4  # malformed messages thrown into each of the work and result queues


def _mix(i: int) -> tuple[str, dict[str, str]]:
    """The kind of task ``i`` is, and the fake driver's instructions for it."""
    kind = ("ok", "ok", "ok", "ok", "slow", "fail", "retry", "ok", "slow", "ok")[i % 10]
    return kind, {
        "ok": {},
        "slow": {"fake.delay_ms": str(random.randint(200, 1500))},
        "fail": {"fake.fail": f"told to fail #{i}"},
        "retry": {"fake.unreachable_attempts": "1"},
    }[kind]


class Load:
    """Posts loadbalancers at a steady rate, riding out plugin restarts."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.accepted: dict[str, tuple[str, str, str]] = {}  # task id -> (kind, resource id, name)
        self.refused = 0
        self._lock = threading.Lock()
        # One client per sender thread: making a client costs ~0.1 s of CPU
        # (its TLS context), which made the senders, not tether, the bound.
        self._local = threading.local()
        self._clients: list[httpx2.Client] = []

    def _client(self) -> httpx2.Client:
        client: httpx2.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx2.Client(base_url=self.deployment.base_url, timeout=30)
            with self._lock:
                self._clients.append(client)
        return client

    def post(self, i: int) -> None:
        kind, metadata = _mix(i)
        body = {"provider": "fake", "name": f"chaos-{i}", "metadata": metadata}
        client = self._client()
        while True:
            try:
                response = client.post("/v1/loadbalancers", json=body)
            except httpx2.TransportError:
                response = None
            if response is not None and response.status_code == 202:
                created = response.json()
                with self._lock:
                    self.accepted[created["task"]["id"]] = (kind, created["id"], body["name"])
                return
            with self._lock:
                self.refused += 1
            time.sleep(0.2)  # the plugin is restarting; a client would retry too

    def run(self) -> None:
        try:
            pacing.steady(TASKS, LOAD_SECONDS, self.post)
        finally:
            for client in self._clients:
                client.close()


class Chaos:
    def __init__(self, deployment: Deployment, rabbitmq: RabbitMQNode) -> None:
        self.deployment = deployment
        self.rabbitmq = rabbitmq
        self.kills: list[tuple[str, datetime.datetime]] = []
        self.plugin_deaths = 0
        self.broker_restarts = 0
        self.poisoned: set[str] = set()
        self.stop = threading.Event()

    def kill_agents(self) -> None:
        """SIGKILL one agent every few seconds while the others run."""
        turn = 0
        while not self.stop.wait(AGENT_KILL_EVERY):
            victim = self.deployment.agents[turn % len(self.deployment.agents)]
            turn += 1
            victim.kill()
            self.kills.append((victim.name, datetime.datetime.now(datetime.UTC)))
            time.sleep(1.0)
            victim.start()

    def watch_plugin(self) -> None:
        """The plugin kills itself between commit and publish (fault hook); restart it."""
        while not self.stop.wait(0.2):
            if not self.deployment.plugin.alive:
                self.plugin_deaths += 1
                self.deployment.start_plugin()

    def restart_broker(self) -> None:
        if not self.stop.wait(LOAD_SECONDS / 2):
            self.rabbitmq.restart()
            self.broker_restarts += 1

    def poison(self) -> None:
        if self.stop.wait(LOAD_SECONDS / 4):
            return
        # Confirmed: a publish still in flight when the connection closes can be lost.
        with kombu.Connection(
            self.deployment.amqp_url, transport_options={"confirm_publish": True}
        ) as connection:
            producer = kombu.Producer(connection.channel())
            for i in range(POISON):
                for exchange, key in (("tether.work", "fake"), ("tether.results", "tether.results")):
                    message_id = f"chaos-poison-{key}-{i}"
                    body = b"\x00garbage" if i % 2 else b'{"version": 99, "kind": "result"}'
                    producer.publish(
                        body,
                        exchange=exchange,
                        routing_key=key,
                        message_id=message_id,
                        content_type="application/json",
                        delivery_mode=2,
                    )
                    self.poisoned.add(message_id)


@pytest.fixture(scope="module")
def chaos_deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    deployment = Deployment(
        tmp_path_factory.mktemp("chaos"),
        rabbitmq,
        database,
        agents=3,
        plugin_options={
            "reaper_interval": 1,
            "agent_down_time": 8,
            "pending_timeout": 30,
            "result_grace": 10,
            "retry_backoff": 0.2,
            "max_attempts": 6,
        },
        agent_options={"report_interval": 1, "driver_timeout": 20, "rpc_timeout": 5},
    )
    deployment.migrate()
    # The first plugin life is armed to die between commit and publish.
    deployment.start_plugin(env={"TETHER_FAULTS": "relay.before_publish:40"})
    for agent in deployment.agents:
        agent.start()
    yield deployment
    for agent in deployment.agents:
        agent.kill()
    deployment.plugin.stop()
    deployment.http.close()


def _dead_letters(amqp_url: str) -> list[dict[str, Any]]:
    letters = []
    with kombu.Connection(amqp_url) as connection:
        queue = kombu.Queue("tether.dead-letter", no_declare=True)(connection.channel())
        while (message := queue.get(no_ack=False)) is not None:
            letters.append(
                {
                    "id": message.properties.get("message_id"),
                    "headers": dict(message.headers or {}),
                    "body": message.body,
                }
            )
        # closing the channel returns them unacked
    return letters


def _purge_dead_letters(amqp_url: str) -> None:
    with kombu.Connection(amqp_url) as connection:
        try:
            kombu.Queue("tether.dead-letter", no_declare=True)(connection.channel()).purge()
        except amqp.exceptions.NotFound:
            pass  # no daemon has declared it yet (a slow start): nothing to purge


def test_nothing_is_lost_or_stuck_under_agent_plugin_and_broker_failures(
    chaos_deployment: Deployment, rabbitmq: RabbitMQNode
) -> None:
    deployment = chaos_deployment
    _purge_dead_letters(deployment.amqp_url)
    load, chaos = Load(deployment), Chaos(deployment, rabbitmq)
    saboteurs = [
        threading.Thread(target=t, daemon=True)
        for t in (chaos.kill_agents, chaos.watch_plugin, chaos.restart_broker, chaos.poison)
    ]
    started = time.monotonic()
    for thread in saboteurs:
        thread.start()
    load.run()
    chaos.stop.set()
    for thread in saboteurs:
        thread.join(60)
    for agent in deployment.agents:
        if not agent.alive:
            agent.start()
    if not deployment.plugin.alive:
        deployment.start_plugin()
    deployment.wait_settled(timeout=240)
    settled = time.monotonic() - started

    # The ledger.
    tasks = {task_id: deployment.http.get(f"/v1/tasks/{task_id}").json() for task_id in load.accepted}
    states = collections.Counter(t["state"] for t in tasks.values())
    assert len(tasks) == TASKS
    assert set(states) <= {"SUCCEEDED", "FAILED"}, states  # every accepted request ended
    assert deployment.unfinished() == []  # nothing PENDING or RUNNING

    journal = [json.loads(line) for line in deployment.journal.read_text().splitlines()]
    applied = {(j["resource_id"], j["generation"], j["task_id"]) for j in journal}
    unexplained = []
    resources = {lb["id"]: lb for lb in deployment.every("loadbalancers")}
    for task_id, (kind, resource_id, name) in load.accepted.items():
        task = tasks[task_id]
        resource = resources[resource_id]
        _assert_no_fenced_result_applied(task)
        final = [h for h in task["history"] if h["applied"] and h["attempt"] == task["attempt"]]
        if kind == "fail":
            assert task["state"] == "FAILED" and task["error"]["message"] == f"told to fail #{name[6:]}", task
        if task["state"] == "SUCCEEDED":
            assert final and final[0]["outcome"] == "SUCCEEDED", task
            assert resource["provisioning_status"] == "ACTIVE" and resource["in_sync"], resource
            # ... and a driver really applied that generation, by its own journal.
            assert (resource_id, resource["generation"], task_id) in applied, resource
        elif kind != "fail":
            unexplained.append((name, task["error"]))
        else:
            assert resource["provisioning_status"] == "ERROR", resource
    # A task that was not told to fail may still fail only by running out of
    # attempts to chaos, and must say so.
    for name, error in unexplained:
        assert error["type"] in {"AgentLost", "ResultTimeout", "DriverTimeout", "AgentRestarted"}, (
            name,
            error,
        )

    letters = _dead_letters(deployment.amqp_url)
    by_id = {letter["id"] for letter in letters}
    assert chaos.poisoned <= by_id, chaos.poisoned - by_id  # every poison is dead-lettered
    others = [letter for letter in letters if letter["id"] not in chaos.poisoned]
    for letter in others:  # ... and nothing else, unexplained
        reason = letter["headers"].get("x-tether-dead-letter-reason") or letter["headers"].get(
            "x-first-death-reason"
        )
        assert reason, letter
        task_id = str(letter["id"]).split(".")[0]
        assert task_id in tasks and tasks[task_id]["state"] in {"SUCCEEDED", "FAILED"}, letter

    # The report.
    redeliveries = sum(h["redelivered"] for t in tasks.values() for h in t["history"])
    retries = sum(max(t["attempt"] - 1, 0) for t in tasks.values())
    reclaims = _time_to_reclaim(chaos.kills, tasks.values())
    rows = [
        ("tasks accepted", len(tasks)),
        ("succeeded / failed", f"{states['SUCCEEDED']} / {states['FAILED']}"),
        ("failed by chaos (attempts exhausted)", len(unexplained)),
        ("agent kills (SIGKILL)", len(chaos.kills)),
        ("plugin deaths between commit and publish", chaos.plugin_deaths),
        ("broker restarts", chaos.broker_restarts),
        ("requests refused while the plugin was down", load.refused),
        ("redeliveries", redeliveries),
        ("retries (attempts beyond the first)", retries),
        ("dead letters (injected / other)", f"{len(chaos.poisoned)} / {len(others)}"),
        ("seconds from first request to all settled", f"{settled:.1f}"),
    ]
    print("\n" + _table(rows))
    print(
        _table(
            [
                (
                    f"kill {i + 1}: {agent}",
                    f"{s:.2f} s to first re-claim" if s is not None else "held no task",
                )
                for i, (agent, s) in enumerate(reclaims)
            ]
        )
    )
    assert chaos.kills and chaos.plugin_deaths >= 1 and chaos.broker_restarts == 1


def _assert_no_fenced_result_applied(task: dict[str, Any]) -> None:
    """A result counts only if, when it arrived, no later attempt had been
    claimed: every applied result is from the attempt current at the time."""
    history = task["history"]
    for row in history:
        if not row["applied"]:
            continue
        later = [h for h in history if h["attempt"] > row["attempt"]]
        assert all(_time(h["claimed_at"]) >= _time(row["finished_at"]) for h in later), task


def _time_to_reclaim(
    kills: list[tuple[str, datetime.datetime]], tasks: Any
) -> list[tuple[str, float | None]]:
    """For each kill, seconds until another agent claimed a task the victim held."""
    claims = []
    for task in tasks:
        history = task["history"]
        for before, after in itertools.pairwise(history):
            claims.append((before["agent_id"], _time(before["claimed_at"]), _time(after["claimed_at"])))
    report = []
    for victim, killed_at in kills:
        delays = [
            (reclaimed - killed_at).total_seconds()
            for agent, claimed, reclaimed in claims
            if agent == victim and claimed <= killed_at <= reclaimed
        ]
        report.append((victim, min(delays) if delays else None))
    return report


def _time(value: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(value)


def _table(rows: list[tuple[str, Any]]) -> str:
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"  {label.ljust(width)}  {value}" for label, value in rows)
