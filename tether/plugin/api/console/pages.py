"""The console's pages: resources, tasks, agents and providers, dead letters,
and the stream that keeps them live."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastapi
from fastapi.responses import RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tether.common.exceptions import InvalidInput, NotFound, TetherError
from tether.common.states import TaskState
from tether.plugin.api.console import api_call, caller, history, tree
from tether.plugin.api.console.events import LiveEvents
from tether.plugin.api.console.render import error, page
from tether.plugin.api.deps import Api
from tether.plugin.context import RequestContext
from tether.plugin.db.models import utcnow

#: roots on the resources page, tasks on the tasks page
PAGE_SIZE = 100


def router(api: Api, events: LiveEvents) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix=caller.PATH, include_in_schema=False)
    registry = api.registry
    roots = [t for t in registry.values() if t.is_root]

    @r.get("")
    def home() -> Response:
        return RedirectResponse(f"{caller.PATH}/resources", status_code=303)

    @r.get("/resources")
    async def resources(request: fastapi.Request) -> Response:
        params = request.query_params

        async def build(ctx: RequestContext) -> Mapping[str, Any]:
            project = _project(ctx, params.get("project_id"))
            found, more = await run_in_threadpool(
                _read,
                api,
                lambda s: tree.trees(s, registry, project, PAGE_SIZE, params.get("root_id") or None),
            )
            return {"trees": found, "more": more, "project_id": project}

        # Guarded by the first root type's list rule (tether:loadbalancer:list here);
        # the page draws the trees of every root type.
        return await page(request, f"tether:{roots[0].name}:list", "resources.html", build)

    @r.get("/tasks")
    async def tasks(request: fastapi.Request) -> Response:
        given = {k: v for k, v in request.query_params.items() if k in history.FILTERS and v}

        async def build(ctx: RequestContext) -> Mapping[str, Any]:
            if "state" in given and given["state"] not in TaskState.__members__:
                raise InvalidInput(f"state must be one of {', '.join(TaskState.__members__)}.")
            filters = dict(given)
            project = _project(ctx, filters.pop("project_id", None))
            rows, more = await run_in_threadpool(
                _read, api, lambda s: history.tasks(s, project, filters, PAGE_SIZE)
            )
            return {
                "tasks": rows,
                "more": more,
                "filters": given,
                "states": list(TaskState.__members__),
                "providers": api.changes.providers.names,
            }

        return await page(request, "tether:task:list", "tasks.html", build)

    @r.get("/tasks/{task_id}")
    async def task(request: fastapi.Request, task_id: str) -> Response:
        async def build(ctx: RequestContext) -> Mapping[str, Any]:
            def read(session: Any) -> Mapping[str, Any]:
                row = history.get_task(session, task_id, ctx.project_filter)
                if row is None:
                    raise NotFound(kind="Task", id=task_id)
                return {"task": row, "timeline": history.timeline(session, row)}

            values = await run_in_threadpool(_read, api, read)
            rtype = registry.get(values["task"].resource_type)
            return {**values, "collection": rtype.collection if rtype else None}

        return await page(request, "tether:task:get", "task.html", build)

    @r.get("/agents")
    async def agents(request: fastapi.Request) -> Response:
        async def build(ctx: RequestContext) -> Mapping[str, Any]:
            def read(session: Any) -> Mapping[str, Any]:
                return {
                    "agents": history.agents(session),
                    "backlog": history.backlog(session),
                    "running": history.running_by_agent(session),
                }

            values = await run_in_threadpool(_read, api, read)
            now = utcnow()
            alive = {a.id: api.agents.alive(a, now) for a in values["agents"]}
            providers = [
                {
                    "name": name,
                    "placement": api.changes.providers.placement(name),
                    "backlog": values["backlog"].get(name, history.Backlog({}, None)),
                    "live": [
                        a.id
                        for a in values["agents"]
                        if name in (a.providers or []) and a.admin_state_up and alive[a.id]
                    ],
                }
                for name in api.changes.providers.names
            ]
            return {**values, "alive": alive, "providers": providers}

        return await page(request, "tether:agent:list", "agents.html", build)

    @r.get("/dead-letters")
    async def dead_letters(request: fastapi.Request) -> Response:
        async def build(ctx: RequestContext) -> Mapping[str, Any]:
            # They live in the broker, which the API reads for the console.
            answer = await api_call.call(request, "GET", "/v1/dead-letters")
            if not answer.ok:
                return {"letters": None, "problem": answer.message, "status": answer.status}
            body = answer.body
            groups = [
                (g["error"], g["count"], [d for d in body["dead_letters"] if d.get("error") == g["error"]])
                for g in body.get("groups", [])
            ]
            return {"letters": body["dead_letters"], "groups": groups, "total": body.get("total")}

        return await page(request, "tether:provider:list", "dead_letters.html", build)

    @r.get("/events")
    async def live(request: fastapi.Request) -> Response:
        try:
            await caller.caller(request, "tether:task:list")
            stream = await events.stream()
        except TetherError as exc:
            return error(request, exc.status, exc.msg)
        return StreamingResponse(
            stream,
            media_type="text/event-stream",
            # No proxy may hold the events back to fill a buffer.
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return r


def _read(api: Api, read: Any) -> Any:
    with api.reader() as session:
        return read(session)


def _project(ctx: RequestContext, asked: str | None) -> str | None:
    """The project a page shows: the caller's own, or for an administrator
    the one asked for (every project when none is)."""
    if ctx.all_projects:
        return asked or None
    return ctx.project_id
