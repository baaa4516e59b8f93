"""Idempotency keys: a retried request gets the first answer, not new work.

A client sends ``Idempotency-Key: <its own unique string>`` with a POST,
PUT or DELETE. The first request's answer is stored in the same transaction
as the change it made, so the two commit or vanish together. A request with
the same key, from the same project, for the same method, path and body,
within the retention window, gets that answer again (same resource, same
task) with ``Idempotent-Replayed: true``; the same key with a different
request is refused with 422. Only accepted changes are remembered: a request
refused with 4xx may be corrected and sent again under its key.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import orm

from tether.common.exceptions import InvalidInput, TetherError
from tether.plugin.db.models import IdempotencyKey, utcnow

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "idempotency_retention",
        default=86400,
        min=60,
        help="Seconds an Idempotency-Key and the answer it got are kept; a retry after that "
        "is a new request.",
    ),
]

HEADER = "Idempotency-Key"
MAX_KEY = 255


class KeyReused(TetherError):
    message = (
        "Idempotency-Key {key!r} was first used for {first}; a key stands for one request. "
        "Use a new key for a different request."
    )
    status = 422


class AnsweredMeanwhile(TetherError):
    """Another request with the same key committed while this one ran."""

    message = "Idempotency-Key {key!r} was answered meanwhile."
    status = 409


def fingerprint(method: str, path: str, body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY or not key.isprintable():
        raise InvalidInput(f"{HEADER} must be 1 to {MAX_KEY} printable characters.")
    return key


def lookup(
    session: orm.Session, project_id: str, key: str, print_: str, method: str, path: str
) -> IdempotencyKey | None:
    """The remembered answer for this key, if any.

    :raises KeyReused: the key was used for a different request.
    """
    row = session.get(IdempotencyKey, (project_id, key))
    if row is None or row.expires_at <= utcnow():
        return None
    if row.fingerprint != print_:
        first = row.response.get("_request", "another request") if isinstance(row.response, dict) else "?"
        raise KeyReused(key=key, first=first)
    return row


def remember(
    session: orm.Session,
    retention: float,
    project_id: str,
    key: str,
    print_: str,
    method: str,
    path: str,
    status: int,
    body: dict[str, Any],
    location: str | None,
) -> None:
    """Store the answer in the caller's transaction.

    A concurrent request with the same key makes this insert fail at commit
    (primary key), which rolls back its whole change: at most one does work.
    """
    existing = session.get(IdempotencyKey, (project_id, key))
    if existing is not None:
        if existing.expires_at > utcnow():
            # A concurrent request with this key committed first: undo ours.
            raise AnsweredMeanwhile(key=key)
        session.delete(existing)
        session.flush()
    now = utcnow()
    session.add(
        IdempotencyKey(
            project_id=project_id,
            key=key,
            fingerprint=print_,
            status=status,
            response=body | {"_request": f"{method} {path}"},
            location=location,
            created_at=now,
            expires_at=now + datetime.timedelta(seconds=retention),
        )
    )


def purge_expired(session: orm.Session) -> int:
    result = session.execute(sa.delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def stored_body(row: IdempotencyKey) -> dict[str, Any]:
    return {k: v for k, v in row.response.items() if k != "_request"}
