"""The raw baseline's agent side: one kombu consume loop in its own process.

Per task: take the work message, call the noop driver, publish the result
(persistent, waiting for the broker's confirm), then ack the work message,
so a crash before the result is confirmed redelivers the work. Consuming and
publishing use separate connections: a confirm wait on a connection that also
consumes would dispatch new deliveries re-entrantly from inside the publish.
"""

from __future__ import annotations

from multiprocessing.synchronize import Event
from typing import Any

import kombu

CONFIRM_TIMEOUT = 30.0


def noop_driver(task_id: str) -> None:
    """The driver call: no work at all, as tether's ``noop`` driver."""


def main(amqp_url: str, work_queue: str, result_queue: str, prefetch: int, ready: Event, stop: Event) -> None:
    with (
        kombu.Connection(amqp_url) as consuming,
        kombu.Connection(amqp_url, transport_options={"confirm_publish": True}) as publishing,
    ):
        producer = kombu.Producer(publishing.channel())

        def on_work(body: dict[str, Any], message: kombu.Message) -> None:
            task_id = body["id"]
            noop_driver(task_id)
            producer.publish(
                {"id": task_id, "state": "ACTIVE"},
                routing_key=result_queue,
                serializer="json",
                delivery_mode=2,
                confirm_timeout=CONFIRM_TIMEOUT,
            )
            message.ack()

        queue = kombu.Queue(work_queue, routing_key=work_queue, durable=True)
        with consuming.Consumer([queue], callbacks=[on_work], prefetch_count=prefetch, accept=["json"]):
            ready.set()
            while not stop.is_set():
                try:
                    consuming.drain_events(timeout=0.2)
                except TimeoutError:
                    continue
