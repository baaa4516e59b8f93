"""``/v1/<type>s``: the collections of every registered resource type."""

from __future__ import annotations

from typing import Any

import fastapi
from fastapi.responses import JSONResponse

from tether.common.exceptions import InvalidInput, NotFound
from tether.common.resource_types import ResourceType
from tether.common.states import OperatingStatus, ProvisioningStatus
from tether.plugin.api import pagination, views
from tether.plugin.api.deps import Api, Context, JsonBody
from tether.plugin.db import queries


def router(api: Api, rtype: ResourceType) -> fastapi.APIRouter:
    """The five routes of one resource type."""
    r = fastapi.APIRouter(prefix=f"/v1/{rtype.collection}", tags=[rtype.name])
    item = f"/v1/{rtype.collection}/{{resource_id}}"
    filters = {
        "name": "name",
        "provisioning_status": "provisioning_status",
        "operating_status": "operating_status",
    }
    if rtype.parent_key:
        filters[rtype.parent_key] = "parent_id"
    body_doc = {"requestBody": {"required": True, "content": {"application/json": {"schema": rtype.schema}}}}
    update_schema = dict(rtype.schema, required=[])

    def accepted(row: Any, task: Any) -> JSONResponse:
        return JSONResponse(
            views.resource(rtype, row, task),
            status_code=202,
            headers={"Location": item.format(resource_id=row.id)},
        )

    @r.post("", status_code=202, openapi_extra=body_doc, summary=f"Create a {rtype.name}", responses=_ERRORS)
    def create(ctx: Context, body: JsonBody) -> JSONResponse:
        return accepted(*api.changes.create(ctx, rtype, body))

    @r.get("", summary=f"List {rtype.collection}")
    def list_(request: fastapi.Request, ctx: Context) -> dict[str, Any]:
        params = dict(request.query_params)
        query = pagination.parse(params, filters, api.default_limit, api.max_limit)
        _check_enum(query.filters, "provisioning_status", ProvisioningStatus)
        _check_enum(query.filters, "operating_status", OperatingStatus)
        with api.reader() as session:
            marker = None
            if query.marker:
                marker = queries.get_resource(session, query.marker, ctx.project_filter, rtype.name)
                if marker is None:
                    raise InvalidInput(f"marker {query.marker} is not a {rtype.name} you can see.")
            rows = list(
                queries.list_resources(
                    session, rtype.name, ctx.project_filter, query.filters, query.limit, marker
                )
            )
        return {
            rtype.collection: [views.resource(rtype, row) for row in rows],
            "links": pagination.next_link(request.url.path, params, rows, query.limit),
        }

    @r.get("/{resource_id}", summary=f"Show a {rtype.name}", responses=_ERRORS)
    def show(resource_id: str, ctx: Context) -> dict[str, Any]:
        with api.reader() as session:
            row = queries.get_resource(session, resource_id, ctx.project_filter, rtype.name)
            if row is None:
                raise NotFound(kind=rtype.name.capitalize(), id=resource_id)
            task = queries.latest_task(session, row.id)
        view = views.resource(rtype, row)
        if task is not None:
            view["task"] = {"id": task.id, "state": task.state, "href": f"/v1/tasks/{task.id}"}
        return view

    @r.put(
        "/{resource_id}",
        status_code=202,
        summary=f"Update a {rtype.name}",
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": update_schema}}}
        },
        responses=_ERRORS,
    )
    def update(
        resource_id: str,
        ctx: Context,
        body: JsonBody,
    ) -> JSONResponse:
        return accepted(*api.changes.update(ctx, rtype, resource_id, body))

    @r.delete("/{resource_id}", status_code=202, summary=f"Delete a {rtype.name}", responses=_ERRORS)
    def delete(resource_id: str, ctx: Context) -> JSONResponse:
        return accepted(*api.changes.delete(ctx, rtype, resource_id))

    return r


def _check_enum(filters: dict[str, Any], key: str, enum: Any) -> None:
    if key in filters and filters[key] not in enum.__members__:
        raise InvalidInput(f"{key} must be one of {', '.join(enum.__members__)}.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "The request is malformed; the message says what and where."},
    404: {"description": "No such resource in your project."},
    409: {"description": "The resource tree has a change in flight, or children remain."},
}
