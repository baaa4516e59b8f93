"""Turning errors into answers, in one place.

Every error answer has the same shape::

    {"error": {"type": "InvalidInput", "message": "...", "path": "$.port",
               "request_id": "req-..."}}
"""

from __future__ import annotations

import logging
from typing import Any

import fastapi
from fastapi import exceptions as fastapi_exceptions
from fastapi.responses import JSONResponse
from starlette import routing
from starlette.exceptions import HTTPException

from tether.common.exceptions import TetherError

LOG = logging.getLogger(__name__)


ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message", "request_id"],
            "properties": {
                "type": {"type": "string", "description": "The kind of error, e.g. InvalidInput."},
                "message": {"type": "string", "description": "What was wrong and what to do."},
                "path": {"type": "string", "description": "Where in the body, as $.attribute."},
                "request_id": {"type": ["string", "null"]},
            },
        }
    },
}


def _documented(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ERROR_SCHEMA}}}


#: The error answers any authenticated operation may give.
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _documented(
        "The request is malformed, names a resource that is not there to be named (a reference "
        "such as a listener's default_pool_id), or asks what no live driver of its provider "
        "supports (UnsupportedByProvider); the message says what and where."
    ),
    401: _documented("No valid token; send one in X-Auth-Token or Authorization: Bearer."),
    403: _documented("The caller's roles do not allow this operation."),
    404: _documented("No such item in the caller's project."),
    405: _documented("The method is not allowed here; Allow lists those that are."),
    409: _documented(
        "A conflict with the current state or with another resource (a VIP address and port "
        "already served, a resource another one names); the message names it and what to do."
    ),
    413: _documented("The body is larger than the API accepts."),
    422: _documented("An Idempotency-Key reused for a different request."),
    429: _documented("Too many requests from this project; retry after Retry-After seconds."),
    503: _documented("Busy or a dependency is down; retry after Retry-After seconds."),
}


def error_response(
    request: fastapi.Request, status: int, type_: str, message: str, **extra: Any
) -> JSONResponse:
    body = {
        "type": type_,
        "message": message,
        **extra,
        "request_id": getattr(request.state, "request_id", None),
    }
    return JSONResponse({"error": body}, status_code=status)


def tether_error(request: fastapi.Request, exc: TetherError) -> JSONResponse:
    if exc.status >= 500:
        detail = f" ({exc.kwargs['detail']})" if "detail" in exc.kwargs else ""
        LOG.error("%s %s failed: %s%s", request.method, request.url.path, exc.msg, detail)
    extra = {"path": exc.kwargs["path"]} if "path" in exc.kwargs else {}
    response = error_response(request, exc.status, exc.type, exc.msg, **extra)
    if exc.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="tether"'
    if "retry_after" in exc.kwargs:
        response.headers["Retry-After"] = str(exc.kwargs["retry_after"])
    return response


def install(app: fastapi.FastAPI) -> None:
    @app.exception_handler(TetherError)
    async def _tether_error(request: fastapi.Request, exc: TetherError) -> JSONResponse:
        return tether_error(request, exc)

    @app.exception_handler(fastapi_exceptions.RequestValidationError)
    async def _validation_error(
        request: fastapi.Request, exc: fastapi_exceptions.RequestValidationError
    ) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()
        )
        return error_response(request, 400, "InvalidInput", f"Invalid request: {problems}")

    @app.exception_handler(HTTPException)
    async def _http_error(request: fastapi.Request, exc: HTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"No such endpoint: {request.url.path}; GET /v1 lists the resource types."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        response = error_response(request, exc.status_code, "HTTPError", message)
        response.headers.update(exc.headers or {})
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(_allowed_methods(request))
        return response


def _allowed_methods(request: fastapi.Request) -> list[str]:
    # Starlette names the methods of the first route matching the path only;
    # each method of a path is a route of its own here.
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, routing.Route) and route.matches(request.scope)[0] != routing.Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def unexpected(request: fastapi.Request, exc: Exception) -> JSONResponse:
    """The answer to an exception nothing else handled."""
    LOG.error(
        "%s %s failed unexpectedly",
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return error_response(
        request,
        500,
        "InternalError",
        "The plugin failed to handle the request; the operator's log has the details under this request id.",
    )
