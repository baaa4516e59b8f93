"""Who is using the console: the API's own authentication and policy.

A browser cannot put ``X-Auth-Token`` on a link it follows, so the console
signs in once (``/console/login``) and keeps the credential in a cookie:
``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's
page sends it), ``Secure`` when the console is served over TLS, and scoped
to ``/console``. Each request turns the cookie back into the headers the
API would have been sent and asks the API's authenticator and policy about
them, so a token, a Keystone token or (``noauth``, on loopback only) a
project and roles mean in the console exactly what they mean in the API.
A request that carries those headers itself (curl, a proxy) needs no cookie.

Forms that change something also carry a token derived from the cookie,
which another site cannot read, and must come from the console's own
origin when the browser says where they come from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

import fastapi
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from tether.common.exceptions import Forbidden
from tether.plugin.api.auth import Identity, NoAuth
from tether.plugin.api.deps import Api
from tether.plugin.context import RequestContext

COOKIE = "tether_console"
PATH = "/console"
#: the headers through which the API's authenticators learn who calls
CREDENTIAL_HEADERS = ("x-auth-token", "authorization", "x-project-id", "x-roles")


def noauth(api: Api) -> bool:
    return isinstance(api.auth, NoAuth)


def credentials(request: fastapi.Request) -> dict[str, str]:
    """The headers that say who the caller is: its own, else its cookie's."""
    own = {name: request.headers[name] for name in CREDENTIAL_HEADERS if name in request.headers}
    if own:
        return own
    return decode_cookie(request.cookies.get(COOKIE, ""))


def encode_cookie(headers: Mapping[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(dict(headers)).encode()).decode()


def decode_cookie(value: str) -> dict[str, str]:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(value.encode()))
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {k: v for k, v in decoded.items() if k in CREDENTIAL_HEADERS and isinstance(v, str)}


async def caller(request: fastapi.Request, rule: str) -> RequestContext:
    """The signed-in caller, once policy ``rule`` allows it; raises
    Unauthorized (sign in) or Forbidden as the API would."""
    api: Api = request.app.state.api
    # The authenticators read headers as HTTP does, whatever their case.
    headers = Headers(headers=credentials(request))
    if api.auth.blocking:
        identity = await run_in_threadpool(api.auth.identify, headers)
    else:
        identity = api.auth.identify(headers)
    api.policy.authorize(rule, identity)
    return RequestContext(
        project_id=identity.project_id,
        roles=identity.roles,
        all_projects=api.policy.allowed("tether:all_projects", identity),
        request_id=request.state.request_id,
    )


def allowed(request: fastapi.Request, ctx: RequestContext, rule: str) -> bool:
    """Whether the caller may do what ``rule`` guards: to offer only the
    pages and actions it may use (the API decides anyway)."""
    api: Api = request.app.state.api
    return api.policy.allowed(rule, Identity(ctx.project_id, ctx.roles))


def form_token(request: fastapi.Request) -> str:
    """The token every form of this caller carries."""
    secret = json.dumps(credentials(request), sort_keys=True).encode()
    return hmac.new(secret, b"tether-console-form", hashlib.sha256).hexdigest()


def check_form(request: fastapi.Request, token: str) -> None:
    """Refuse a form that did not come from one of this caller's console pages."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise Forbidden(action="A console action", reason=f"it came from another site ({origin})")
    if not hmac.compare_digest(token, form_token(request)):
        raise Forbidden(
            action="A console action",
            reason="the form is stale or did not come from this console; reload the page and try again",
        )
