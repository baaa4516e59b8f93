"""What every endpoint needs: the plugin's services, the caller, the body."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Annotated, Any

import fastapi
from sqlalchemy import orm

from tether.common.exceptions import InvalidInput, PayloadTooLarge
from tether.common.resource_types import Registry
from tether.plugin import callbacks
from tether.plugin.agents import Registry as AgentRegistry
from tether.plugin.changes import Changes
from tether.plugin.context import RequestContext
from tether.plugin.throttle import RateLimiter
from tether.plugin.waiters import Waiters

DEFAULT_PROJECT = "default"
MAX_PROJECT_ID = 255


@dataclasses.dataclass(frozen=True)
class Api:
    registry: Registry
    changes: Changes
    reader: orm.sessionmaker[orm.Session]
    sessionmaker: orm.sessionmaker[orm.Session]
    agents: AgentRegistry
    default_limit: int
    max_limit: int
    max_body_bytes: int
    workers: int = 8
    idempotency_retention: float = 86400.0
    max_wait: float = 60.0
    waiters: Waiters = dataclasses.field(default_factory=Waiters)
    limiter: RateLimiter = dataclasses.field(default_factory=lambda: RateLimiter(0, 1))
    check_callback: Callable[[str], str] = lambda url: url

    def check_wait(self, wait: float) -> None:
        if wait > self.max_wait:
            raise InvalidInput(f"wait may be at most {self.max_wait:g} seconds; ask again to wait longer.")


def context(request: fastapi.Request) -> RequestContext:
    # Without authentication the caller names its project; the auth
    # strategies replace this with verified identities.
    project = request.headers.get("X-Project-Id") or DEFAULT_PROJECT
    if len(project) > MAX_PROJECT_ID or not project.isprintable():
        raise InvalidInput(f"X-Project-Id must be at most {MAX_PROJECT_ID} printable characters.")
    roles = frozenset(r.strip() for r in request.headers.get("X-Roles", "member").split(",") if r.strip())
    api: Api = request.app.state.api
    api.limiter.take(project)
    callback = request.headers.get(callbacks.HEADER)
    if callback is not None:
        callback = api.check_callback(callback)
    return RequestContext(
        project_id=project, roles=roles, request_id=request.state.request_id, callback_url=callback
    )


async def json_body(request: fastapi.Request) -> Any:
    api: Api = request.app.state.api
    limit = api.max_body_bytes
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit=limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(limit=limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise InvalidInput("The request needs a JSON body.")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:
        raise InvalidInput("The body is nested too deeply.") from exc
    _refuse_nul(body)
    return body


def _refuse_nul(value: Any, path: str = "$") -> None:
    # NUL cannot be stored in PostgreSQL text and has no business in names.
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and "\x00" in item:
            raise InvalidInput(f"Invalid input at {where}: NUL characters are not allowed.", path=where)
        if isinstance(item, dict):
            for key, child in item.items():
                if "\x00" in key:
                    raise InvalidInput(
                        f"Invalid input at {where}: NUL characters are not allowed.", path=where
                    )
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))


Context = Annotated[RequestContext, fastapi.Depends(context)]
#: ``?wait=N``: answer once the task is finished, or after N seconds.
Wait = Annotated[float, fastapi.Query(ge=0, description="Seconds to wait for the task to finish.")]
JsonBody = Annotated[Any, fastapi.Depends(json_body)]
