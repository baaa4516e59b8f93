"""The FastAPI + SQLAlchemy + Celery peer: the stack a team builds instead of tether.

One module for both sides, as such a project keeps its app and its tasks:

- ``uvicorn bench.baselines.celery_http:api --workers 2``: ``POST
  /v1/loadbalancers`` inserts the task as PENDING and COMMITs (one session,
  one COMMIT), then ``send_task``s it over a connection with publisher
  confirms and answers 202;
- ``celery -A bench.baselines.celery_http worker``: the task "calls the
  driver" (noop) and writes the outcome into the row (ACTIVE and its time,
  one COMMIT); ``acks_late`` and ``task_reject_on_worker_lost`` ack the
  message only after that, as a team that cares about lost work sets them.

The work queue is a quorum queue (``task_default_queue_type``), messages
persistent, the API's publishes confirmed.

Settings come from the environment :mod:`bench.peers` sets: ``BENCH_AMQP_URL``,
``BENCH_QUEUE``, ``BENCH_DB``, ``BENCH_COUNTS_DIR``, ``BENCH_READY_FILE``.
"""

from __future__ import annotations

import os
import uuid

import fastapi
import pydantic
from celery import Celery

from bench.baselines import peer_db

# Importing celery_app also connects its worker_ready handler, which
# touches BENCH_READY_FILE once the worker consumes.
from bench.baselines.celery_app import configure

celery = Celery("bench_celery_http")
configure(celery, os.environ.get("BENCH_AMQP_URL", "amqp://"), os.environ.get("BENCH_QUEUE", "bench.http"))
# A quorum queue, as tether's work queues and the oslo peer's: the broker
# pays the same kind of durable write per message (Celery's default is a
# classic durable queue; the baseline without HTTP keeps that).
celery.conf.task_default_queue_type = "quorum"

api = fastapi.FastAPI()


class LoadBalancerIn(pydantic.BaseModel):
    provider: str
    name: str | None = None


@api.post("/v1/loadbalancers", status_code=202)
def create_loadbalancer(body: LoadBalancerIn) -> dict[str, str]:
    # A plain ``def``: FastAPI runs it in its thread pool, so the blocking
    # COMMIT and the confirm wait do not stop the event loop.
    task_id = uuid.uuid4().hex
    peer_db.accept(peer_db.sessions("api"), task_id)
    celery.send_task("bench.http.create", args=[task_id])
    return {"id": task_id, "provisioning_status": "PENDING_CREATE"}


@api.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def noop_driver(task_id: str) -> None:
    """The driver call: no work at all, as tether's ``noop`` driver."""


@celery.task(name="bench.http.create")
def create(task_id: str) -> None:
    noop_driver(task_id)
    peer_db.finish(peer_db.sessions("worker"), task_id)
