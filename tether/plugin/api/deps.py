"""What every endpoint needs: the plugin's services, the caller, the body."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import fastapi
import fastapi.security
from sqlalchemy import orm
from starlette.concurrency import run_in_threadpool

from tether.common.exceptions import InvalidInput, PayloadTooLarge
from tether.common.resource_types import Registry
from tether.common.transport import Broker
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.api.auth import Authenticator, NoAuth
from tether.plugin.api.policy import AccessPolicy
from tether.plugin.api.waiters import Waiters
from tether.plugin.context import RequestContext
from tether.plugin.outbound import callbacks
from tether.plugin.tasks.changes import Changes
from tether.plugin.tasks.throttle import RateLimiter


@dataclasses.dataclass(frozen=True)
class Api:
    registry: Registry
    changes: Changes
    reader: orm.sessionmaker[orm.Session]
    policy: AccessPolicy
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
    #: the broker, for the dead-letter queue; None where the API has none
    broker: Broker | None = None
    #: tells the outbox relay that a committed transaction left rows for it
    wake_relay: Callable[[], None] = lambda: None

    def wait_param(self) -> Any:
        """``?wait=N``: answer once the task is finished, or after N seconds."""
        return fastapi.Query(
            0.0, ge=0, le=self.max_wait, description="Seconds to wait for the task to finish, at most this."
        )


TOKEN_HEADER = fastapi.security.APIKeyHeader(
    name="X-Auth-Token",
    scheme_name="token",
    description="A token from the operator (auth_strategy token) or Keystone (keystone).",
    auto_error=False,
)
BEARER = fastapi.security.HTTPBearer(
    scheme_name="bearer", description="The same token as Authorization: Bearer.", auto_error=False
)


def authorized(rule: str) -> Any:
    """The dependency of an operation guarded by policy ``rule``: the
    authenticated caller, once the rule allows it."""

    async def context(
        request: fastapi.Request,
        _token: Annotated[str | None, fastapi.Security(TOKEN_HEADER)] = None,
        _bearer: Annotated[Any, fastapi.Security(BEARER)] = None,
    ) -> RequestContext:
        # The two Security parameters only describe the schemes in the
        # OpenAPI document; the strategy reads the headers itself.
        return await caller(request, rule)

    return fastapi.Depends(context)


async def caller(request: fastapi.Request, rule: str) -> RequestContext:
    """The authenticated caller, once policy ``rule`` allows it."""
    api: Api = request.app.state.api
    headers = request.headers
    if api.auth.blocking or callbacks.HEADER in headers:
        # Keystone asks its server, a callback's host is resolved: not on the event loop.
        return await run_in_threadpool(_context, api, rule, headers, request.state.request_id)
    # A local check costs less than the hop to a thread and back.
    return _context(api, rule, headers, request.state.request_id)


def _context(api: Api, rule: str, headers: Mapping[str, str], request_id: str) -> RequestContext:
    identity = api.auth.identify(headers)
    api.policy.authorize(rule, identity)
    api.limiter.take(identity.project_id)
    callback = headers.get(callbacks.HEADER)
    if callback is not None:
        callback = api.check_callback(callback)
    return RequestContext(
        project_id=identity.project_id,
        roles=identity.roles,
        all_projects=api.policy.allowed("tether:all_projects", identity),
        request_id=request_id,
        callback_url=callback,
    )


async def json_body(request: fastapi.Request, optional: bool = False) -> Any:
    """The request's JSON body, checked against the API's bounds.

    :param optional: an empty body is None instead of an error.
    """
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
        if optional:
            return None
        raise InvalidInput("The request needs a JSON body.")
    try:
        body = json.loads(raw, parse_float=_number, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"The body is not valid JSON: {exc}.") from exc
    except RecursionError as exc:
        raise InvalidInput("The body is nested too deeply.") from exc
    check_values(body, api.max_string_length, api.max_items)
    return body


MAX_DEPTH = 32


def _number(text: str) -> float | int:
    # JSON has numbers, not ints and floats: 80.0 is the integer 80, as JSON
    # Schema says, and reaches drivers as one.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range")
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


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


async def _optional_json_body(request: fastapi.Request) -> Any:
    return await json_body(request, optional=True)


JsonBody = Annotated[Any, fastapi.Depends(json_body)]
#: A JSON body, or None when the request has none.
OptionalJsonBody = Annotated[Any, fastapi.Depends(_optional_json_body)]
