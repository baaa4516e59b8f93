"""``tether-manage dead-letters`` on a private RabbitMQ node, run as an operator runs it."""

from __future__ import annotations

import datetime
import json
import pathlib
import subprocess
import time
import uuid
import zlib
from collections.abc import Iterator
from typing import Any

import amqp
import kombu
import pytest
from oslo_config import cfg

from tether.common import config, dead_letter_reader, dead_lettering, transport
from tether.common.publisher import Envelope, Publisher

from .daemons import BIN, Deployment, free_port, write_ini
from .rabbitmq import RabbitMQNode

pytestmark = [pytest.mark.functional, pytest.mark.no_database]

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
        publisher = Publisher(connection, broker.confirm_timeout)
        publisher.publish([Envelope(broker.work_exchange, "noop", body, message_id)])
        dead_letters = dead_lettering.DeadLetters(broker, "work")
        dead_letters.add(_take(connection, "tether.work.noop", message_id), reason)
        dead_letters.flush(publisher)
        publisher.close()
    return message_id


def _publish_dead_letter(broker: transport.Broker, headers: dict[str, Any]) -> str:
    """Publish straight to the dead-letter exchange with ``headers``, as nothing in tether does."""
    message_id = uuid.uuid4().hex
    with broker.connect() as connection:
        publisher = Publisher(connection, broker.confirm_timeout)
        publisher.publish([Envelope(broker.dead_letter_exchange, "", b"{}", message_id, headers)])
        publisher.close()
    return message_id


def _wait_for_consumers(connection: kombu.Connection, queue: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    channel = connection.channel()
    while True:
        try:
            if channel.queue_declare(queue, passive=True).consumer_count:
                return
        except amqp.exceptions.NotFound:
            channel = connection.channel()  # the broker closed the channel
        assert time.monotonic() < deadline, f"nothing consumes {queue} within {timeout:g} s"
        time.sleep(0.1)


def _listed(ini: pathlib.Path) -> dict[str, dict[str, Any]]:
    """message id → what `list -f json` says of it."""
    listed = _manage(ini, "list", "-f", "json")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    return {letter["message_id"]: letter for letter in map(json.loads, listed.stdout.splitlines())}


def _listed_with(ini: pathlib.Path, message_id: str, words: str, timeout: float = 30.0) -> dict[str, Any]:
    """What `list -f json` says of ``message_id`` once its reason has ``words``."""
    deadline = time.monotonic() + timeout
    while True:
        letter = _listed(ini).get(message_id)
        if letter is not None and words in letter["reason"]:
            return letter
        assert time.monotonic() < deadline, f"{message_id} not dead-lettered with {words!r}: {letter}"
        time.sleep(0.5)


def _raw_headers(amqp_url: str, message_id: str) -> dict[str, Any]:
    """The headers the broker holds for a dead letter, read without kombu's decoding."""
    with kombu.Connection(amqp_url) as connection:
        channel = connection.channel()
        while (message := channel.basic_get(DEAD_LETTER_QUEUE, no_ack=False)) is not None:
            if message.properties.get("message_id") == message_id:
                return dict(message.properties.get("application_headers") or {})
    raise AssertionError(f"no dead letter {message_id}")


def _table_row(stdout: str, message_id: str) -> str:
    [row] = [line for line in stdout.splitlines() if message_id in line]
    return row


def _undated(letter: dict[str, Any]) -> dict[str, Any]:
    """``letter`` without its time of death, once that is checked to be a
    time of this day: tether's header or RabbitMQ's x-death."""
    dead_at = datetime.datetime.fromisoformat(letter.pop("dead_at"))
    assert abs(datetime.datetime.now(datetime.UTC) - dead_at) < datetime.timedelta(hours=1)
    return letter


def test_list_shows_tethers_own_dead_letters_with_their_reason_and_leaves_them_in_the_queue(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    garbled = _dead_letter_as_tether_does(broker, b"\x00 not json", "body is not JSON: Expecting value")
    work_body = json.dumps({"version": 42, "kind": "work", "task": {"id": "task-42"}}).encode()
    work = _dead_letter_as_tether_does(broker, work_body, "message version 42 is unknown")

    table = _manage(ini, "list")
    assert table.returncode == 0, table.stderr
    header, *_rows, total = table.stdout.splitlines()
    assert " ".join(header.split()) == "# MESSAGE ID REASON EXCHANGE → ROUTING KEY TASK ID SIZE BODY"
    row = " ".join(_table_row(table.stdout, garbled).split())
    assert row == f"1 {garbled} body is not JSON: Expecting value tether.work → noop - 10 \\x00 not json"
    assert "message version 42 is unknown" in _table_row(table.stdout, work)
    assert "task-42" in _table_row(table.stdout, work)
    assert total == f"2 message(s) in {DEAD_LETTER_QUEUE}."

    lines = _manage(ini, "list", "-f", "json")
    assert lines.returncode == 0, lines.stderr
    assert [_undated(json.loads(line)) for line in lines.stdout.splitlines()] == [
        {
            "position": 1,
            "message_id": garbled,
            "reason": "body is not JSON: Expecting value",
            "exchange": "tether.work",
            "routing_key": "noop",
            "task_id": None,
            "size": 10,
            "preview": "\\x00 not json",
            "unreadable": None,
            "queue": "tether.work.noop",
        },
        {
            "position": 2,
            "message_id": work,
            "reason": "message version 42 is unknown",
            "exchange": "tether.work",
            "routing_key": "noop",
            "task_id": "task-42",
            "size": len(work_body),
            "preview": work_body.decode(),
            "unreadable": None,
            "queue": "tether.work.noop",
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
        publisher = Publisher(connection, doomed.confirm_timeout)
        publisher.publish([Envelope(doomed.work_exchange, provider, body, message_id)])
        publisher.close()
        # Given back twice: the second return goes past x-delivery-limit 1.
        for _ in range(2):
            _take(connection, queue.name, message_id).reject(requeue=True)
    try:
        _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [message_id])

        listed = _manage(ini, "list", "-f", "json")
        assert listed.returncode == 0, listed.stderr
        assert [_undated(json.loads(line)) for line in listed.stdout.splitlines()] == [
            {
                "position": 1,
                "message_id": message_id,
                "reason": f"RabbitMQ: delivery_limit in queue {queue.name}",
                "exchange": "tether.work",
                "routing_key": provider,
                "task_id": "t-9",
                "size": len(body),
                "preview": body.decode(),
                "unreadable": None,
                "queue": queue.name,
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


def test_a_message_with_a_compression_header_kombu_cannot_undo_is_dead_lettered_readable_and_handled(
    deployment: Deployment, tmp_path: pathlib.Path
) -> None:
    ini = write_ini(tmp_path / "manage.ini", {"DEFAULT": {"transport_url": deployment.transport_url}})
    with kombu.Connection(deployment.amqp_url) as connection:
        # Sent before an agent has declared its queues, the messages below
        # would be routed nowhere and dropped by the broker.
        _wait_for_consumers(connection, "tether.work.noop")
        kombu.Queue(DEAD_LETTER_QUEUE, no_declare=True)(connection.channel()).purge()
    task_id = f"no-such-task-{uuid.uuid4().hex[:8]}"
    resource = {"type": "loadbalancer", "id": "r", "project_id": "p", "attributes": {}}
    work = {
        "version": 1,
        "kind": "work",
        "task": {
            "id": task_id,
            "operation": "create",
            "resource_type": "loadbalancer",
            "resource_id": "r",
            "root_id": "r",
            "generation": 1,
            "attempt": 1,
            "project_id": "p",
            "provider": "noop",
        },
        "resource": resource,
        "tree": resource,
    }
    body, message_id, gzipped = json.dumps(work).encode(), uuid.uuid4().hex, uuid.uuid4().hex
    with kombu.Connection(deployment.amqp_url) as connection:
        producer = kombu.Producer(connection.channel())
        for an_id, raw, compression in [
            (message_id, body, "application/x-bogus"),
            # One kombu can undo, around a body that is not JSON.
            (gzipped, zlib.compress(b"not json"), "application/x-gzip"),
        ]:
            producer.publish(
                raw,
                exchange="tether.work",
                routing_key="noop",
                content_type="application/json",
                content_encoding="binary",
                headers={"compression": compression},
                message_id=an_id,
                delivery_mode=2,
                retry=False,
            )

    letter = _listed_with(ini, message_id, "cannot be decoded")
    assert "its 'compression' header says 'application/x-bogus'" in letter["reason"]
    assert (letter["exchange"], letter["routing_key"], letter["task_id"]) == ("tether.work", "noop", task_id)
    assert (letter["size"], letter["unreadable"]) == (len(body), None)
    assert letter["preview"] == body.decode()[: dead_letter_reader.PREVIEW_CHARS - 1] + "…"
    table = _manage(ini, "list")
    assert table.returncode == 0, table.stderr
    assert "cannot be decoded" in _table_row(table.stdout, message_id)
    assert "unreadable" not in table.stdout
    headers = _raw_headers(deployment.amqp_url, message_id)
    assert "compression" not in headers
    assert headers[transport.ORIGINAL_COMPRESSION] == "application/x-bogus"
    # Stored decompressed, so nothing says it ever was compressed.
    letter = _listed_with(ini, gzipped, "is not JSON")
    assert (letter["preview"], letter["unreadable"]) == ("not json", None)
    stored = _raw_headers(deployment.amqp_url, gzipped)
    assert not {"compression", transport.ORIGINAL_COMPRESSION} & stored.keys()

    # Sent back without the header, which tether never sets: the agent reads
    # it this time, and the plugin, which has no such task, refuses it.
    requeued = _manage(ini, "requeue", "--id", message_id)
    assert requeued.returncode == 0, requeued.stdout + requeued.stderr
    assert f"{message_id} → tether.work → noop" in requeued.stdout
    again = _listed_with(ini, message_id, "the plugin has no task")
    assert again["task_id"] == task_id

    purged = _manage(ini, "purge", "--yes")
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout == f"purged 2 message(s) from {DEAD_LETTER_QUEUE}.\n"
    assert _listed(ini) == {}


def test_list_and_requeue_carry_on_past_dead_letters_they_cannot_fully_read(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    before = _dead_letter_as_tether_does(broker, b"{}", "fine before")
    # As earlier versions of tether dead-lettered it: with the header that made it unreadable.
    compressed = _publish_dead_letter(
        broker,
        {
            "compression": "application/x-bogus",
            transport.DEAD_LETTER_REASON: "the work message cannot be decoded",
            transport.ORIGINAL_EXCHANGE: "tether.work",
            transport.ORIGINAL_ROUTING_KEY: "noop",
        },
    )
    odd = _publish_dead_letter(broker, {"x-death": [{"reason": "rejected", "routing-keys": 7}]})
    after = _dead_letter_as_tether_does(broker, b"{}", "fine after")

    letters = _listed(ini)
    assert list(letters) == [before, compressed, odd, after]
    assert letters[before]["reason"] == "fine before"
    assert letters[after]["reason"] == "fine after"
    assert letters[compressed]["reason"] == "the work message cannot be decoded"
    assert letters[compressed]["unreadable"].startswith(
        "kombu cannot decode its body (its 'compression' header says 'application/x-bogus'): "
    )
    assert letters[compressed]["preview"] == "{}"
    assert letters[odd]["reason"].startswith("RabbitMQ: rejected")
    table = _manage(ini, "list")
    assert table.returncode == 0, table.stderr
    assert f"#2 {compressed} is unreadable: kombu cannot decode its body" in table.stdout
    assert table.stdout.splitlines()[-1] == f"4 message(s) in {DEAD_LETTER_QUEUE}."

    result = _manage(ini, "requeue", "--id", compressed, "--id", after)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"requeued 2 message(s) from {DEAD_LETTER_QUEUE}." in result.stdout
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        back = _take(connection, "tether.work.noop", compressed)
        assert (back.body, back.errors) == ("{}", [])
        assert "compression" not in back.headers
        back.ack()
        _take(connection, "tether.work.noop", after).ack()
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [before, odd])


def test_list_shows_a_bounded_preview_of_an_oversized_body_and_requeue_sends_it_back_whole(
    rabbitmq: RabbitMQNode, broker: transport.Broker, ini: pathlib.Path
) -> None:
    body = b'{"task_id": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    message_id = _dead_letter_as_tether_does(broker, body, "the work message is 9437198 bytes")

    letter = _listed(ini)[message_id]
    assert letter["size"] == len(body)
    assert letter["task_id"] is None  # not parsed: larger than any consumer reads
    assert letter["preview"] == '{"task_id": "' + "x" * (dead_letter_reader.PREVIEW_CHARS - 14) + "…"
    table = _manage(ini, "list")
    assert table.returncode == 0, table.stderr
    assert len(table.stdout) < 1000
    assert _table_row(table.stdout, message_id).endswith('{"task_id": "' + "x" * 26 + "…")

    result = _manage(ini, "requeue")
    assert result.returncode == 0, result.stdout + result.stderr
    with kombu.Connection(rabbitmq.amqp_url) as connection:
        back = _take(connection, "tether.work.noop", message_id)
        assert back.body.encode() == body
        back.ack()
    _assert_holds(rabbitmq, DEAD_LETTER_QUEUE, [])


def test_the_plugin_api_lists_replays_and_purges_dead_letters_on_the_broker(deployment: Deployment) -> None:
    admin = {"X-Roles": "admin"}
    broker = transport.Broker(_conf(deployment.transport_url))
    with broker.connect() as connection:
        broker.dead_letter_queue().bind(connection.default_channel).purge()
    # Straight to the dead-letter queue, as an agent leaves them: the agents
    # here would take them off tether.work.noop first.
    for _ in range(2):
        _dead_on_noop(broker, b"\x00 not json", "body is not JSON")
    old = _dead_on_noop(broker, b'{"task": {"id": "t-1"}}', "message version 42 is unknown")
    listed = deployment.http.get("/v1/dead-letters", headers=admin).json()
    assert listed["total"] == 3
    assert listed["groups"] == [
        {"error": "body is not JSON", "count": 2},
        {"error": "message version 42 is unknown", "count": 1},
    ]
    letter = next(d for d in listed["dead_letters"] if d["id"] == old)
    assert (letter["queue"], letter["task_id"]) == ("tether.work.noop", "t-1")
    replay = {"ids": [old], "reason": "agents upgraded"}
    replayed = deployment.http.post("/v1/dead-letters/replay", json=replay, headers=admin).json()
    assert replayed == {"replayed": 1, "left": [], "missing": [], "stopped": None}
    purge = {"error": "body is not JSON"}
    assert deployment.http.post("/v1/dead-letters/purge", json=purge, headers=admin).json() == {
        "purged": 2,
        "missing": [],
    }
    # The replayed one went back to its queue, where an agent dead-letters it again.

    def dead_again() -> Any:
        listed = deployment.http.get("/v1/dead-letters", headers=admin).json()["dead_letters"]
        return [d["id"] for d in listed]

    deadline = time.monotonic() + 30
    while dead_again() != [old]:
        assert time.monotonic() < deadline, dead_again()
        time.sleep(0.2)


def _dead_on_noop(broker: transport.Broker, body: bytes, reason: str) -> str:
    message_id = uuid.uuid4().hex
    headers = {
        transport.DEAD_LETTER_REASON: reason,
        transport.ORIGINAL_EXCHANGE: transport.WORK_EXCHANGE,
        transport.ORIGINAL_ROUTING_KEY: "noop",
    }
    with broker.connect() as connection:
        publisher = Publisher(connection, broker.confirm_timeout)
        publisher.publish([Envelope(broker.dead_letter_exchange, "", body, message_id, headers)])
        publisher.close()
    return message_id
