"""``tether-manage dead-letters`` on a private RabbitMQ node, run as an operator runs it."""

from __future__ import annotations

import json
import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from oslo_config import cfg

from tether.common import config, transport

from .daemons import BIN, free_port, write_ini
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

DEAD_LETTER_QUEUE = transport.DEAD_LETTER_QUEUE


def _conf(transport_url: str, **messaging: Any) -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    # load() also registers what tether borrows from libraries (transport_url).
    config.load(conf, [], "test_dead_letters")
    conf.set_override("transport_url", transport_url)
    for name, value in messaging.items():
        conf.set_override(name, value, group=config.MESSAGING_GROUP)
    return conf


@pytest.fixture
def broker(rabbitmq: RabbitMQNode) -> Iterator[transport.Broker]:
    """tether's view of the private node, with an empty dead-letter queue.

    The node is shared: other modules may leave dead letters behind, and
    test_pipeline reads the dead-letter queue expecting only its own.
    """
    broker = transport.Broker(_conf(rabbitmq.url))
    with broker.connect() as connection:
        broker.declare(connection, [broker.work_queue("noop")])
        broker.dead_letter_queue().bind(connection.default_channel).purge()
    yield broker
    _drain(rabbitmq, DEAD_LETTER_QUEUE)


@pytest.fixture
def ini(rabbitmq: RabbitMQNode, tmp_path: pathlib.Path) -> pathlib.Path:
    return write_ini(tmp_path / "manage.ini", {"DEFAULT": {"transport_url": rabbitmq.url}})


def _manage(ini: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tether-manage"), "--config-file", str(ini), "dead-letters", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _take(connection: kombu.Connection, queue_name: str, message_id: str, timeout: float = 10.0) -> Any:
    """The message with ``message_id``, unacked; others stay unacked until the connection closes."""
    queue = kombu.Queue(queue_name, no_declare=True)(connection.channel())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = queue.get(no_ack=False)
        if message is None:
            time.sleep(0.05)
        elif message.properties.get("message_id") == message_id:
            return message
    raise AssertionError(f"no message {message_id} in {queue_name} within {timeout} s")


def _message_ids(rabbitmq: RabbitMQNode, queue_name: str) -> list[str]:
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        queue = kombu.Queue(queue_name, no_declare=True)(connection.channel())
        ids = []
        while (message := queue.get(no_ack=False)) is not None:
            ids.append(message.properties.get("message_id"))
    return ids


def _drain(rabbitmq: RabbitMQNode, queue_name: str, quiet: float = 0.3) -> None:
    """Delete every message, also those a channel closed a moment ago is still handing back."""
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        queue = kombu.Queue(queue_name, no_declare=True)(connection.channel())
        quiet_from = time.monotonic()
        while time.monotonic() - quiet_from < quiet:
            if queue.get(no_ack=True) is None:
                time.sleep(0.05)
            else:
                quiet_from = time.monotonic()


def _assert_holds(
    rabbitmq: RabbitMQNode, queue_name: str, expected: list[str], timeout: float = 10.0
) -> None:
    """The queue holds exactly ``expected`` once the broker has settled.

    A quorum queue takes back the messages of a closed channel a moment after
    the close, when the command that held them may already have exited; a
    look too early misses those and hands back the others ahead of them, so
    order is not compared.
    """
    deadline = time.monotonic() + timeout
    while (ids := sorted(_message_ids(rabbitmq, queue_name))) != sorted(expected):
        if time.monotonic() > deadline:
            assert ids == sorted(expected)
        time.sleep(0.1)


def _dead_letter_as_tether_does(broker: transport.Broker, body: bytes, reason: str) -> str:
    """Send ``body`` through tether.work.noop and dead-letter it as a consumer does."""
    message_id = uuid.uuid4().hex
    with broker.connect() as connection:
        publisher = transport.Publisher(connection, broker.confirm_timeout)
        publisher.publish([transport.Envelope(broker.work_exchange, "noop", body, message_id)])
        dead_letters = transport.DeadLetters(broker, "work")
        dead_letters.add(_take(connection, "tether.work.noop", message_id), reason)
        dead_letters.flush(publisher)
        publisher.close()
    return message_id


def _publish_dead_letter(broker: transport.Broker, headers: dict[str, str]) -> str:
    """Publish straight to the dead-letter exchange with ``headers``, as nothing in tether does."""
    message_id = uuid.uuid4().hex
    with broker.connect() as connection:
        publisher = transport.Publisher(connection, broker.confirm_timeout)
        publisher.publish([transport.Envelope(broker.dead_letter_exchange, "", b"{}", message_id, headers)])
        publisher.close()
    return message_id


def _table_row(stdout: str, message_id: str) -> str:
    [row] = [line for line in stdout.splitlines() if message_id in line]
    return row


def test_list_shows_tethers_own_dead_letters_with_their_reason_and_leaves_them_in_the_queue(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    garbled = _dead_letter_as_tether_does(broker, b"\x00 not json", "body is not JSON: Expecting value")
    work_body = json.dumps({"version": 42, "kind": "work", "task": {"id": "task-42"}}).encode()
    work = _dead_letter_as_tether_does(broker, work_body, "message version 42 is unknown")

    table = _manage(ini, "list")
    assert table.returncode == 0, table.stderr
    header, *_rows, total = table.stdout.splitlines()
    assert " ".join(header.split()) == "# MESSAGE ID REASON EXCHANGE → ROUTING KEY TASK ID SIZE"
    row = " ".join(_table_row(table.stdout, garbled).split())
    assert row == f"1 {garbled} body is not JSON: Expecting value tether.work → noop - 10"
    assert "message version 42 is unknown" in _table_row(table.stdout, work)
    assert "task-42" in _table_row(table.stdout, work)
    assert total == f"2 message(s) in {DEAD_LETTER_QUEUE}."

    lines = _manage(ini, "list", "-f", "json")
    assert lines.returncode == 0, lines.stderr
    assert [json.loads(line) for line in lines.stdout.splitlines()] == [
        {
            "position": 1,
            "message_id": garbled,
            "reason": "body is not JSON: Expecting value",
            "exchange": "tether.work",
            "routing_key": "noop",
            "task_id": None,
            "size": 10,
        },
        {
            "position": 2,
            "message_id": work,
            "reason": "message version 42 is unknown",
            "exchange": "tether.work",
            "routing_key": "noop",
            "task_id": "task-42",
            "size": len(work_body),
        },
    ]

    first = _manage(ini, "list", "--limit", "1")
    assert first.returncode == 0, first.stderr
    assert work not in first.stdout
    assert f"2 message(s) in {DEAD_LETTER_QUEUE}; listed the first 1" in first.stdout
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [garbled, work])


def test_requeue_sends_a_message_back_to_its_original_queue_and_removes_it_from_the_dead_letter_queue(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    body = {"version": 1, "kind": "work", "task": {"id": "task-7"}}
    message_id = _dead_letter_as_tether_does(broker, json.dumps(body).encode(), "the database was away")

    result = _manage(ini, "requeue")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"requeued 1 message(s) from {DEAD_LETTER_QUEUE}." in result.stdout
    assert f"{message_id} → tether.work → noop" in result.stdout
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        message = _take(connection, "tether.work.noop", message_id)
        assert json.loads(message.body) == body
        assert not [name for name in message.headers if name.startswith("x-tether-") or name == "x-death"]
        assert message.delivery_info["routing_key"] == "noop"
        message.ack()
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [])


def test_requeue_by_id_leaves_the_others_and_reports_what_it_could_not_send_back(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    kept = _dead_letter_as_tether_does(broker, b"{}", "not asked for")
    chosen = _dead_letter_as_tether_does(broker, b"{}", "asked for")
    stray = _publish_dead_letter(broker, {})  # nobody says whence

    result = _manage(ini, "requeue", "--id", chosen, "--id", stray, "--id", "no-such-id")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"requeued 1 message(s) from {DEAD_LETTER_QUEUE}." in result.stdout
    assert f"{stray}: no header says where it came from" in result.stdout
    assert f"no message in {DEAD_LETTER_QUEUE} has the id: no-such-id" in result.stdout
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        _take(connection, "tether.work.noop", chosen).ack()
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [kept, stray])


def test_requeue_leaves_a_message_whose_exchange_or_queue_is_gone_and_carries_on_with_the_rest(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    def origin(exchange: str, routing_key: str) -> dict[str, str]:
        return {
            transport.DEAD_LETTER_REASON: "test",
            transport.ORIGINAL_EXCHANGE: exchange,
            transport.ORIGINAL_ROUTING_KEY: routing_key,
        }

    no_exchange = _publish_dead_letter(broker, origin("tether.gone", "noop"))
    no_queue = _publish_dead_letter(broker, origin("tether.work", "no-such-provider"))
    fine = _dead_letter_as_tether_does(broker, b"{}", "fine")

    result = _manage(ini, "requeue")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"requeued 1 message(s) from {DEAD_LETTER_QUEUE}." in result.stdout
    assert f"{no_exchange}: the broker refused it: " in result.stdout
    assert "no exchange 'tether.gone'" in result.stdout
    assert (
        f"{no_queue}: no queue is bound to exchange 'tether.work' with routing key 'no-such-provider'"
        in result.stdout
    )
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        _take(connection, "tether.work.noop", fine).ack()
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [no_exchange, no_queue])


def test_purge_refuses_without_yes_and_empties_the_queue_with_it(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    ids = [_dead_letter_as_tether_does(broker, b"{}", f"reason {i}") for i in range(3)]

    refused = _manage(ini, "purge")
    assert refused.returncode == 1
    assert "add --yes" in refused.stderr
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, ids)

    purged = _manage(ini, "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == f"purged 3 message(s) from {DEAD_LETTER_QUEUE}.\n"
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [])


def test_a_message_rabbitmq_dead_lettered_is_listed_with_rabbitmqs_reason_and_can_be_requeued(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    provider = f"doomed-{uuid.uuid4().hex[:8]}"
    doomed = transport.Broker(_conf(rabbitmq.url, max_deliveries=1))
    queue = doomed.work_queue(provider)
    message_id, body = uuid.uuid4().hex, b'{"task_id": "t-9"}'
    with doomed.connect() as connection:
        doomed.declare(connection, [queue])
        publisher = transport.Publisher(connection, doomed.confirm_timeout)
        publisher.publish([transport.Envelope(doomed.work_exchange, provider, body, message_id)])
        publisher.close()
        # Given back twice: the second return goes past x-delivery-limit 1.
        for _ in range(2):
            _take(connection, queue.name, message_id).reject(requeue=True)
    try:
        _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [message_id])

        listed = _manage(ini, "list", "-f", "json")
        assert listed.returncode == 0, listed.stderr
        assert [json.loads(line) for line in listed.stdout.splitlines()] == [
            {
                "position": 1,
                "message_id": message_id,
                "reason": f"RabbitMQ: delivery_limit in queue {queue.name}",
                "exchange": "tether.work",
                "routing_key": provider,
                "task_id": "t-9",
                "size": len(body),
            }
        ]
        assert "RabbitMQ: delivery_limit" in _table_row(_manage(ini, "list").stdout, message_id)

        requeued = _manage(ini, "requeue")
        assert requeued.returncode == 0, requeued.stdout + requeued.stderr
        with kombu.Connection(rabbitmq.amqp_url) as connection:
            message = _take(connection, queue.name, message_id)
            assert "x-death" not in message.headers
            message.ack()
        _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [])
    finally:
        with kombu.Connection(rabbitmq.amqp_url) as connection:
            queue.bind(connection.default_channel).delete()


def test_an_unreachable_broker_is_named_without_its_password(tmp_path: pathlib.Path) -> None:
    port = free_port()  # nothing listens there
    url = f"rabbit://guest:s3cret@127.0.0.1:{port}/"
    ini = write_ini(tmp_path / "manage.ini", {"DEFAULT": {"transport_url": url}})
    result = _manage(ini, "list")
    assert result.returncode == 1, result.stdout + result.stderr
    masked = transport.parse_url(url).masked
    assert masked.startswith(f"rabbit://guest:***@127.0.0.1:{port}/")
    assert f"tether-manage: cannot reach the broker at {masked}: " in result.stderr
    assert "check [DEFAULT] transport_url" in result.stderr
    assert "s3cret" not in result.stdout + result.stderr


def test_dead_letters_refuses_to_run_without_a_transport_url(tmp_path: pathlib.Path) -> None:
    ini = write_ini(tmp_path / "manage.ini", {"DEFAULT": {"state_path": tmp_path}})
    result = _manage(ini, "list")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "[DEFAULT] transport_url is required by dead-letters but not set" in result.stderr
    assert str(ini) in result.stderr
