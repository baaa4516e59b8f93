from __future__ import annotations

import uuid
from typing import Any

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.message import Message

from .rabbitmq import RabbitMQNode

pytestmark = [pytest.mark.functional, pytest.mark.no_database]

PERSISTENT = 2


def _queue(kind: str) -> Queue:
    name = f"tether-test-{kind}-{uuid.uuid4().hex}"
    arguments = {"x-queue-type": kind}
    # Default exchange: routing key == queue name, nothing else to declare.
    return Queue(name, Exchange(""), routing_key=name, durable=True, queue_arguments=arguments)


def _connect(node: RabbitMQNode) -> Connection:
    # confirm_publish makes publish() wait for the broker's ack, so a message
    # that returns from publish() is known to be on the broker.
    return Connection(node.amqp_url, connect_timeout=10, transport_options={"confirm_publish": True})


def _publish(node: RabbitMQNode, queue: Queue, body: dict[str, Any]) -> None:
    with _connect(node) as conn:
        producer = Producer(conn)
        producer.publish(
            body,
            routing_key=queue.routing_key,
            serializer="json",
            delivery_mode=PERSISTENT,
            declare=[queue],
            retry=False,
        )


def _message_count(node: RabbitMQNode, queue: Queue) -> int:
    with _connect(node) as conn:
        _, count, _ = queue(conn.default_channel).queue_declare(passive=True)
        return int(count)


def _consume_one(node: RabbitMQNode, queue: Queue) -> tuple[Any, Message]:
    received: list[tuple[Any, Message]] = []

    def on_message(body: Any, message: Message) -> None:
        received.append((body, message))
        message.ack()

    with (
        _connect(node) as conn,
        Consumer(conn, queues=[queue], callbacks=[on_message], accept=["json"]),
    ):
        conn.drain_events(timeout=10)
    assert len(received) == 1
    return received[0]


def test_private_node_accepts_a_confirmed_persistent_publish_and_delivers_it(
    rabbitmq: RabbitMQNode,
) -> None:
    queue = _queue("quorum")

    _publish(rabbitmq, queue, {"hello": "tether"})

    # Asked of the broker itself: a stand-in transport would not know queue types.
    listing = rabbitmq.rabbitmqctl("-q", "list_queues", "--no-table-headers", "name", "type", "durable")
    assert [queue.name, "quorum", "true"] in [line.split("\t") for line in listing.splitlines()]
    assert _message_count(rabbitmq, queue) == 1

    body, message = _consume_one(rabbitmq, queue)

    assert body == {"hello": "tether"}
    assert message.properties["delivery_mode"] == PERSISTENT
    assert _message_count(rabbitmq, queue) == 0


def test_persistent_message_in_durable_queue_survives_a_node_restart(
    rabbitmq: RabbitMQNode,
) -> None:
    # Both kinds, one restart: classic queues keep only persistent messages,
    # quorum queues keep everything, and tether may meet either.
    queues = [_queue("classic"), _queue("quorum")]
    for queue in queues:
        _publish(rabbitmq, queue, {"queue": queue.name})

    rabbitmq.restart()

    for queue in queues:
        assert _message_count(rabbitmq, queue) == 1
        body, _ = _consume_one(rabbitmq, queue)
        assert body == {"queue": queue.name}
