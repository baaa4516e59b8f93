"""How tasks are retried and how long they may wait: ``[plugin]`` options."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from oslo_config import cfg
from sqlalchemy import orm

from tether.common import backoff
from tether.plugin.db.models import Task

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "max_attempts",
        default=3,
        min=1,
        help="Claims of one task by agents before it fails for good: a retryable driver "
        "error, a driver timeout or the death of the agent running it each use one.",
    ),
    cfg.FloatOpt(
        "retry_backoff",
        default=2.0,
        min=0,
        help="Seconds before the first retry; doubled "
        "for each further attempt, with up to 50% random jitter.",
    ),
    cfg.FloatOpt("retry_backoff_max", default=60.0, min=0, help="Longest wait before a retry, in seconds."),
    cfg.FloatOpt(
        "pending_timeout",
        default=300.0,
        min=1,
        help="Seconds a published task may wait unclaimed before the reaper looks at it: "
        "it fails the task when no live agent serves its provider, waits on while its work "
        "queue still holds messages, and publishes it again when the queue has drained. "
        "Raise it where agents may be away longer and work should wait for them.",
    ),
    cfg.FloatOpt(
        "result_grace",
        default=30.0,
        min=0,
        help="Seconds beyond an agent's driver_timeout that the plugin waits for the result "
        "of a claimed task before the reaper retries or fails it.",
    ),
]


@dataclasses.dataclass(frozen=True)
class Policy:
    max_attempts: int = 3
    retry_backoff: float = 2.0
    retry_backoff_max: float = 60.0
    pending_timeout: float = 300.0
    result_grace: float = 30.0
    #: the routing key of a task's work message (host placement); the provider when None
    router: Callable[[orm.Session, Task], str | None] | None = None

    @classmethod
    def from_conf(cls, conf: cfg.ConfigOpts) -> Policy:
        group = conf.plugin
        return cls(
            group.max_attempts,
            group.retry_backoff,
            group.retry_backoff_max,
            group.pending_timeout,
            group.result_grace,
        )

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt``."""
        return backoff.Backoff(self.retry_backoff, self.retry_backoff_max, jitter=0.5).delay(attempt)
