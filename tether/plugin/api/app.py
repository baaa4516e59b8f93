"""The plugin's ASGI application."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio.to_thread
import fastapi
from oslo_config import cfg
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tether import __version__
from tether.common import log
from tether.plugin.api import actions, agents, dead_letters, errors, health, metrics, resources, tasks
from tether.plugin.api.accept import CreateRoutes
from tether.plugin.api.console import install as install_console
from tether.plugin.api.deps import Api, authorized

LOG = logging.getLogger(__name__)

GROUP = "api"
OPTS: list[cfg.Opt] = [
    cfg.HostAddressOpt("bind_host", default="127.0.0.1", help="Address the REST API listens on."),
    cfg.PortOpt("bind_port", default=9870, help="Port the REST API listens on."),
    cfg.IntOpt("workers", default=8, min=1, help="Threads that serve requests touching the database."),
    cfg.IntOpt(
        "group_commit_size",
        default=64,
        min=1,
        help="Most changes committed in one transaction: the writes of concurrent create, "
        "update and delete requests share a commit and its fsync, and each is answered "
        "once that commit is durable. 1 commits every change on its own.",
    ),
    cfg.FloatOpt(
        "group_commit_wait",
        default=0.001,
        min=0.0,
        max=0.05,
        help="Seconds a change that reaches the group commit alone waits for a second one "
        "before it is committed: under moderate load two changes share a transaction instead "
        "of taking one each, for at most this much more latency. Under full load changes "
        "queue anyway and nothing waits. 0 commits a lone change at once.",
    ),
    cfg.IntOpt("default_page_size", default=100, min=1, help="Items in a page when no limit is given."),
    cfg.IntOpt("max_page_size", default=1000, min=1, help="Largest limit a list request may ask for."),
    cfg.IntOpt(
        "max_body_bytes", default=1024 * 1024, min=1024, help="Largest request body accepted, in bytes."
    ),
    cfg.IntOpt(
        "max_string_length",
        default=4096,
        min=255,
        help="Longest string accepted anywhere in a request body, in characters; "
        "resource types may set lower limits per attribute.",
    ),
    cfg.IntOpt(
        "max_items",
        default=1000,
        min=64,
        help="Most members of any object or array in a request body.",
    ),
    cfg.FloatOpt(
        "max_wait",
        default=60.0,
        min=0,
        help="Longest ?wait=N a client may ask for on a task or resource, in seconds.",
    ),
]

REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"^req-[0-9a-f-]{36}$")


class RequestId:
    """Gives every request an id: on its log lines, its errors and its answer.

    A plain ASGI middleware: starlette's ``BaseHTTPMiddleware`` runs each
    request through a task group and a stream of its own, which cost more
    than the rest of an accept.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A client may pass its own id (e.g. to retry under the same id);
        # anything else gets a fresh one, so logs never carry caller text.
        offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
        rid = offered if _CLIENT_REQUEST_ID.match(offered) else f"req-{uuid.uuid4()}"
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, rid)
            await send(message)

        with log.request_context(rid):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception as exc:
                if started:
                    raise
                # Answered here, so the id is on it.
                await errors.unexpected(fastapi.Request(scope), exc)(scope, receive, send_with_id)


def create_app(api: Api, broker_ready: health.Probe = lambda: None) -> fastapi.FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: fastapi.FastAPI) -> AsyncIterator[None]:
        # Endpoints that touch the database run in threads; bound them so a
        # burst queues in the API instead of piling up on the database.
        anyio.to_thread.current_default_thread_limiter().total_tokens = api.workers
        yield

    app = fastapi.FastAPI(
        lifespan=lifespan,
        title="tether",
        version=__version__,
        description="Desired state in, device state out: every change is a task "
        "that ends SUCCEEDED or FAILED with a reason.",
        openapi_url="/v1/openapi.json",
        docs_url="/v1/docs",
        redoc_url=None,
        # tether's telemetry is its Prometheus metrics and its logs. FastAPI's
        # own OpenTelemetry looked up three providers on every request to
        # learn it had nothing to do: 2 % of the API process under load.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
    )
    app.state.api = api
    errors.install(app)

    @app.get(
        "/v1",
        tags=["discovery"],
        summary="List the resource types and their schemas",
        dependencies=[authorized("tether:discovery")],
        responses=errors.RESPONSES,
    )
    def discovery() -> dict[str, Any]:
        return {
            "version": __version__,
            "resource_types": [
                {
                    "name": t.name,
                    "collection": f"/v1/{t.collection}",
                    "parent": t.parent,
                    "parent_key": t.parent_key,
                    "immutable": sorted(t.immutable),
                    # attribute → the type of the same tree whose id it holds
                    "references": dict(t.references),
                    "description": t.description,
                    "schema": t.schema,
                }
                for t in api.registry.values()
            ],
            "providers": api.changes.providers.names,
        }

    creates = {}
    for rtype in api.registry.values():
        routes, creates[f"/v1/{rtype.collection}"] = resources.router(api, rtype)
        app.include_router(routes, responses=errors.RESPONSES)
        app.include_router(actions.reapply_router(api, rtype), responses=errors.RESPONSES)
    app.include_router(tasks.router(api), responses=errors.RESPONSES)
    app.include_router(actions.tasks_router(api), responses=errors.RESPONSES)
    app.include_router(agents.router(api), responses=errors.RESPONSES)
    app.include_router(dead_letters.router(api), responses=errors.RESPONSES)
    app.include_router(metrics.router(api), responses=errors.RESPONSES)
    app.include_router(health.router(api, broker_ready))
    install_console(app, api)
    # Inside RequestId: the creates it serves carry request ids like the rest.
    app.add_middleware(CreateRoutes, creates=creates)
    app.add_middleware(RequestId)
    return app
