"""Keystone tokens, validated by keystonemiddleware's ``auth_token``.

keystonemiddleware is WSGI; tether's API is ASGI. Only the request's headers
matter to ``auth_token``, so each request's headers go through the
middleware as a body-less WSGI call (in the request's worker thread, since
validation may ask Keystone), and the identity it confirms comes back in the
``X-Project-Id`` and ``X-Roles`` headers it sets. It strips those headers
from what the caller sent first, so they cannot be forged.

Configure it in ``[keystone_authtoken]`` as for any OpenStack service
(``www_authenticate_uri``, ``auth_url``, ``auth_type = password``, the
service user, ``memcached_servers`` for a token cache).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from oslo_config import cfg

from tether.common.exceptions import ConfigError, ServiceUnavailable, Unauthorized
from tether.plugin.api.auth import Identity, check_identity, parse_roles

try:
    from keystonemiddleware import auth_token
except ImportError:  # pragma: no cover - depends on the installed extras
    auth_token = None

LOG = logging.getLogger(__name__)

_Start = Callable[..., Any]


class Keystone:
    blocking = True

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        if auth_token is None:
            raise ConfigError(
                reason="[api] auth_strategy = keystone needs keystonemiddleware; "
                "install it with `pip install 'tether[keystone]'`."
            )
        self._middleware = auth_token.AuthProtocol(self._confirmed, {"oslo_config_config": conf})

    @staticmethod
    def _confirmed(environ: dict[str, Any], start_response: _Start) -> Iterable[bytes]:
        environ["tether.identity"] = (environ.get("HTTP_X_PROJECT_ID"), environ.get("HTTP_X_ROLES", ""))
        start_response("204 No Content", [])
        return []

    def identify(self, headers: Mapping[str, str]) -> Identity:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "SERVER_NAME": "tether",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": io.StringIO(),
        }
        for name, value in headers.items():
            environ["HTTP_" + name.upper().replace("-", "_")] = value
        statuses: list[str] = []
        try:
            for _chunk in self._middleware(environ, lambda status, *_: statuses.append(status)):
                pass
        except Exception as exc:  # keystoneauth raises many kinds
            LOG.error("validating a token with Keystone failed: %s", exc)
            raise ServiceUnavailable(
                reason="the token could not be validated with Keystone; retry in a moment",
                retry_after=5,
            ) from exc
        project, roles = environ.get("tether.identity", (None, ""))
        if not project:
            status = statuses[0] if statuses else "no answer"
            raise Unauthorized(
                reason=f"Keystone did not confirm the token ({status}); send a valid project-scoped "
                "token in X-Auth-Token"
            )
        return check_identity(project, parse_roles(roles))

    def reload(self) -> None:
        pass
