"""Signing in to the console and out again (see :mod:`.caller`)."""

from __future__ import annotations

import fastapi
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tether.common.exceptions import TetherError
from tether.plugin.api.auth import ROLES
from tether.plugin.api.console import caller
from tether.plugin.api.console.render import back, form
from tether.plugin.api.deps import Api

#: how long the browser keeps the sign-in, in seconds
COOKIE_AGE = 12 * 3600


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix=caller.PATH, include_in_schema=False)

    def show(request: fastapi.Request, problem: str = "", status: int = 200) -> Response:
        t: Jinja2Templates = request.app.state.console_templates
        values = {
            "noauth": caller.noauth(api),
            "roles": ROLES,
            "next": back(request.query_params.get("next"), f"{caller.PATH}/resources"),
            "problem": problem or request.query_params.get("why", ""),
        }
        response: Response = t.TemplateResponse(request, "login.html", values, status_code=status)
        return response

    @r.get("/login")
    def login_page(request: fastapi.Request) -> Response:
        return show(request)

    @r.post("/login")
    async def login(request: fastapi.Request) -> Response:
        fields = await form(request)
        if caller.noauth(api):
            roles = ",".join(role for role in ROLES if fields.get(f"role_{role}"))
            headers = {"x-project-id": fields.get("project", "").strip(), "x-roles": roles or "reader"}
        else:
            headers = {"x-auth-token": fields.get("token", "").strip()}
        try:
            # Checked now, so a mistyped token is said at once.
            await caller.caller(_with(request, headers), "tether:discovery")
        except TetherError as exc:
            return show(request, exc.msg, exc.status)
        response = RedirectResponse(back(fields.get("next"), f"{caller.PATH}/resources"), status_code=303)
        response.set_cookie(
            caller.COOKIE,
            caller.encode_cookie(headers),
            max_age=COOKIE_AGE,
            path=caller.PATH,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    @r.post("/logout")
    def logout() -> Response:
        response = RedirectResponse(f"{caller.PATH}/login", status_code=303)
        response.delete_cookie(caller.COOKIE, path=caller.PATH)
        return response

    return r


def _with(request: fastapi.Request, headers: dict[str, str]) -> fastapi.Request:
    """``request`` as if it carried ``headers`` as its credentials."""
    raw = [(k, v) for k, v in request.scope["headers"] if k.decode().lower() not in caller.CREDENTIAL_HEADERS]
    raw += [(k.encode(), v.encode()) for k, v in headers.items()]
    return fastapi.Request({**request.scope, "headers": raw}, request.receive)
