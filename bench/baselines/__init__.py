"""Baselines for ``make bench``: what tether's round trip is measured against.

Each module measures one naive per-task design on the same broker and the same
kind of database (an SQLite file in WAL mode with tether's pragmas), and
exposes the same entry point::

    run(amqp_url: str, workdir: pathlib.Path, tasks: int, workers: int = 4) -> dict

returning at least ``tasks``, ``seconds`` (first accept to last recorded
result), ``tasks_per_s`` and ``p50_ms``/``p95_ms``/``p99_ms``, each task's
latency from its accepting COMMIT to its result's COMMIT.

- :mod:`bench.baselines.raw_kombu`: kombu publish with confirms, consume,
  publish the result with confirms, consume; one COMMIT per task at each end.
- :mod:`bench.baselines.celery_baseline`: Celery with ``acks_late`` and
  ``task_reject_on_worker_lost``; the task writes the result row itself.

Their "plugins" publish from several threads (:mod:`bench.baselines.producers`).

The HTTP peers that :mod:`bench.peers` runs live here too, as the code their
processes load: :mod:`bench.baselines.celery_http` (FastAPI + SQLAlchemy +
Celery), :mod:`bench.baselines.oslo_http` (the neutron-lbaas shape over
oslo.messaging), and their database, :mod:`bench.baselines.peer_db`.

Each baseline is runnable alone: ``python -m bench.baselines.raw_kombu AMQP_URL --tasks 2000``.
"""

from __future__ import annotations


class BaselineError(RuntimeError):
    """A baseline could not finish: a process died or a wait ran out."""
