"""``/metrics``: the plugin's Prometheus endpoint.

Counters and histograms live in the process-wide registry
(:mod:`tether.common.metrics`); what the database knows (backlog, oldest
waiting task, live agents) is read when Prometheus scrapes. When the
pipeline runs in a process of its own, both processes keep their counters
in the directory ``PROMETHEUS_MULTIPROC_DIR`` names, and the API serves
their sums (``prometheus_client``'s multiprocess mode, which has no
``process_*`` or ``python_*`` metrics).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import fastapi
import prometheus_client
import sqlalchemy as sa
from fastapi.responses import Response
from prometheus_client import multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import orm
from starlette.concurrency import run_in_threadpool

from tether.common.states import TaskState
from tether.plugin.api.deps import Api, authorized
from tether.plugin.db import agent_queries
from tether.plugin.db.models import ResourceRecord, Task, UTCDateTime, utcnow


class DatabaseCollector(Collector):
    def __init__(self, api: Api) -> None:
        self.api = api

    def collect(self) -> Iterator[GaugeMetricFamily]:
        backlog = GaugeMetricFamily(
            "tether_tasks", "Unfinished tasks by provider and state.", labels=["provider", "state"]
        )
        oldest = GaugeMetricFamily(
            "tether_oldest_pending_task_seconds",
            "Age of the oldest published, unclaimed task by provider.",
            labels=["provider"],
        )
        live = GaugeMetricFamily(
            "tether_live_agents", "Live, enabled agents by provider.", labels=["provider"]
        )
        resources = GaugeMetricFamily(
            "tether_resources",
            "Resources by provider and operating status (OFFLINE: their agent was declared dead, "
            "or their device says so).",
            labels=["provider", "operating_status"],
        )
        with self.api.reader() as session:
            for (provider, state), count in agent_queries.backlog(session).items():
                backlog.add_metric([provider, state], count)
            now = utcnow()
            for provider, since in session.execute(
                sa.select(Task.provider, sa.type_coerce(sa.func.min(Task.pending_at), UTCDateTime()))
                .where(Task.state == TaskState.PENDING, Task.pending_at.is_not(None))
                .group_by(Task.provider)
            ).all():
                if since is not None:
                    oldest.add_metric([provider], max((now - since).total_seconds(), 0.0))
            for provider in self.api.changes.providers.names:
                live.add_metric([provider], len(self.api.agents.live_for(session, provider)))
            for provider, status, count in _resources_by_status(session):
                resources.add_metric([provider, status], count)
        yield backlog
        yield oldest
        yield live
        yield resources


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(tags=["metrics"])
    registry = prometheus_client.CollectorRegistry()
    registry.register(DatabaseCollector(api))
    processes = prometheus_client.REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        processes = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(processes)  # type: ignore[no-untyped-call]  # untyped upstream

    @r.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        dependencies=[authorized("tether:metrics")],
    )
    async def metrics() -> Response:
        def render() -> bytes:
            return prometheus_client.generate_latest(processes) + prometheus_client.generate_latest(registry)

        return Response(await run_in_threadpool(render), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    return r


def _resources_by_status(session: orm.Session) -> list[tuple[str, str, int]]:
    rows = session.execute(
        sa.select(ResourceRecord.provider, ResourceRecord.operating_status, sa.func.count()).group_by(
            ResourceRecord.provider, ResourceRecord.operating_status
        )
    ).all()
    return [(provider, status, count) for provider, status, count in rows]
