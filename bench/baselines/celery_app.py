"""The Celery baseline's app, as its ``celery worker`` subprocess loads it.

``celery -A bench.baselines.celery_app worker`` reads its settings from the
environment that :mod:`bench.baselines.celery_baseline` sets:

- ``BENCH_AMQP_URL``, ``BENCH_QUEUE``: the broker and the work queue;
- ``BENCH_DB``, ``BENCH_SYNCHRONOUS``: the SQLite file and its sync pragma;
- ``BENCH_DONE_DIR``: where each worker process appends ``id time`` lines,
  the wall-clock times its result COMMITs returned (for the latencies);
- ``BENCH_READY_FILE``: created once the worker consumes.

The task does no work (the noop driver) and writes the result row itself, one
COMMIT per task; there is no result backend.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, TextIO

from celery import Celery, signals

from bench.baselines import db


def configure(app: Celery, amqp_url: str, queue: str) -> None:
    """The settings the producer and the worker share."""
    app.conf.update(
        broker_url=amqp_url,
        broker_transport_options={"confirm_publish": True},
        broker_connection_retry_on_startup=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=queue,
        task_default_delivery_mode="persistent",
        task_serializer="json",
        accept_content=["json"],
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )


app = Celery("tether_bench")
configure(app, os.environ.get("BENCH_AMQP_URL", "amqp://"), os.environ.get("BENCH_QUEUE", "bench.celery"))

# One connection and one done-file per thread and process: the pool may be
# prefork (a connection must not cross fork) or threads.
_local = threading.local()
_write_lock = threading.Lock()


def _resources() -> tuple[sqlite3.Connection, TextIO]:
    pid = os.getpid()
    if getattr(_local, "pid", None) != pid:
        _local.pid = pid
        _local.conn = db.connect(Path(os.environ["BENCH_DB"]), os.environ.get("BENCH_SYNCHRONOUS", "FULL"))
        done_dir = Path(os.environ["BENCH_DONE_DIR"])
        _local.done = open(done_dir / f"done-{pid}-{threading.get_ident()}.log", "a", buffering=1)  # noqa: SIM115
    return _local.conn, _local.done


def noop_driver(task_id: str) -> None:
    """The driver call: no work at all, as tether's ``noop`` driver."""


@app.task(name="bench.noop")
def noop(task_id: str) -> None:
    conn, done = _resources()
    noop_driver(task_id)
    # Threads of one process queue here rather than on SQLite's busy timeout.
    with _write_lock:
        finished = db.record_result(conn, task_id)
    done.write(f"{task_id} {finished!r}\n")


@signals.worker_ready.connect
def _announce_ready(**_kwargs: Any) -> None:
    ready_file = os.environ.get("BENCH_READY_FILE")
    if ready_file:
        Path(ready_file).touch()
