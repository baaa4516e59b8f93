"""What every endpoint needs: the plugin's services, the caller, the body."""

from __future__ import annotations

import dataclasses
import json
from typing import Annotated, Any

import fastapi
from sqlalchemy import orm

from tether.common.exceptions import InvalidInput
from tether.common.resource_types import Registry
from tether.plugin.changes import Changes
from tether.plugin.context import RequestContext

DEFAULT_PROJECT = "default"


@dataclasses.dataclass(frozen=True)
class Api:
    registry: Registry
    changes: Changes
    sessionmaker: orm.sessionmaker[orm.Session]
    default_limit: int
    max_limit: int
    max_body_bytes: int
    workers: int = 8


def context(request: fastapi.Request) -> RequestContext:
    # Without authentication the caller names its project; the auth
    # strategies replace this with verified identities.
    project = request.headers.get("X-Project-Id") or DEFAULT_PROJECT
    roles = frozenset(r.strip() for r in request.headers.get("X-Roles", "member").split(",") if r.strip())
    return RequestContext(project_id=project, roles=roles, request_id=request.state.request_id)


async def json_body(request: fastapi.Request) -> Any:
    api: Api = request.app.state.api
    raw = await request.body()
    if len(raw) > api.max_body_bytes:
        raise InvalidInput(f"The body is {len(raw)} bytes; the limit is {api.max_body_bytes}.")
    if not raw.strip():
        raise InvalidInput("The request needs a JSON body.")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}.") from exc


Context = Annotated[RequestContext, fastapi.Depends(context)]
JsonBody = Annotated[Any, fastapi.Depends(json_body)]
