"""Callbacks: the finished task POSTed to the URL its request named.

A request may carry ``Callback-URL: https://...``. When its task reaches a
terminal state, a delivery row is written in the same transaction, so it
survives restarts; a deliverer thread POSTs the task as JSON and retries
with backoff until the receiver answers 2xx or ``[callbacks] max_attempts``
is spent. Each POST is signed:

``X-Tether-Timestamp``
    seconds since the epoch when it was sent;
``X-Tether-Signature``
    ``sha256=`` + the hex HMAC-SHA256, keyed with ``[callbacks] secret``, of
    ``<timestamp>.<body>``.

A receiver recomputes the HMAC and refuses old timestamps against replay
(docs/operating.md has a snippet). The URL's host must resolve to public
addresses only, checked when it is accepted and at every delivery
(:mod:`tether.plugin.outbound.egress`); redirects are not followed; the answer is
read up to 64 KiB.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import http.client
import json
import logging
import time
import urllib.parse
from typing import Any

import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import orm

from tether.common import backoff, metrics
from tether.common.exceptions import ConfigError, InvalidInput
from tether.common.periodic import Periodic
from tether.plugin.db.exceptions import DatabaseError
from tether.plugin.db.models import Callback, Task, utcnow
from tether.plugin.outbound import egress

LOG = logging.getLogger(__name__)

GROUP = "callbacks"
OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "secret",
        secret=True,
        help="Key of the HMAC-SHA256 signature of every callback; callbacks "
        "are refused (400) until it is set.",
    ),
    cfg.IntOpt("max_attempts", default=8, min=1, help="Deliveries of one callback before it is given up."),
    cfg.FloatOpt("timeout", default=10.0, min=0.1, help="Seconds a receiver has to answer."),
    cfg.FloatOpt("interval", default=1.0, min=0.05, help="Seconds between looks for callbacks that are due."),
    cfg.ListOpt(
        "allowed_schemes", default=["https"], help="URL schemes a callback may use (add http to allow it)."
    ),
    cfg.ListOpt(
        "allowed_networks",
        default=[],
        help="Networks (CIDR) a callback may reach although they are not public: "
        "loopback, private, link-local and reserved addresses are refused otherwise.",
    ),
]

HEADER = "Callback-URL"
_REFUSED = "refused"


def check_url(conf: cfg.ConfigOpts, url: str) -> str:
    """Refuse what can never be delivered; the reason names the fix."""
    if not conf.callbacks.secret:
        raise InvalidInput(f"{HEADER} is not accepted: this tether has no [callbacks] secret to sign with.")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(f"{HEADER} is not a valid URL: {exc}.") from exc
    if parts.scheme not in conf.callbacks.allowed_schemes or not parts.hostname or len(url) > 2048:
        raise InvalidInput(
            f"{HEADER} must be an absolute URL of scheme {' or '.join(conf.callbacks.allowed_schemes)} "
            "of at most 2048 characters."
        )
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            f"{HEADER} must not carry credentials; callbacks are signed, verify X-Tether-Signature instead."
        )
    try:
        egress.resolve(
            parts.hostname,
            port or (443 if parts.scheme == "https" else 80),
            allowed_networks(conf),
        )
    except egress.Refused as exc:
        raise InvalidInput(f"{HEADER} {egress.describe(url)} is refused: {exc}.") from exc
    return url


def allowed_networks(conf: cfg.ConfigOpts) -> list[egress.Network]:
    try:
        return egress.parse_networks(conf.callbacks.allowed_networks)
    except ValueError as exc:
        raise ConfigError(reason=f"[callbacks] allowed_networks: {exc}") from exc


def sign(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def schedule(session: orm.Session, task: Task) -> None:
    """In the transaction that finishes ``task``: remember to call back."""
    if task.callback_url:
        session.add(Callback(task_id=task.id, url=task.callback_url, state="PENDING"))


class Deliverer(Periodic):
    """The thread that POSTs due callbacks."""

    name = "callbacks"
    outages = (DatabaseError,)

    def __init__(
        self, conf: cfg.ConfigOpts, sessionmaker: orm.sessionmaker[orm.Session], render: Any
    ) -> None:
        super().__init__(conf.callbacks.interval)
        self.conf = conf.callbacks
        self.sessionmaker = sessionmaker
        self.render = render
        self.allowed = allowed_networks(conf)

    def tick(self) -> int:
        return self.deliver_due()

    def deliver_due(self) -> int:
        with self.sessionmaker.begin() as session:
            due = session.scalars(
                sa.select(Callback)
                .where(Callback.state == "PENDING", Callback.next_attempt_at <= utcnow())
                .limit(50)
                .with_for_update(skip_locked=True)
            ).all()
            for callback in due:
                task = session.get(Task, callback.task_id)
                error = self._post(callback.url, self.render(session, task)) if task else "the task is gone"
                callback.attempts += 1
                if error is None:
                    callback.state, callback.delivered_at, callback.last_error = "DELIVERED", utcnow(), None
                    continue
                callback.last_error = error
                final = callback.attempts >= self.conf.max_attempts or error.startswith(_REFUSED)
                metrics.CALLBACK_FAILURES.labels("true" if final else "false").inc()
                if final:
                    callback.state = "FAILED"
                    LOG.warning(
                        "callback of task %s to %s given up after %d attempts: %s",
                        callback.task_id,
                        egress.describe(callback.url),
                        callback.attempts,
                        error,
                    )
                else:
                    delay = backoff.CALLBACK.delay(callback.attempts)
                    callback.next_attempt_at = utcnow() + datetime.timedelta(seconds=delay)
            return len(due)

    def _post(self, url: str, payload: dict[str, Any]) -> str | None:
        body = json.dumps(payload).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tether-callbacks",
            "X-Tether-Timestamp": timestamp,
            "X-Tether-Signature": sign(self.conf.secret or "", timestamp, body),
        }
        try:
            status = egress.post(url, body, headers, timeout=self.conf.timeout, allowed=self.allowed)
        except egress.Refused as exc:
            return f"{_REFUSED}: {exc}"
        except (OSError, http.client.HTTPException) as exc:
            return f"the receiver could not be reached: {exc or type(exc).__name__}"
        if 200 <= status < 300:
            return None
        if 300 <= status < 400:
            return f"the receiver answered {status}; redirects are not followed"
        return f"the receiver answered {status}"
