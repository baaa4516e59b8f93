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
from tether.plugin.auth import Authenticator, NoAuth
from tether.plugin.changes import Changes
from tether.plugin.context import RequestContext
from tether.plugin.policy import Policy
from tether.plugin.throttle import RateLimiter
from tether.plugin.waiters import Waiters


@dataclasses.dataclass(frozen=True)
class Api:
    registry: Registry
    changes: Changes
    reader: orm.sessionmaker[orm.Session]
    policy: Policy
    sessionmaker: orm.sessionmaker[orm.Session]
    agents: AgentRegistry
    default_limit: int
    max_limit: int
    max_body_bytes: int
    max_string_length: int = 4096
    max_items: int = 1000
    workers: int = 8
    idempotency_retention: float = 86400.0
    max_wait: float = 60.0
    waiters: Waiters = dataclasses.field(default_factory=Waiters)
    limiter: RateLimiter = dataclasses.field(default_factory=lambda: RateLimiter(0, 1))
    check_callback: Callable[[str], str] = lambda url: url
    auth: Authenticator = dataclasses.field(default_factory=NoAuth)

    def check_wait(self, wait: float) -> None:
        if wait > self.max_wait:
            raise InvalidInput(f"wait may be at most {self.max_wait:g} seconds; ask again to wait longer.")


def authorized(rule: str) -> Any:
    """The dependency of an operation guarded by policy ``rule``: the
    authenticated caller, once the rule allows it."""

    def context(request: fastapi.Request) -> RequestContext:
        api: Api = request.app.state.api
        identity = api.auth.identify(request.headers)
        api.policy.authorize(rule, identity)
        api.limiter.take(identity.project_id)
        callback = request.headers.get(callbacks.HEADER)
        if callback is not None:
            callback = api.check_callback(callback)
        return RequestContext(
            project_id=identity.project_id,
            roles=identity.roles,
            all_projects=api.policy.allowed("tether:all_projects", identity),
            request_id=request.state.request_id,
            callback_url=callback,
        )

    return fastapi.Depends(context)


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
    check_values(body, api.max_string_length, api.max_items)
    return body


MAX_DEPTH = 32


def check_values(value: Any, max_string: int, max_items: int) -> None:
    """Bounds every resource type gets, whatever its schema forgot: string
    length, members of an object or array, nesting; and no NUL, which
    PostgreSQL text cannot store and which has no business in names."""
    stack = [(value, "$", 0)]
    while stack:
        item, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InvalidInput(f"Invalid input at {where}: nested deeper than {MAX_DEPTH}.", path=where)
        if isinstance(item, str):
            _check_string(item, where, max_string)
        elif isinstance(item, dict | list):
            if len(item) > max_items:
                raise InvalidInput(
                    f"Invalid input at {where}: {len(item)} members, at most {max_items} are accepted.",
                    path=where,
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    _check_string(key, where, max_string)
                    stack.append((child, f"{where}.{key}", depth + 1))
            else:
                stack.extend((child, f"{where}[{i}]", depth + 1) for i, child in enumerate(item))


def _check_string(text: str, where: str, max_string: int) -> None:
    if "\x00" in text:
        raise InvalidInput(f"Invalid input at {where}: NUL characters are not allowed.", path=where)
    if len(text) > max_string:
        raise InvalidInput(
            f"Invalid input at {where}: a string of {len(text)} characters; "
            f"at most {max_string} are accepted.",
            path=where,
        )


#: ``?wait=N``: answer once the task is finished, or after N seconds.
Wait = Annotated[float, fastapi.Query(ge=0, description="Seconds to wait for the task to finish.")]
JsonBody = Annotated[Any, fastapi.Depends(json_body)]
