"""``POST /v1/<collection>`` straight to its handler.

FastAPI's routing, its dependency solving and its exception middleware cost
a create more than everything else the API does for it. The creates are the
one operation clients send at a rate, so this plain ASGI layer hands them to
the same handler the FastAPI route calls (the caller, then the body, then the
change, in the route's order) and answers errors as the app's handlers do.
The FastAPI routes stay: they document the operations and serve the rest.
"""

from __future__ import annotations

import fastapi
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from tether.common.exceptions import TetherError
from tether.plugin.api import errors
from tether.plugin.api.resources import Handler


class CreateRoutes:
    """Serves ``POST`` on the collections in ``creates``; passes the rest on."""

    def __init__(self, app: ASGIApp, creates: dict[str, Handler]) -> None:
        self.app = app
        self.creates = creates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        create = self.creates.get(scope["path"]) if scope["type"] == "http" else None
        if create is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = fastapi.Request(scope, receive)
        response: JSONResponse
        try:
            response = await create(request)
        except TetherError as exc:
            response = errors.tether_error(request, exc)
        await response(scope, receive, send)
