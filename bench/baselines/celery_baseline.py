"""Baseline (b): Celery with ``acks_late`` and ``task_reject_on_worker_lost``.

The "plugin" (this process) inserts each task as PENDING and COMMITs, then
sends it with ``send_task`` over a connection with publisher confirms, in
``producer_count`` threads at once (:mod:`bench.baselines.producers`). A
real ``celery worker`` subprocess (``--pool=threads`` by default: on two
cores it beats prefork, whose parent hands every task to a child through a
pipe) runs :mod:`bench.baselines.celery_app`'s noop task,
which marks the row ACTIVE and COMMITs; the message is acked after that.
No result backend: the row is the result, as in tether.

The queue gets a per-run name on the given vhost and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions
from celery import Celery

from bench.baselines import BaselineError, db, producers, report
from bench.baselines.celery_app import configure

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


def run(
    amqp_url: str,
    workdir: Path,
    tasks: int,
    workers: int = 4,
    synchronous: str = "FULL",
    pool: str = "threads",
    prefetch_multiplier: int = 4,
    timeout: float | None = None,
    producer_count: int = producers.PRODUCERS,
) -> dict[str, Any]:
    """Push ``tasks`` tasks through Celery; the figures of :func:`report.summarize`.

    :param workers: the worker's ``--concurrency``.
    :param pool: the worker's ``--pool``: ``threads``, ``prefork`` or ``solo``.
    :param prefetch_multiplier: Celery's ``worker_prefetch_multiplier`` (its default, 4).
    :param timeout: seconds for the whole run (default: 60 + 0.1 per task).
    :param producer_count: the plugin's producer threads (:mod:`bench.baselines.producers`).
    :raises BaselineError: the worker died or a wait ran out.
    """
    deadline = time.monotonic() + (timeout if timeout is not None else 60.0 + tasks / 10.0)
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench.celery.{run_id}"
    base = workdir / "celery"
    db_path = base / "bench.sqlite"
    done_dir = base / f"done-{run_id}"
    ready_file = base / f"ready-{run_id}"
    db.create(db_path, synchronous)
    done_dir.mkdir(parents=True)

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "BENCH_AMQP_URL": amqp_url,
        "BENCH_QUEUE": queue,
        "BENCH_DB": str(db_path),
        "BENCH_SYNCHRONOUS": synchronous,
        "BENCH_DONE_DIR": str(done_dir),
        "BENCH_READY_FILE": str(ready_file),
    }
    command = [
        sys.executable, "-m", "celery", "-A", "bench.baselines.celery_app", "worker",
        f"--pool={pool}", f"--concurrency={workers}", f"--prefetch-multiplier={prefetch_multiplier}",
        "-Q", queue, "-n", f"bench-{run_id}@localhost", "--loglevel=WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    log_path = base / f"worker-{run_id}.log"
    try:
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                command,
                env=env,
                cwd=base,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so stopping it reaches prefork children too.
                start_new_session=True,
            )
        try:
            _wait_ready(worker, ready_file, log_path)
            accepted = _produce(amqp_url, queue, db_path, synchronous, tasks, deadline, producer_count)
            _wait_recorded(worker, db_path, tasks, deadline, log_path)
        finally:
            _stop(worker)
        recorded = _read_done(done_dir)
    finally:
        _delete_queue(amqp_url, queue)

    figures = report.summarize(accepted, recorded)
    figures.update(
        baseline="celery",
        workers=workers,
        pool=pool,
        prefetch_multiplier=prefetch_multiplier,
        producers=producer_count,
        synchronous=synchronous,
    )
    return figures


def _produce(
    amqp_url: str, queue: str, db_path: Path, synchronous: str, tasks: int, deadline: float, count: int
) -> dict[str, float]:
    app = Celery("tether_bench_producer")
    configure(app, amqp_url, queue)
    accepted: dict[str, float] = {}
    # The producers' commits take turns here, not in SQLite's busy handler.
    write_lock = threading.Lock()

    @contextlib.contextmanager
    def sender() -> Iterator[Callable[[], None]]:
        conn = db.connect(db_path, synchronous)
        try:
            # A producer (and its connection) of the app's pool per thread.
            with app.producer_or_acquire() as producer:

                def send() -> None:
                    task_id = uuid.uuid4().hex
                    with write_lock:
                        accepted[task_id] = db.accept(conn, task_id)
                    app.send_task("bench.noop", args=[task_id], producer=producer)

                yield send
        finally:
            conn.close()

    try:
        producers.run(count, tasks, deadline, sender)
    finally:
        app.close()
    return accepted


def _wait_ready(worker: subprocess.Popen[bytes], ready_file: Path, log_path: Path) -> None:
    started = time.monotonic()
    while not ready_file.exists():
        if worker.poll() is not None:
            raise BaselineError(f"celery worker exited with {worker.returncode}:\n{_tail(log_path)}")
        if time.monotonic() - started > START_TIMEOUT:
            raise BaselineError(f"celery worker not ready in {START_TIMEOUT:.0f}s:\n{_tail(log_path)}")
        time.sleep(0.1)


def _wait_recorded(
    worker: subprocess.Popen[bytes], db_path: Path, tasks: int, deadline: float, log_path: Path
) -> None:
    conn = db.connect(db_path)
    try:
        while (done := db.count_active(conn)) < tasks:
            if worker.poll() is not None:
                raise BaselineError(f"celery worker exited with {worker.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise BaselineError(f"timed out with {done} of {tasks} results recorded")
            time.sleep(0.1)
    finally:
        conn.close()


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGTERM)  # Celery's warm shutdown
        try:
            worker.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
    # Whatever is left of its group (prefork children), the leader included.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(worker.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        worker.wait(timeout=5)


def _read_done(done_dir: Path) -> dict[str, float]:
    recorded: dict[str, float] = {}
    for path in done_dir.glob("done-*.log"):
        for line in path.read_text().splitlines():
            task_id, finished = line.split()
            # A redelivered task counts from its first recorded result.
            recorded[task_id] = min(float(finished), recorded.get(task_id, float("inf")))
    return recorded


def _delete_queue(amqp_url: str, queue: str) -> None:
    # Best effort, in a finally: a broker that is gone must not hide why the run failed.
    try:
        with kombu.Connection(amqp_url, connect_timeout=10) as conn:
            channel = conn.ensure_connection(max_retries=1).default_channel
            channel.queue_delete(queue)
            channel.exchange_delete(queue)
    except (OSError, kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
        print(f"could not delete queue {queue}: {exc}", file=sys.stderr)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    parser.add_argument("--prefetch-multiplier", type=int, default=4)
    parser.add_argument("--producer-count", type=int, default=producers.PRODUCERS, help="producer threads")


if __name__ == "__main__":
    report.main(run, "Baseline (b): Celery with acks_late and task_reject_on_worker_lost.", _add_arguments)
