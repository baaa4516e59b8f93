"""``/v1/<type>s``: the collections of every registered resource type."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any

import fastapi
from fastapi.responses import JSONResponse
from sqlalchemy import orm
from starlette.concurrency import run_in_threadpool

from tether.common.exceptions import InvalidInput, NotFound
from tether.common.resource_types import ResourceType
from tether.common.states import OperatingStatus, ProvisioningStatus, TaskState
from tether.plugin.agents import standby_pairs
from tether.plugin.api import idempotency, pagination, sync, views
from tether.plugin.api.deps import Api, JsonBody, authorized, caller, json_body
from tether.plugin.context import RequestContext
from tether.plugin.db import agent_queries, queries, sync_queries
from tether.plugin.db.exceptions import DuplicateEntry

#: A change being written: its answer and Location once committed.
Accepting = Future[tuple[dict[str, Any], str]]
#: The whole of an operation, from the request to its answer.
Handler = Callable[[fastapi.Request], Awaitable[JSONResponse]]


def router(api: Api, rtype: ResourceType) -> tuple[fastapi.APIRouter, Handler]:
    """The five routes of one resource type, and the create's handler on its own.

    The routes only declare what FastAPI documents and checks (the policy
    rule, the body, the parameters); :class:`Collection` does the work.
    """
    collection = Collection(api, rtype)
    r = fastapi.APIRouter(prefix=f"/v1/{rtype.collection}", tags=[rtype.name])
    allowed = {
        action: authorized(f"tether:{rtype.name}:{action}")
        for action in ("list", "get", "create", "update", "delete")
    }
    body_doc = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": collection.schema}}}
    }
    update_doc = dict(collection.schema, required=[], minProperties=1)

    @r.post("", status_code=202, openapi_extra=body_doc, summary=f"Create a {rtype.name}")
    async def create(
        request: fastapi.Request, *, ctx: RequestContext = allowed["create"], body: JsonBody
    ) -> JSONResponse:
        return await collection.create(request, ctx, body)

    @r.get("", summary=f"List {rtype.collection}", openapi_extra=sync.LIST_PARAMETERS)
    def list_(request: fastapi.Request, ctx: RequestContext = allowed["list"]) -> dict[str, Any]:
        return collection.list(request, ctx)

    @r.get(
        "/{resource_id}",
        summary=f"Show a {rtype.name}; with ?wait=N, once its latest task is finished or N seconds passed",
    )
    async def show(
        resource_id: str, wait: float = api.wait_param(), ctx: RequestContext = allowed["get"]
    ) -> dict[str, Any]:
        return await collection.show(resource_id, wait, ctx)

    @r.put(
        "/{resource_id}",
        status_code=202,
        summary=f"Update a {rtype.name}",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": update_doc}}}
        },
    )
    async def update(
        request: fastapi.Request, resource_id: str, *, ctx: RequestContext = allowed["update"], body: JsonBody
    ) -> JSONResponse:
        return await collection.update(request, resource_id, ctx, body)

    @r.delete(
        "/{resource_id}",
        status_code=202,
        summary=f"Delete a {rtype.name}; with ?cascade=true, with everything under it",
        # Read by _cascade, strictly; declared here for the API's description only.
        openapi_extra={
            "parameters": [
                {
                    "name": "cascade",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                    "description": f"true: delete the {rtype.name} with everything under it, children "
                    f"first, in one task; without it, a {rtype.name} that has children is refused (409).",
                }
            ]
        },
    )
    async def delete(
        request: fastapi.Request, resource_id: str, ctx: RequestContext = allowed["delete"]
    ) -> JSONResponse:
        return await collection.delete(request, resource_id, ctx)

    return r, collection.accept


class Collection:
    """What the routes of one resource type do."""

    def __init__(self, api: Api, rtype: ResourceType) -> None:
        self.api = api
        self.rtype = rtype
        self.item = f"/v1/{rtype.collection}/{{resource_id}}"
        self.filters = {
            "name": "name",
            "provisioning_status": "provisioning_status",
            "operating_status": "operating_status",
            "in_sync": "in_sync",
        }
        if rtype.parent_key:
            self.filters[rtype.parent_key] = "parent_id"
        self.schema = rtype.schema
        if "provider" in self.schema["properties"]:
            # Only the providers this deployment configured are accepted.
            self.schema["properties"]["provider"]["enum"] = list(api.changes.providers.names)

    async def accept(self, request: fastapi.Request) -> JSONResponse:
        """The create, from the request alone: what the route's dependencies do, in their order."""
        ctx = await caller(request, f"tether:{self.rtype.name}:create")
        return await self.create(request, ctx, await json_body(request))

    def create(self, request: fastapi.Request, ctx: RequestContext, body: Any) -> Awaitable[JSONResponse]:
        return self._change(
            request,
            ctx,
            body,
            lambda answer, writes: self.api.changes.create(ctx, self.rtype, body, answer, writes),
        )

    def update(
        self, request: fastapi.Request, resource_id: str, ctx: RequestContext, body: Any
    ) -> Awaitable[JSONResponse]:
        return self._change(
            request,
            ctx,
            body,
            lambda answer, _: self.api.changes.update(ctx, self.rtype, resource_id, body, answer),
        )

    def delete(
        self, request: fastapi.Request, resource_id: str, ctx: RequestContext
    ) -> Awaitable[JSONResponse]:
        whole = _cascade(request, self.rtype)
        return self._change(
            request,
            ctx,
            None,
            lambda answer, _: self.api.changes.delete(ctx, self.rtype, resource_id, answer, whole),
            "?cascade=true" if whole else "",
        )

    def list(self, request: fastapi.Request, ctx: RequestContext) -> dict[str, Any]:
        params = dict(request.query_params)
        query = pagination.parse(params, self.filters, self.api.default_limit, self.api.max_limit)
        _check_enum(query.filters, "provisioning_status", ProvisioningStatus)
        _check_enum(query.filters, "operating_status", OperatingStatus)
        wanted = sync.wanted(query.filters.pop("in_sync", None))
        with self.api.reader() as session:
            marker = None
            if query.marker:
                marker = queries.get_resource(session, query.marker, ctx.project_filter, self.rtype.name)
                if marker is None:
                    raise InvalidInput(f"marker {query.marker} is not a {self.rtype.name} you can see.")
            rows = sync_queries.list_resources(
                session, self.rtype.name, ctx.project_filter, query.filters, query.limit, marker, wanted
            )
            shown = sync.views_of(session, self.rtype, rows)
        return {
            self.rtype.collection: shown,
            "links": pagination.next_link(request.url.path, params, [row for row, _ in rows], query.limit),
        }

    async def show(self, resource_id: str, wait: float, ctx: RequestContext) -> dict[str, Any]:
        view = await run_in_threadpool(self.read, resource_id, ctx)
        task = view.get("task")
        if wait <= 0 or task is None or TaskState(task["state"]).terminal:
            return view
        await self.api.waiters.wait(task["id"], wait, functools.partial(self._settled, resource_id, ctx))
        return await run_in_threadpool(self.read, resource_id, ctx)

    def read(self, resource_id: str, ctx: RequestContext) -> dict[str, Any]:
        with self.api.reader() as session:
            row = queries.get_resource(session, resource_id, ctx.project_filter, self.rtype.name)
            if row is None:
                raise NotFound(kind=self.rtype.name.capitalize(), id=resource_id)
            task = queries.latest_task(session, row.id)
            agent = agent_queries.get_agent(session, row.agent_id) if row.agent_id else None
            view = sync.views_of(session, self.rtype, [(row, sync_queries.is_agent_dead(session, row))])[0]
            standing_by = standby_pairs.view(session, row)
        if agent is not None:
            view["host"] = agent.host
        if standing_by is not None:
            view["standby"] = standing_by
        if task is not None:
            view["task"] = {"id": task.id, "state": task.state, "href": f"/v1/tasks/{task.id}"}
        return view

    async def _settled(self, resource_id: str, ctx: RequestContext) -> bool:
        """Is the resource's latest task finished, or the resource gone?"""
        try:
            latest = (await run_in_threadpool(self.read, resource_id, ctx)).get("task")
        except NotFound:
            return True
        return latest is None or TaskState(latest["state"]).terminal

    def _answer(self, session: orm.Session | None, row: Any, task: Any) -> tuple[dict[str, Any], str]:
        return views.resource(self.rtype, row, task), self.item.format(resource_id=row.id)

    async def _change(
        self,
        request: fastapi.Request,
        ctx: RequestContext,
        body: Any,
        act: Callable[..., Accepting],
        query: str = "",
    ) -> JSONResponse:
        """Run ``act`` (a Changes method taking an answer, and whether that
        answer writes), honouring an Idempotency-Key.

        The change is written by the group committer's thread; no request
        thread waits for the commit.

        :param query: the query parameters that change what is done, as an
            Idempotency-Key stands for them (``?cascade=true``).
        """
        key = request.headers.get(idempotency.HEADER)
        if key is None:
            return _accepted(*await asyncio.wrap_future(act(self._answer, False)))
        request_ = _Keyed(ctx, idempotency.check_key(key), request.method, request.url.path + query, body)
        replay = await run_in_threadpool(_replay, self.api, request_)
        if replay is not None:
            return replay
        try:
            accepted = await asyncio.wrap_future(act(functools.partial(self._remember, request_), True))
        except (DuplicateEntry, idempotency.AnsweredMeanwhile):
            # The same key committed first from a concurrent request; ours rolled back whole.
            replay = await run_in_threadpool(_replay, self.api, request_)
            if replay is None:
                raise
            return replay
        return _accepted(*accepted)

    def _remember(
        self, keyed: _Keyed, session: orm.Session | None, row: Any, task: Any
    ) -> tuple[dict[str, Any], str]:
        """The answer, kept under its Idempotency-Key in the accepting transaction."""
        assert session is not None  # an answer that writes is always given the session
        view, location = self._answer(session, row, task)
        idempotency.remember(
            session,
            self.api.idempotency_retention,
            keyed.ctx.project_id,
            keyed.key,
            keyed.fingerprint,
            keyed.method,
            keyed.path,
            202,
            view,
            location,
        )
        return view, location


@dataclasses.dataclass(frozen=True)
class _Keyed:
    """A change sent with an Idempotency-Key, as the key stands for it."""

    ctx: RequestContext
    key: str
    method: str
    path: str
    body: Any

    @functools.cached_property
    def fingerprint(self) -> str:
        return idempotency.fingerprint(self.method, self.path, self.body)


def _accepted(view: dict[str, Any], location: str) -> JSONResponse:
    return views.Answer(view, status_code=202, headers={"Location": location})


def _cascade(request: fastapi.Request, rtype: ResourceType) -> bool:
    """``?cascade=``, read strictly: a typo must not delete a whole tree, nor leave one."""
    given = request.query_params.getlist("cascade")
    if not given:
        return False
    if len(given) > 1 or given[0] not in ("true", "false"):
        shown = ", ".join(repr(v[:50]) for v in given)
        raise InvalidInput(
            f"The query parameter cascade must be true or false, given once (got {shown}); "
            f"?cascade=true deletes the {rtype.name} with everything under it."
        )
    return given[0] == "true"


def _replay(api: Api, keyed: _Keyed) -> JSONResponse | None:
    with api.reader() as session:
        row = idempotency.lookup(
            session, keyed.ctx.project_id, keyed.key, keyed.fingerprint, keyed.method, keyed.path
        )
        if row is None:
            return None
        headers = {"Idempotent-Replayed": "true"}
        if row.location:
            headers["Location"] = row.location
        return JSONResponse(idempotency.stored_body(row), status_code=row.status, headers=headers)


def _check_enum(filters: dict[str, Any], key: str, enum: Any) -> None:
    if key in filters and filters[key] not in enum.__members__:
        raise InvalidInput(f"{key} must be one of {', '.join(enum.__members__)}.")
