"""Who is calling: the API's authentication strategies.

``[api] auth_strategy`` picks one:

``noauth``
    The caller names its project and roles in ``X-Project-Id`` and
    ``X-Roles``. Anyone who can reach the API is anyone, so the plugin
    refuses to start with it unless the API listens on loopback.
``token``
    ``X-Auth-Token: <token>`` (or ``Authorization: Bearer <token>``) looked up
    in ``[api] token_file``, which holds only SHA-256 digests of the tokens
    with their project and roles; ``tether-manage token create`` writes it.
    The file is read again on SIGHUP.
``keystone``
    keystonemiddleware's ``auth_token`` validates the token against
    Keystone (``[keystone_authtoken]``) and supplies the project and roles;
    install the ``tether[keystone]`` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
import secrets
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml
from oslo_config import cfg

from tether.common.exceptions import ConfigError, InvalidInput, Unauthorized

LOG = logging.getLogger(__name__)

GROUP = "api"
OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "auth_strategy",
        default="noauth",
        choices=[
            ("noauth", "trust X-Project-Id and X-Roles; only allowed when the API binds to loopback"),
            ("token", "tokens from [api] token_file"),
            ("keystone", "Keystone tokens through keystonemiddleware (the tether[keystone] extra)"),
        ],
        help="How API callers are authenticated.",
    ),
    cfg.StrOpt(
        "token_file",
        help="YAML file of token digests with their project and roles, for "
        "auth_strategy = token; `tether-manage token create` adds to it. "
        "Read again on SIGHUP.",
    ),
]

ROLES = ("reader", "member", "admin")
TOKEN_PREFIX = "tether_"
MAX_PROJECT_ID = 255
_NOAUTH_DEFAULT_PROJECT = "default"


@dataclasses.dataclass(frozen=True)
class Identity:
    project_id: str
    roles: frozenset[str]


class Authenticator(Protocol):
    #: identify() may wait on the network, so the API calls it in a worker thread
    blocking: bool

    def identify(self, headers: Mapping[str, str]) -> Identity:
        """The verified caller; raises Unauthorized or InvalidInput."""

    def reload(self) -> None:
        """Read credentials again (SIGHUP)."""


def from_conf(conf: cfg.ConfigOpts) -> Authenticator:
    strategy = conf.api.auth_strategy
    if strategy == "noauth":
        if not _is_loopback(conf.api.bind_host):
            raise ConfigError(
                reason=f"[api] auth_strategy = noauth lets any caller act as any project, so it is "
                f"only allowed when [api] bind_host is a loopback address (it is {conf.api.bind_host}); "
                "set auth_strategy = token with a token_file, or keystone."
            )
        return NoAuth()
    if strategy == "token":
        if not conf.api.token_file:
            raise ConfigError(
                reason="[api] auth_strategy = token needs [api] token_file; create one with "
                "`tether-manage token create --project <project> --role member`."
            )
        return TokenFile(Path(conf.api.token_file).expanduser())
    from tether.plugin.api import keystone  # the optional extra; imported only when chosen

    return keystone.Keystone(conf)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_identity(project_id: str, roles: frozenset[str]) -> Identity:
    if not project_id or len(project_id) > MAX_PROJECT_ID or not project_id.isprintable():
        raise InvalidInput(f"The project id must be 1 to {MAX_PROJECT_ID} printable characters.")
    return Identity(project_id, roles)


def parse_roles(value: str) -> frozenset[str]:
    return frozenset(r.strip().lower() for r in value.split(",") if r.strip())


class NoAuth:
    blocking = False

    def identify(self, headers: Mapping[str, str]) -> Identity:
        project = headers.get("X-Project-Id") or _NOAUTH_DEFAULT_PROJECT
        return check_identity(project, parse_roles(headers.get("X-Roles", "member")))

    def reload(self) -> None:
        pass


def token_digest(token: str) -> str:
    # Tokens are 256-bit random strings, so a plain hash is as strong as a
    # slow one and keeps lookups cheap on every request.
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(headers: Mapping[str, str]) -> str | None:
    token = headers.get("X-Auth-Token")
    if token:
        return token
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


class TokenFile:
    """Tokens from a YAML file of digests::

    tokens:
      - name: ci-pipeline
        sha256: 1f2e...
        project: acme
        roles: [member]
    """

    blocking = False

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._tokens = read_token_file(path)
        LOG.info("%d API tokens read from %s", len(self._tokens), path)

    def identify(self, headers: Mapping[str, str]) -> Identity:
        token = bearer_token(headers)
        if token is None:
            raise Unauthorized(reason="this API needs a token in X-Auth-Token or Authorization: Bearer")
        identity = self._tokens.get(token_digest(token))
        if identity is None:
            raise Unauthorized(reason="the token is not known here; ask the operator for a valid one")
        return identity

    def reload(self) -> None:
        try:
            tokens = read_token_file(self.path)
        except ConfigError as exc:
            LOG.error("kept the %d tokens already loaded: %s", len(self._tokens), exc.msg)
            return
        with self._lock:
            self._tokens = tokens
        LOG.info("%d API tokens read again from %s", len(tokens), self.path)


def read_token_file(path: Path) -> dict[str, Identity]:
    def refuse(problem: str) -> ConfigError:
        return ConfigError(reason=f"token file {path}: {problem}")

    try:
        document = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise refuse(f"cannot be read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise refuse(f"is not valid YAML: {exc}") from exc
    entries = document.get("tokens") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise refuse("must be a mapping with a list under 'tokens'")
    tokens: dict[str, Identity] = {}
    for n, entry in enumerate(entries, 1):
        where = f"entry {n}"
        if not isinstance(entry, dict):
            raise refuse(f"{where} must be a mapping of sha256, project and roles")
        digest, project, roles = entry.get("sha256"), entry.get("project"), entry.get("roles")
        if not isinstance(digest, str) or len(digest) != 64 or not _is_hex(digest):
            raise refuse(f"{where} needs sha256: the 64 hex digits of the token's SHA-256")
        if not isinstance(project, str) or not project:
            raise refuse(f"{where} needs a project")
        if not isinstance(roles, list) or not roles or not set(roles) <= set(ROLES):
            raise refuse(f"{where} needs roles, a list of {', '.join(ROLES)}")
        tokens[digest.lower()] = check_identity(project, frozenset(roles))
    return tokens


def _is_hex(value: str) -> bool:
    try:
        int(value, 16)
    except ValueError:
        return False
    return True


def add_token(path: Path, project: str, roles: list[str], name: str | None = None) -> str:
    """Create a token, record its digest in ``path``; the token itself is
    returned once and stored nowhere."""
    bad = sorted(set(roles) - set(ROLES))
    if bad or not roles:
        raise ConfigError(reason=f"roles must be among {', '.join(ROLES)}; got {', '.join(roles) or 'none'}")
    check_identity(project, frozenset(roles))
    document: dict[str, Any] = {"tokens": []}
    if path.exists():
        read_token_file(path)  # refuse to append to a file the plugin would refuse
        document = yaml.safe_load(path.read_text()) or document
    # The prefix lets secret scanners recognise a leaked token.
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    entry = {"name": name, "sha256": token_digest(token), "project": project, "roles": sorted(roles)}
    document["tokens"].append({k: v for k, v in entry.items() if v is not None})
    _write(path, document)
    return token


def list_tokens(path: Path) -> list[tuple[str | None, str, list[str]]]:
    read_token_file(path)
    entries = yaml.safe_load(path.read_text())["tokens"]
    return [(e.get("name"), e["project"], e["roles"]) for e in entries]


def revoke_token(path: Path, name: str) -> int:
    document = yaml.safe_load(path.read_text()) if path.exists() else None
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise ConfigError(reason=f"token file {path} holds no tokens")
    kept = [e for e in document["tokens"] if not (isinstance(e, dict) and e.get("name") == name)]
    removed = len(document["tokens"]) - len(kept)
    document["tokens"] = kept
    _write(path, document)
    return removed


def _write(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # Digests are not secrets, but who may act as whom is nobody else's
    # business; replaced whole so a SIGHUP never reads half a file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(document, out, sort_keys=False)
    os.replace(tmp, path)
