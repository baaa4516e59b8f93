"""New roots' outbox rows reach the relay with their commit: published
without being read back, and once, however they reach it."""

from __future__ import annotations

import collections
from typing import Any

import kombu
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import event

from tether.common import wire
from tether.plugin.db.models import Outbox, Row
from tether.plugin.service import Plugin
from tether.plugin.tasks import handoff


def _outbox(plugin: Plugin) -> list[Any]:
    with plugin.engine.connect() as conn:
        return list(conn.execute(sa.select(Outbox.id, Outbox.task_id).order_by(Outbox.id)))


def _published(plugin: Plugin) -> list[str]:
    """Task ids of the work messages on the noop queue, taken off it."""
    with kombu.Connection("memory://") as conn:
        queue = plugin.broker.work_queue("noop")(conn.default_channel)
        taken = []
        while (message := queue.get(no_ack=True)) is not None:
            taken.append(wire.decode_work(message.body).task_id)
        return taken


def test_a_new_roots_rows_are_handed_over_with_their_ids_and_published_without_a_read(
    client: TestClient, plugin: Plugin
) -> None:
    assert plugin.pipeline is not None
    relay = plugin.pipeline.relay
    lbs = [client.post("/v1/loadbalancers", json={"provider": "noop"}).json() for _ in range(3)]
    # An update is not a new root: its row is found by the relay's scan.
    client.put(f"/v1/loadbalancers/{lbs[0]['id']}", json={"name": "x"})
    handed = list(relay._handed)
    assert [(r.id, r.task_id) for r in handed] == _outbox(plugin)[:3]
    assert [r.task_id for r in handed] == [lb["task"]["id"] for lb in lbs]

    reads: list[str] = []
    event.listen(plugin.read_engine, "before_cursor_execute", lambda *a: reads.append(a[2]))
    with kombu.Connection("memory://") as conn:
        relay.on_connect(conn)
        assert relay.relay_once(conn) == 3
        assert not [s for s in reads if "outbox" in s]
        # Their delete waits for more (the claims delete most rows anyway)...
        assert [task for _, task in _outbox(plugin)] == [lb["task"]["id"] for lb in lbs]
        # ...and a scan that finds them published deletes them, once.
        relay.on_stop(conn)
        assert _outbox(plugin) == []
    assert _published(plugin) == [lb["task"]["id"] for lb in lbs]


def test_published_rows_are_deleted_an_interval_after_their_publish(
    client: TestClient, plugin: Plugin
) -> None:
    assert plugin.pipeline is not None
    relay = plugin.pipeline.relay
    clock = [100.0]
    relay._clock = lambda: clock[0]
    with kombu.Connection("memory://") as conn:
        relay.on_connect(conn)
        client.post("/v1/loadbalancers", json={"provider": "noop"})
        relay.relay_once(conn)
        client.post("/v1/loadbalancers", json={"provider": "noop"})
        clock[0] += relay.interval / 2
        relay.relay_once(conn)
        assert len(_outbox(plugin)) == 2
        clock[0] += relay.interval / 2
        client.post("/v1/loadbalancers", json={"provider": "noop"})
        relay.relay_once(conn)
        assert _outbox(plugin) == []
    assert len(_published(plugin)) == 3


def test_a_row_the_scan_published_before_its_hand_over_arrived_is_not_published_again(
    client: TestClient, plugin: Plugin
) -> None:
    assert plugin.pipeline is not None
    relay = plugin.pipeline.relay
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    late = list(relay._handed)
    relay._handed.clear()
    with kombu.Connection("memory://") as conn:
        relay.on_connect(conn)
        assert relay.relay_once(conn) == 1  # the scan found it
        relay.hand(late)
        relay.relay_once(conn)
    assert _published(plugin) == [lb["task"]["id"]]


def test_hand_overs_travel_in_datagrams_a_link_can_carry() -> None:
    def row(i: int, size: int) -> Row:
        return Row(id=i, task_id=f"t{i}", routing_key="noop", request_id=None, payload="x" * size)

    rows = [row(i, 10_000) for i in range(12)] + [row(99, handoff.MAX_BYTES)]
    datagrams = handoff.encode(rows)
    assert all(len(d) <= handoff.MAX_BYTES for d in datagrams)
    decoded = [r for d in datagrams for r in handoff.decode(d)]
    # The row too large for any datagram is left to the relay's scan.
    assert [(r.id, r.task_id, r.payload) for r in decoded] == [
        (r.id, r.task_id, r.payload) for r in rows[:-1]
    ]


def test_hand_overs_beyond_what_the_relay_holds_are_left_to_its_scan(
    client: TestClient, plugin: Plugin
) -> None:
    assert plugin.pipeline is not None
    relay = plugin.pipeline.relay
    # As if the broker had been away for long: the relay holds one hand-over.
    relay._handed = collections.deque(maxlen=1)
    lbs = [client.post("/v1/loadbalancers", json={"provider": "noop"}).json() for _ in range(2)]
    assert [r.task_id for r in relay._handed] == [lbs[1]["task"]["id"]]
    with kombu.Connection("memory://") as conn:
        relay.on_connect(conn)
        while relay.relay_once(conn):
            pass
    assert sorted(_published(plugin)) == sorted(lb["task"]["id"] for lb in lbs)
    assert _outbox(plugin) == []
