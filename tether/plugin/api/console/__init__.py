"""The web console at ``/console``: what the API knows, for people.

Server-rendered pages (Jinja2) made live by server-sent events and htmx,
vendored as static files under ``static/`` (no build step); under the
API's own authentication and policy (:mod:`.caller`); its actions are
carried out by the API itself (:mod:`.api_call`). docs/operating.md, "The
console", describes the pages.
"""

from __future__ import annotations

import fastapi
from fastapi.staticfiles import StaticFiles

from tether.plugin.api.console import action_pages, caller, login, pages, render
from tether.plugin.api.console.events import LiveEvents
from tether.plugin.api.deps import Api


def install(app: fastapi.FastAPI, api: Api) -> LiveEvents:
    """Serve the console from ``app``; the live events it sends its pages."""
    events = LiveEvents()
    events.install(api.sessionmaker, api.waiters)
    app.state.console_templates = render.templates()
    app.state.console_events = events
    app.include_router(login.router(api))
    app.include_router(pages.router(api, events))
    app.include_router(action_pages.router(api))
    app.mount(f"{caller.PATH}/static", StaticFiles(directory=render.STATIC), name="console-static")
    return events
