"""``/v1/tasks``: what happened to every accepted change."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
from starlette.concurrency import run_in_threadpool

from tether.common.exceptions import InvalidInput, NotFound
from tether.common.states import TaskState
from tether.plugin.api import actions, pagination, views
from tether.plugin.api.deps import Api, OptionalJsonBody, authorized
from tether.plugin.context import RequestContext
from tether.plugin.db import action_queries, queries
from tether.plugin.db.models import Callback
from tether.plugin.tasks import cancellation, operator_actions

#: query parameter -> column; ``task_state`` is the spelling of the original
#: Neutron task-API proposal, kept so its clients work unchanged.
FILTERS = {
    "resource_id": "resource_id",
    "resource_type": "resource_type",
    "state": "state",
    "task_state": "state",
    "operation": "operation",
    "provider": "provider",
    "request_id": "request_id",
}

Lister = Annotated[RequestContext, authorized("tether:task:list")]
Reader = Annotated[RequestContext, authorized("tether:task:get")]
Canceller = Annotated[RequestContext, authorized("tether:task:cancel")]


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix="/v1/tasks", tags=["task"])

    @r.get("", summary="List tasks")
    def list_(request: fastapi.Request, ctx: Lister) -> dict[str, Any]:
        params = dict(request.query_params)
        if "state" in params and "task_state" in params and params["state"] != params["task_state"]:
            raise InvalidInput("state and task_state name the same filter; give one of them.")
        query = pagination.parse(params, FILTERS, api.default_limit, api.max_limit)
        state = query.filters.get("state")
        if state is not None and state not in TaskState.__members__:
            raise InvalidInput(f"state must be one of {', '.join(TaskState.__members__)}.")
        with api.reader() as session:
            marker = None
            if query.marker:
                marker = queries.get_task(session, query.marker, ctx.project_filter)
                if marker is None:
                    raise InvalidInput(f"marker {query.marker} is not a task you can see.")
            rows = list(queries.list_tasks(session, ctx.project_filter, query.filters, query.limit, marker))
        return {
            "tasks": [views.task(t) for t in rows],
            "links": pagination.next_link(request.url.path, params, rows, query.limit),
        }

    def read(task_id: str, ctx: RequestContext) -> dict[str, Any]:
        with api.reader() as session:
            row = queries.get_task(session, task_id, ctx.project_filter)
            if row is None:
                raise NotFound(kind="Task", id=task_id)
            history = [views.attempt(a) for a in queries.attempts(session, row.id)]
            steps = [views.step(s) for s in queries.steps(session, row.id)]
            callback = session.get(Callback, row.id)
            actions = action_queries.of_task(session, row.id)
        retry_of = next((a.target_id for a in actions if a.action == "retry" and a.task_id == row.id), None)
        view = views.task(row) | {
            "history": history,
            "steps": steps,
            "actions": [views.action(a) for a in actions],
            "retry_of": retry_of,
        }
        if row.callback_url:
            view["callback"] = views.callback(row.callback_url, callback)
        return view

    @r.get("/{task_id}", summary="Show a task; with ?wait=N, once it is finished or N seconds passed")
    async def show(task_id: str, ctx: Reader, wait: float = api.wait_param()) -> dict[str, Any]:
        view = await run_in_threadpool(read, task_id, ctx)
        if wait <= 0 or TaskState(view["state"]).terminal:
            return view

        async def finished() -> bool:
            return TaskState((await run_in_threadpool(read, task_id, ctx))["state"]).terminal

        await api.waiters.wait(task_id, wait, finished)
        return await run_in_threadpool(read, task_id, ctx)

    @r.post(
        "/{task_id}/cancel",
        summary="Cancel a task no agent has started",
        status_code=200,
        openapi_extra=actions.body_doc(actions.REASON_ONLY),
    )
    def cancel(task_id: str, ctx: Canceller, body: OptionalJsonBody) -> dict[str, Any]:
        reason = actions.reason_of(body, "cancel")
        with api.sessionmaker.begin() as session:
            task = cancellation.cancel(session, api.changes.policy, ctx, task_id, api.registry)
            operator_actions.record(session, ctx, "cancel", "task", task_id, task_id=task_id, reason=reason)
            return views.task(task)

    return r
