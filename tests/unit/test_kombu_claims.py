"""Claims over kombu: the agent's claim channel against the plugin's claim
server, on kombu's in-memory transport."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from oslo_config import cfg
from starlette.testclient import TestClient

from tests.unit.conftest import wait_for
from tether.agent.claim_channel import ClaimChannel, ClaimTimeout
from tether.agent.plugin_api import ClaimFailed, PluginApi
from tether.common import claims, connection, transport, wire
from tether.common.claims import Claim
from tether.plugin.service import Plugin


class AgentLoop(connection.ConnectionLoop):
    """The part of an agent's work consumer that carries its claims."""

    tick = 0.01

    def __init__(self, broker: transport.Broker, channel: ClaimChannel) -> None:
        super().__init__(broker, "claims-test")
        self.channel = channel
        channel.wake = self.wake

    def on_connect(self, connection: kombu.Connection) -> None:
        self.channel.on_connect(connection)

    def on_tick(self, connection: kombu.Connection) -> None:
        self.channel.flush()

    def on_disconnect(self) -> None:
        self.channel.on_disconnect()


@pytest.fixture
def channel(conf: cfg.ConfigOpts) -> Iterator[ClaimChannel]:
    broker = transport.Broker(conf)
    channel = ClaimChannel(broker, "agent-1", timeout=2.0)
    loop = AgentLoop(broker, channel)
    loop.start()
    assert channel.connected.wait(5)
    yield channel
    loop.stop()


def _create(client: TestClient) -> str:
    return str(client.post("/v1/loadbalancers", json={"provider": "noop"}).json()["task"]["id"])


def _claim(task_id: str, claim_id: str = "c1", agent_id: str = "agent-1", **extra: Any) -> Claim:
    return Claim(task_id, agent_id, claim_id, redelivered=False, driver_timeout=60.0, **extra)


def test_concurrent_claims_travel_in_one_request_and_each_worker_gets_its_own_answer(
    client: TestClient, claim_server: Plugin, channel: ClaimChannel
) -> None:
    tasks = [_create(client) for _ in range(3)]
    answers: dict[str, claims.ClaimAnswer] = {}
    requests = 0
    decide = claim_server.pipeline.claims.decider.decide_in

    def counted(session: Any, batch: list[Claim]) -> list[claims.ClaimAnswer]:
        nonlocal requests
        requests += 1
        return decide(session, batch)

    claim_server.pipeline.claims.decider.decide_in = counted  # type: ignore[method-assign]
    ready = threading.Barrier(4)

    def work(task_id: str) -> None:
        ready.wait()
        answers[task_id] = channel.claim(_claim(task_id, f"claim-{task_id}"))

    def unknown() -> None:
        ready.wait()
        answers["no-such-task"] = channel.claim(_claim("no-such-task"))

    threads = [threading.Thread(target=work, args=(t,)) for t in tasks] + [threading.Thread(target=unknown)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert all(answers[t].run and answers[t].attempt == 1 for t in tasks)
    assert answers["no-such-task"].unknown and not answers["no-such-task"].run
    assert "does not exist" in (answers["no-such-task"].reason or "")
    assert requests < 4


def test_claims_that_come_while_a_batch_waits_for_the_write_turn_are_decided_with_it(
    client: TestClient, claim_server: Plugin, channel: ClaimChannel
) -> None:
    first, second = _create(client), _create(client)
    batches: list[list[str]] = []
    decide = claim_server.pipeline.claims.decider.decide_in

    def counted(session: Any, batch: list[Claim]) -> list[claims.ClaimAnswer]:
        batches.append([claim.task_id for claim in batch])
        return decide(session, batch)

    claim_server.pipeline.claims.decider.decide_in = counted  # type: ignore[method-assign]
    answers: dict[str, claims.ClaimAnswer] = {}

    def work(task_id: str) -> None:
        answers[task_id] = channel.claim(_claim(task_id, f"claim-{task_id}"))

    threads = [threading.Thread(target=work, args=(task_id,)) for task_id in (first, second)]
    with claim_server.sessionmaker.begin() as other:
        other.connection()  # another writer holds the turn
        threads[0].start()
        # The first request is taken, its tick waits for the turn.
        wait_for(lambda: not claim_server.pipeline.claims._pending and channel._sent)
        threads[1].start()
        # The second request is with the broker, not yet taken.
        wait_for(lambda: len(channel._sent) == 2)
    for thread in threads:
        thread.join(5)
    assert batches == [[first, second]]
    assert all(answers[t].run and answers[t].attempt == 1 for t in (first, second))


def test_an_unanswered_claim_times_out_and_the_same_claim_made_again_is_answered_alike(
    client: TestClient, plugin: Plugin, channel: ClaimChannel
) -> None:
    task_id = _create(client)
    channel.timeout = 0.3
    with pytest.raises(ClaimTimeout, match=f"no answer to the claim of task {task_id}"):
        channel.claim(_claim(task_id))
    plugin.pipeline.traffic.start()
    try:
        # The request made while no plugin listened is answered as well, to nobody.
        first = channel.claim(_claim(task_id))
        again = channel.claim(_claim(task_id))
    finally:
        plugin.pipeline.traffic.stop()
    assert (first.run, first.attempt) == (again.run, again.attempt) == (True, 1)


def _request(
    conf: cfg.ConfigOpts, body: bytes, reply_to: str | None = "tether.reply.test", answered: bool = True
) -> Any:
    """Send a claims request as raw bytes; the reply's body when it is ``answered``."""
    broker = transport.Broker(conf)
    replies: list[bytes] = []
    with broker.connect() as conn:
        broker.declare(conn, [broker.claims_queue()])
        reply_queue = kombu.Queue("tether.reply.test", auto_delete=True, no_ack=True)
        kombu.Consumer(
            conn.channel(), [reply_queue], no_ack=True, on_message=lambda m: replies.append(m.body)
        ).consume()
        kombu.Producer(conn.channel()).publish(
            body,
            exchange=broker.claims_exchange,
            routing_key=transport.CLAIMS_QUEUE,
            reply_to=reply_to,
            correlation_id="r1",
            content_type="application/json",
        )
        if answered:
            wait_for(lambda: _drain(conn) and replies, timeout=5)
    return replies[0] if replies else None


def _drain(conn: kombu.Connection) -> bool:
    try:
        conn.drain_events(timeout=0.05)
    except TimeoutError:
        pass
    return True


def test_a_malformed_claim_is_answered_with_its_error_and_the_others_of_its_request_are_decided(
    client: TestClient, claim_server: Plugin, conf: cfg.ConfigOpts
) -> None:
    task_id = _create(client)
    good = claims.encode_request([_claim(task_id)])
    body = good.replace(b'"claims":[', b'"claims":[{"task_id":"x","agent_id":"a"},')
    reply = _request(conf, body)
    first, second = wire.decode_claim_reply(reply)
    assert first.error_type == "MalformedMessage"
    assert "claims[0]" in (first.error_message or "") and "claim_id" in (first.error_message or "")
    assert second.run and second.attempt == 1


def test_an_unreadable_claims_request_is_dead_lettered_with_the_reason(
    claim_server: Plugin, conf: cfg.ConfigOpts
) -> None:
    broker = transport.Broker(conf)
    _request(conf, b'{"version": 7, "kind": "claims", "claims": []}', answered=False)
    with broker.connect() as conn:
        queue = broker.dead_letter_queue()(conn.default_channel)
        message = wait_for(lambda: queue.get(no_ack=True), timeout=5)
    reason = message.headers[transport.DEAD_LETTER_REASON]
    assert "claims message schema version 7 is unknown" in reason


def test_a_claims_request_without_reply_to_is_dead_lettered(
    claim_server: Plugin, conf: cfg.ConfigOpts
) -> None:
    broker = transport.Broker(conf)
    _request(conf, claims.encode_request([_claim("t")]), reply_to=None, answered=False)
    with broker.connect() as conn:
        queue = broker.dead_letter_queue()(conn.default_channel)
        message = wait_for(lambda: queue.get(no_ack=True), timeout=5)
    assert "no reply_to" in message.headers[transport.DEAD_LETTER_REASON]


def test_an_agent_claims_over_oslo_messaging_until_the_plugin_says_it_takes_kombu_claims(
    conf: cfg.ConfigOpts, client: TestClient, claim_server: Plugin, channel: ClaimChannel
) -> None:
    api = PluginApi(conf, channel)
    oslo_claims: list[str] = []
    kombu_claims: dict[str, Any] = {}

    def call(method: str, version: str, **kwargs: Any) -> Any:
        if method == "claim_batch":
            oslo_claims.extend(c["task_id"] for c in kwargs["claims"])
            return [{"run": True, "attempt": 9} for _ in kwargs["claims"]]
        # A plugin of the previous release says nothing of kombu claims.
        return {"admin_state_up": True, **kombu_claims}

    api._call = call  # type: ignore[method-assign]
    api.report_state({})
    assert not api.result_batches  # a plugin of the previous release reads one result per message
    assert api.claim("t-old", "agent-1", "c1", False, 60.0) == {"run": True, "attempt": 9}
    assert oslo_claims == ["t-old"]
    kombu_claims.update(claim_server.pipeline.endpoint.report_state({}, state=_state()))
    api.report_state({})
    assert api.kombu_claims and api.result_batches
    task_id = _create(client)
    assert api.claim(task_id, "agent-1", "c2", False, 60.0)["attempt"] == 1
    assert oslo_claims == ["t-old"]


def test_a_claim_the_plugin_refuses_over_kombu_fails_without_retrying(
    conf: cfg.ConfigOpts, claim_server: Plugin, channel: ClaimChannel
) -> None:
    api = PluginApi(conf, channel)
    api.kombu_claims = True
    with pytest.raises(ClaimFailed, match="MalformedMessage"):
        api.claim("t", "agent-1", "c\x00", False, 60.0)


def _state() -> dict[str, Any]:
    return {
        "agent_id": "agent-1",
        "host": "h",
        "providers": ["noop"],
        "started_at": "2026-01-01T00:00:00+00:00",
        "workers": 1,
        "in_flight": 0,
    }


def test_a_claim_whose_connection_closes_unanswered_is_made_again_at_once(
    client: TestClient, plugin: Plugin, conf: cfg.ConfigOpts
) -> None:
    broker = transport.Broker(conf)
    channel = ClaimChannel(broker, "agent-1", timeout=30.0)
    loop = AgentLoop(broker, channel)
    loop.start()
    assert channel.connected.wait(5)
    task_id = _create(client)
    failed: list[BaseException] = []

    def claim() -> None:
        try:
            channel.claim(_claim(task_id))
        except ClaimTimeout as exc:
            failed.append(exc)

    claiming = threading.Thread(target=claim)
    claiming.start()
    wait_for(lambda: channel._sent)  # sent; no claim server answers
    channel.on_disconnect()
    claiming.join(2)
    loop.stop()
    assert not claiming.is_alive(), "the worker waited out its 30 s instead"
    assert "connection closed before the claim" in str(failed[0])
