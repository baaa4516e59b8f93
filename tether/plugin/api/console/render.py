"""Rendering the console's pages: the templates, their filters, the answers
for errors and forms."""

from __future__ import annotations

import datetime
import pathlib
import shlex
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import fastapi
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tether.common.exceptions import InvalidInput, PayloadTooLarge, TetherError, Unauthorized
from tether.plugin.api.console import caller
from tether.plugin.context import RequestContext
from tether.plugin.db.models import utcnow

HERE = pathlib.Path(__file__).parent
STATIC = HERE / "static"
MAX_FORM_BYTES = 16 * 1024
#: what an empty time or duration reads as
NOTHING = "\N{EN DASH}"


def templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=HERE / "templates")
    t.env.filters.update(ago=ago, duration=duration, clock=clock, until=until)
    t.env.globals.update(status_class=status_class, cli=cli)
    return t


def cli(*words: str, reason: str = "") -> str:
    """A shell command line: what to type for the same as an action."""
    line = " ".join(shlex.quote(str(w)) for w in words)
    return f"{line} --reason {shlex.quote(reason)}" if reason else line


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOTHING
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} d"


def ago(when: datetime.datetime | None) -> str:
    if when is None:
        return "never"
    return duration(max((utcnow() - when).total_seconds(), 0.0)) + " ago"


def until(when: datetime.datetime | None) -> str:
    if when is None:
        return NOTHING
    left = (when - utcnow()).total_seconds()
    return "due now" if left <= 0 else f"in {duration(left)}"


def clock(when: datetime.datetime | None) -> str:
    return NOTHING if when is None else when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def status_class(value: str | None) -> str:
    """A CSS class for a status: green, amber, red or grey."""
    if value in ("ACTIVE", "ONLINE", "SUCCEEDED", "DONE", "DELIVERED", "alive"):
        return "ok"
    if value in ("ERROR", "FAILED", "OFFLINE", "dead", "UNDO_FAILED"):
        return "bad"
    if value in ("DEGRADED", "CANCELLED", "SUPERSEDED", "disabled", "UNDONE"):
        return "warn"
    if value and (value.startswith("PENDING") or value in ("QUEUED", "RUNNING")):
        return "busy"
    return "muted"


Build = Callable[[RequestContext], Awaitable[Mapping[str, Any]]]


async def page(request: fastapi.Request, rule: str, template: str, build: Build) -> Response:
    """The page ``template`` for a caller ``rule`` allows, with what
    ``build`` reads; the login page for a caller not signed in."""
    try:
        ctx = await caller.caller(request, rule)
        values = await build(ctx)
    except Unauthorized as exc:
        return to_login(request, exc.msg)
    except TetherError as exc:
        return error(request, exc.status, exc.msg)
    t: Jinja2Templates = request.app.state.console_templates
    return t.TemplateResponse(request, template, {**common(request, ctx), **values})


def common(request: fastapi.Request, ctx: RequestContext) -> dict[str, Any]:
    return {
        "ctx": ctx,
        "form_token": caller.form_token(request),
        "can_fleet": caller.allowed(request, ctx, "tether:agent:list"),
        "now": utcnow(),
    }


def to_login(request: fastapi.Request, why: str = "") -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    query = urllib.parse.urlencode({"next": here, "why": why})
    target = f"{caller.PATH}/login?{query}"
    if request.headers.get("HX-Request"):
        # A live page refetching itself: the browser, not the request, goes to sign in.
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def error(request: fastapi.Request, status: int, message: str) -> HTMLResponse:
    t: Jinja2Templates = request.app.state.console_templates
    response: HTMLResponse = t.TemplateResponse(
        request, "error.html", {"status": status, "message": message}, status_code=status
    )
    return response


async def form(request: fastapi.Request) -> dict[str, str]:
    """An HTML form's fields (``application/x-www-form-urlencoded``)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise PayloadTooLarge(limit=MAX_FORM_BYTES)
    try:
        fields = urllib.parse.parse_qs(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise InvalidInput("The form is not valid UTF-8.") from exc
    return {name: values[-1] for name, values in fields.items()}


def back(target: str | None, default: str) -> str:
    """Where to go after a form: only ever a console page."""
    if target and target.startswith(caller.PATH + "/") and "//" not in target and "\\" not in target:
        return target
    return default
