"""``/healthz`` and ``/readyz``: what a load balancer or an orchestrator probes.

``/healthz`` answers 200 while the process serves requests. ``/readyz``
answers 200 only when this plugin can do its job: the database answers and
its schema is current, and the relay and the result consumer are connected
to the broker; otherwise 503 naming what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import fastapi
import sqlalchemy as sa
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.plugin.api.deps import Api
from tether.plugin.db import migration
from tether.plugin.db.exceptions import DatabaseError

Probe = Callable[[], str | None]


def router(api: Api, broker_ready: Probe) -> fastapi.APIRouter:
    r = fastapi.APIRouter(tags=["health"])

    @r.get("/healthz", summary="Is the process alive?")
    async def healthz() -> dict[str, Any]:
        return {"status": "alive"}

    @r.get(
        "/readyz",
        summary="Can this plugin serve: database, schema and broker?",
        responses={503: {"description": "Not ready; problems says why."}},
    )
    async def readyz() -> JSONResponse:
        problems = [p for p in (await run_in_threadpool(_database, api), broker_ready()) if p]
        body = {"status": "ready" if not problems else "not ready", "problems": problems}
        return JSONResponse(body, status_code=503 if problems else 200)

    return r


def _database(api: Api) -> str | None:
    try:
        with api.reader() as session:
            session.execute(sa.text("SELECT 1"))
            engine = session.get_bind()
        if isinstance(engine, sa.Engine) and not migration.is_current(engine):
            return f"the database schema is behind {migration.head()}: run tether-manage db upgrade"
    except DatabaseError as exc:
        return f"the database does not answer: {exc.type}: {exc.detail}"
    return None
