"""Baseline (a): a raw kombu round trip with one COMMIT per task at each end.

The "plugin" (this process) inserts each task as PENDING and COMMITs, then
publishes a persistent work message and waits for its confirm, in
``producer_count`` threads at once (:mod:`bench.baselines.producers`: one
loop would be bound by the confirm round trip, not by the machine). ``workers`` agent processes
(:mod:`bench.baselines.raw_worker`) each
run one consume loop with ``prefetch`` unacked messages, call the noop driver
and publish a persistent result with a confirm. A result-consumer thread here
marks each task ACTIVE and COMMITs before acking the result. The two writers
in this process share a lock, so they queue on it rather than on SQLite's
busy timeout, whose back-off sleeps would otherwise dominate.

Queues get a per-run name on the given vhost and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu

from bench.baselines import BaselineError, db, producers, raw_worker, report

CONFIRM_TIMEOUT = 30.0
START_TIMEOUT = 30.0


def run(
    amqp_url: str,
    workdir: Path,
    tasks: int,
    workers: int = 4,
    synchronous: str = "FULL",
    prefetch: int = 4,
    timeout: float | None = None,
    producer_count: int = producers.PRODUCERS,
) -> dict[str, Any]:
    """Push ``tasks`` tasks through the round trip; the figures of :func:`report.summarize`.

    :param prefetch: unacked work messages per agent process.
    :param producer_count: the plugin's producer threads (:mod:`bench.baselines.producers`).
    :param timeout: seconds for the whole run (default: 60 + 0.1 per task).
    :raises BaselineError: an agent died or a wait ran out.
    """
    deadline = time.monotonic() + (timeout if timeout is not None else 60.0 + tasks / 10.0)
    run_id = uuid.uuid4().hex[:8]
    work_queue = kombu.Queue(f"bench.raw.{run_id}.work", routing_key=f"bench.raw.{run_id}.work", durable=True)
    result_queue = kombu.Queue(
        f"bench.raw.{run_id}.results", routing_key=f"bench.raw.{run_id}.results", durable=True
    )
    db_path = workdir / "raw_kombu" / "bench.sqlite"
    db.create(db_path, synchronous)

    with kombu.Connection(amqp_url) as admin:
        for queue in (work_queue, result_queue):
            queue(admin.default_channel).declare()
        try:
            agents, stop = _start_agents(amqp_url, work_queue.name, result_queue.name, workers, prefetch)
            try:
                accepted, recorded = _round_trip(
                    amqp_url,
                    db_path,
                    synchronous,
                    tasks,
                    work_queue,
                    result_queue,
                    agents,
                    deadline,
                    producer_count,
                )
            finally:
                _stop_agents(agents, stop)
        finally:
            for queue in (work_queue, result_queue):
                queue(admin.default_channel).delete()

    figures = report.summarize(accepted, recorded)
    figures.update(
        baseline="raw_kombu",
        workers=workers,
        agent_processes=workers,
        prefetch=prefetch,
        producers=producer_count,
        synchronous=synchronous,
    )
    return figures


def _round_trip(
    amqp_url: str,
    db_path: Path,
    synchronous: str,
    tasks: int,
    work_queue: kombu.Queue,
    result_queue: kombu.Queue,
    agents: list[multiprocessing.process.BaseProcess],
    deadline: float,
    producer_count: int,
) -> tuple[dict[str, float], dict[str, float]]:
    write_lock = threading.Lock()
    consumer = _ResultConsumer(amqp_url, db_path, synchronous, result_queue, tasks, write_lock, deadline)
    consumer.start()
    if not consumer.ready.wait(START_TIMEOUT):
        raise BaselineError("the result consumer did not start")
    accepted: dict[str, float] = {}

    @contextlib.contextmanager
    def sender() -> Iterator[Callable[[], None]]:
        conn = db.connect(db_path, synchronous)
        try:
            with kombu.Connection(amqp_url, transport_options={"confirm_publish": True}) as publishing:
                producer = kombu.Producer(publishing.channel())

                def send() -> None:
                    task_id = uuid.uuid4().hex
                    with write_lock:
                        accepted[task_id] = db.accept(conn, task_id)
                    producer.publish(
                        {"id": task_id},
                        routing_key=work_queue.routing_key,
                        serializer="json",
                        delivery_mode=2,
                        confirm_timeout=CONFIRM_TIMEOUT,
                    )

                yield send
        finally:
            conn.close()

    producers.run(producer_count, tasks, deadline, sender)
    while consumer.is_alive():
        consumer.join(timeout=0.5)
        dead = [agent.pid for agent in agents if not agent.is_alive()]
        if dead:
            raise BaselineError(f"agent processes {dead} died")
    if consumer.error is not None:
        raise BaselineError(f"the result consumer failed: {consumer.error!r}") from consumer.error
    return accepted, consumer.recorded


class _ResultConsumer(threading.Thread):
    """The plugin's result consumer: UPDATE and COMMIT each result, then ack it."""

    def __init__(
        self,
        amqp_url: str,
        db_path: Path,
        synchronous: str,
        queue: kombu.Queue,
        expected: int,
        write_lock: threading.Lock,
        deadline: float,
    ) -> None:
        super().__init__(name="result-consumer", daemon=True)
        self.amqp_url = amqp_url
        self.db_path = db_path
        self.synchronous = synchronous
        self.queue = queue
        self.expected = expected
        self.write_lock = write_lock
        self.deadline = deadline
        self.ready = threading.Event()
        self.recorded: dict[str, float] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._consume()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.error = exc

    def _consume(self) -> None:
        conn = db.connect(self.db_path, self.synchronous)

        def on_result(body: dict[str, Any], message: kombu.Message) -> None:
            task_id = body["id"]
            with self.write_lock:
                self.recorded[task_id] = db.record_result(conn, task_id)
            message.ack()

        try:
            with (
                kombu.Connection(self.amqp_url) as consuming,
                consuming.Consumer([self.queue], callbacks=[on_result], prefetch_count=64, accept=["json"]),
            ):
                self.ready.set()
                while len(self.recorded) < self.expected:
                    if time.monotonic() > self.deadline:
                        raise BaselineError(
                            f"timed out with {len(self.recorded)} of {self.expected} results recorded"
                        )
                    try:
                        consuming.drain_events(timeout=0.2)
                    except TimeoutError:
                        continue
        finally:
            conn.close()


def _start_agents(
    amqp_url: str, work_queue: str, result_queue: str, workers: int, prefetch: int
) -> tuple[list[multiprocessing.process.BaseProcess], Any]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    agents: list[multiprocessing.process.BaseProcess] = []
    readies = []
    for number in range(workers):
        ready = ctx.Event()
        agent = ctx.Process(
            target=raw_worker.main,
            args=(amqp_url, work_queue, result_queue, prefetch, ready, stop),
            name=f"raw-agent-{number}",
            daemon=True,
        )
        agent.start()
        agents.append(agent)
        readies.append(ready)
    started = time.monotonic()
    for agent, ready in zip(agents, readies, strict=True):
        while not ready.wait(0.2):
            if not agent.is_alive() or time.monotonic() - started > START_TIMEOUT:
                _stop_agents(agents, stop)
                raise BaselineError(f"{agent.name} did not start (exit code {agent.exitcode})")
    return agents, stop


def _stop_agents(agents: list[multiprocessing.process.BaseProcess], stop: Any) -> None:
    stop.set()
    for agent in agents:
        agent.join(timeout=5)
        if agent.is_alive():
            agent.kill()
            agent.join(timeout=5)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefetch", type=int, default=4, help="unacked work messages per agent process")
    parser.add_argument("--producer-count", type=int, default=producers.PRODUCERS, help="producer threads")


if __name__ == "__main__":
    report.main(
        run, "Baseline (a): a raw kombu round trip with one COMMIT per task at each end.", _add_arguments
    )
