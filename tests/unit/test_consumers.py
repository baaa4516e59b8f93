"""The connection-thread logic of the agent's and the plugin's consumers,
driven with stand-in broker messages."""

from __future__ import annotations

import itertools
import threading
from typing import Any

import kombu
import pytest
from oslo_config import cfg

from tests.unit.conftest import sample_work, wait_for
from tether.agent.acks import Acks
from tether.agent.consumer import WorkConsumer
from tether.agent.runner import Runner
from tether.common import messages, transport, wire
from tether.common.publisher import Publisher
from tether.common.states import Outcome
from tether.drivers.base import Change, Driver
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.tasks.results import ResultConsumer, ResultRecorder


class StandInMessage:
    """What kombu hands a consumer callback, minus the broker."""

    tags = itertools.count(1)

    def __init__(self, body: bytes, redelivered: bool = False) -> None:
        self.body = body
        self.headers: dict[str, Any] = {}
        self.properties = {"message_id": "m"}
        self.delivery_info = {"redelivered": redelivered, "exchange": "tether.work", "routing_key": "noop"}
        self.delivery_tag = next(self.tags)
        self.acked = 0

    @property
    def acknowledged(self) -> bool:
        return self.acked > 0

    def ack(self, multiple: bool = False) -> None:
        self.acked += 1


class StandInPlugin:
    """Answers claims the way a plugin does for a fresh task."""

    timeout = 1.0

    def __init__(self) -> None:
        self.claims = 0

    def claim_until_answered(self, task_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.claims += 1
        return {"run": True, "attempt": self.claims, "max_attempts": 3}


def _runner(drivers: dict[str, Driver], driver_timeout: float = 30.0) -> Runner:
    return Runner(drivers, StandInPlugin(), "agent-1", "host", driver_timeout)  # type: ignore[arg-type]


class GatedDriver(Driver):
    resource_types = frozenset({"loadbalancer"})

    def __init__(self) -> None:
        self.calls = 0
        self.gate = threading.Event()

    def create(self, change: Change) -> None:
        self.calls += 1
        assert self.gate.wait(10)

    update = delete = create


def _work_body() -> bytes:
    return messages.encode(sample_work("gated"))


@pytest.fixture
def connection(conf: cfg.ConfigOpts) -> Any:
    broker = transport.Broker(conf)
    with broker.connect() as conn:
        broker.declare(conn, [broker.results_queue()])
        yield broker, conn


def test_a_redelivery_of_a_running_task_joins_the_running_call(connection: Any) -> None:
    broker, conn = connection
    driver = GatedDriver()
    consumer = WorkConsumer(
        broker,
        _runner({"gated": driver}),
        ["gated"],
        workers=4,
        prefetch=8,
        shutdown_timeout=1,
    )
    consumer._publisher = Publisher(conn, 5)
    first, again = StandInMessage(_work_body()), StandInMessage(_work_body(), redelivered=True)
    consumer._on_message(first)
    wait_for(lambda: driver.calls == 1)
    consumer._on_message(again)
    driver.gate.set()
    wait_for(lambda: not consumer.in_flight)
    consumer.on_tick(conn)
    assert driver.calls == 1
    assert (first.acked, again.acked) == (1, 1)


def test_an_unreadable_work_message_is_dead_lettered_then_acked(connection: Any) -> None:
    broker, conn = connection
    consumer = WorkConsumer(broker, _runner({}), ["gated"], workers=1, prefetch=1, shutdown_timeout=1)
    consumer._publisher = Publisher(conn, 5)
    garbage = StandInMessage(b"\xff\xfe")
    consumer._on_message(garbage)
    assert garbage.acked == 0  # not before the dead-letter copy is published
    consumer.on_tick(conn)
    assert garbage.acked == 1
    dead = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True)
    assert "not JSON" in dead.headers[transport.DEAD_LETTER_REASON]


def _record(consumer: ResultConsumer, conn: Any) -> None:
    """What the claims and results loop does with the results delivered when
    it records them in a transaction of their own (``AgentTraffic._apart``)."""
    consumer.flush_dead_letters()
    batch = consumer.take()
    if batch:
        consumer.record_alone(batch, conn)


class FlakyRecorder(ResultRecorder):
    def __init__(self, error: Exception, bad_task: str | None = None) -> None:
        self.error = error
        self.bad_task = bad_task
        self.recorded: list[str] = []

    def record(self, results: Any, more: Any = None) -> None:
        if self.bad_task is None or any(r.task_id == self.bad_task for r in results):
            raise self.error
        self.recorded.extend(r.task_id for r in results)


def _result(task_id: str) -> StandInMessage:
    return StandInMessage(
        messages.encode(messages.Result(task_id=task_id, attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a"))
    )


def test_results_stay_unacked_while_the_database_is_down(connection: Any) -> None:
    broker, conn = connection
    down = DatabaseUnavailable(detail="could not connect", retry_after=1)
    consumer = ResultConsumer(broker, FlakyRecorder(down), batch=10)
    consumer._publisher = Publisher(conn, 5)
    results = [_result("t1"), _result("t2")]
    for message in results:
        consumer._on_message(message)
    _record(consumer, conn)
    assert [m.acked for m in results] == [0, 0]
    assert len(consumer._pending) == 2


def test_one_result_that_cannot_be_recorded_is_dead_lettered_and_the_rest_recorded(
    connection: Any,
) -> None:
    broker, conn = connection
    recorder = FlakyRecorder(ValueError("bad data"), bad_task="t2")
    consumer = ResultConsumer(broker, recorder, batch=10)
    consumer._publisher = Publisher(conn, 5)
    results = [_result("t1"), _result("t2"), _result("t3")]
    for message in results:
        consumer._on_message(message)
    _record(consumer, conn)
    assert recorder.recorded == ["t1", "t3"]
    assert [m.acked for m in results] == [1, 1, 1]
    dead = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True)
    assert "recording the result of task 't2' failed: bad data" in dead.headers[transport.DEAD_LETTER_REASON]


def _results(*task_ids: str) -> StandInMessage:
    message = StandInMessage(
        messages.encode(
            messages.Results(
                results=[
                    messages.Result(task_id=t, attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a")
                    for t in task_ids
                ]
            )
        )
    )
    message.properties["type"] = messages.RESULTS_TYPE
    return message


class UnknownTasks(ResultRecorder):
    def __init__(self, unknown: set[str]) -> None:
        self.unknown = unknown
        self.recorded: list[str] = []
        self.batches = 0

    def record(self, results: Any, more: Any = None) -> set[str]:
        # As the database's write turn is taken: what came meanwhile joins.
        results = [*results, *(more() if more is not None else [])]
        self.batches += 1
        self.recorded.extend(r.task_id for r in results if r.task_id not in self.unknown)
        return {r.task_id for r in results if r.task_id in self.unknown}


def test_results_in_one_message_are_recorded_with_the_others_and_it_is_acked_once(connection: Any) -> None:
    broker, conn = connection
    recorder = UnknownTasks(set())
    consumer = ResultConsumer(broker, recorder, batch=10)
    consumer._publisher = Publisher(conn, 5)
    together, alone = _results("t1", "t2", "t3"), _result("t4")
    consumer._on_message(together)
    consumer._on_message(alone)
    _record(consumer, conn)
    assert recorder.recorded == ["t1", "t2", "t3", "t4"]
    assert (together.acked, alone.acked) == (1, 1)


def test_a_results_message_with_a_result_for_no_task_is_dead_lettered_once_the_others_are_recorded(
    connection: Any,
) -> None:
    broker, conn = connection
    recorder = UnknownTasks({"t2", "t3"})
    consumer = ResultConsumer(broker, recorder, batch=10)
    consumer._publisher = Publisher(conn, 5)
    together = _results("t1", "t2", "t3")
    consumer._on_message(together)
    _record(consumer, conn)
    assert recorder.recorded == ["t1"]
    assert together.acked == 1  # by the dead-lettering, after its copy is confirmed
    dead = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True)
    reason = dead.headers[transport.DEAD_LETTER_REASON]
    assert "no task 't2' exists" in reason and "no task 't3' exists" in reason
    assert reason.endswith("its other results were recorded")
    assert dead.properties["type"] == messages.RESULTS_TYPE  # so a requeue is read as results again
    assert kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True) is None


def test_results_that_come_while_a_batch_waits_for_the_write_turn_are_recorded_with_it(
    connection: Any,
) -> None:
    broker, conn = connection
    recorder = UnknownTasks(set())
    consumer = ResultConsumer(broker, recorder, batch=10)
    consumer.on_connect(conn)
    first = _result("t1")
    consumer._on_message(first)
    kombu.Producer(conn.default_channel).publish(
        messages.encode(messages.Result(task_id="t2", attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a")),
        exchange=broker.results_queue().exchange,
        routing_key=broker.results_queue().routing_key,
        content_type="application/json",
        content_encoding="utf-8",
    )
    _record(consumer, conn)
    assert (recorder.recorded, recorder.batches) == (["t1", "t2"], 1)
    assert first.acked == 1
    assert kombu.Queue(broker.results_queue().name)(conn.default_channel).get(no_ack=True) is None


def test_a_malformed_result_among_good_ones_is_refused_alone(connection: Any) -> None:
    broker, conn = connection
    recorder = UnknownTasks(set())
    consumer = ResultConsumer(broker, recorder, batch=10)
    consumer._publisher = Publisher(conn, 5)
    good = messages.Result(task_id="t1", attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a")
    body = messages.encode(messages.Results(results=[good, good])).replace(b'"attempt":1', b'"attempt":-1', 1)
    mixed = StandInMessage(body)
    mixed.properties["type"] = messages.RESULTS_TYPE
    consumer._on_message(mixed)
    _record(consumer, conn)
    assert recorder.recorded == ["t1"]
    assert mixed.acked == 1
    dead = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True)
    assert (
        "results[0] of the results message breaks its schema at $.attempt"
        in dead.headers[transport.DEAD_LETTER_REASON]
    )


def test_the_agent_sends_a_ticks_results_in_one_message_once_the_plugin_reads_them(connection: Any) -> None:
    broker, _ = connection
    plugin = StandInPlugin()
    consumer = WorkConsumer(
        broker,
        Runner({}, plugin, "agent-1", "host-1", 30.0),
        ["noop"],
        workers=1,
        prefetch=1,
        shutdown_timeout=1,
    )
    results = [messages.Result(task_id=t, attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a") for t in "ab"]
    assert [e.type for e in consumer.outgoing.envelopes(results)] == [None, None]
    plugin.result_batches = True  # type: ignore[attr-defined]
    [envelope] = consumer.outgoing.envelopes(results)
    assert envelope.type == messages.RESULTS_TYPE and envelope.message_id == "a.1+1"
    raws = wire.decode_results(envelope.body)
    assert [wire.decode_batched_result(raw, i) for i, raw in enumerate(raws)] == results
    assert [e.type for e in consumer.outgoing.envelopes(results[:1])] == [None]


class Channel:
    """Counts the ack frames a channel would send, as RabbitMQ would take them."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bool]] = []
        self.acked: set[int] = set()

    def message(self, tag: int) -> Any:
        channel = self

        class Delivered:
            delivery_tag = tag
            acknowledged = False

            def ack(self, multiple: bool = False) -> None:
                assert tag not in channel.acked, (
                    f"delivery tag {tag} acked twice: RabbitMQ closes the channel"
                )
                channel.frames.append((tag, multiple))
                channel.acked |= {t for t in channel.unacked if t <= tag} if multiple else {tag}
                self.acknowledged = True

        return Delivered()

    unacked: set[int] = set()


def test_work_finished_in_order_is_acked_in_one_frame_and_nothing_is_acked_twice() -> None:
    channel = Channel()
    acks = Acks()
    delivered = [channel.message(tag) for tag in range(1, 7)]
    channel.unacked = set(range(1, 7))
    for message in delivered:
        acks.delivered(message)
    # 1-3 finished, 5 finished, 4 and 6 still run: 1-3 in one frame, 5 on its own.
    assert acks.ack([delivered[0], delivered[2], delivered[1], delivered[4]]) == 2
    assert channel.frames == [(3, True), (5, False)]
    channel.unacked -= channel.acked
    # 4 and 6 finish: 5 is acked already, so one frame covers both of them.
    assert acks.ack([delivered[3], delivered[5]]) == 1
    assert channel.frames[-1] == (6, True)
    assert channel.acked == set(range(1, 7))


def test_a_delivery_being_dead_lettered_is_not_acked_by_someone_elses_frame() -> None:
    channel = Channel()
    channel.unacked = {1, 2, 3}
    acks = Acks()
    first, bad, third = (channel.message(tag) for tag in (1, 2, 3))
    for message in (first, bad, third):
        acks.delivered(message)
    # 2 waits for its dead-letter copy to be confirmed: 1 and 3 go one by one.
    assert acks.ack([first, third]) == 2
    assert 2 not in channel.acked
    bad.ack()
    assert channel.acked == {1, 2, 3}
