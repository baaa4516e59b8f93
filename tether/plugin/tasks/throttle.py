"""Throttling and backpressure.

* **Rate limit** — a token bucket per project (``[api] rate_limit`` requests
  per second, ``rate_burst`` at once). A request that finds the bucket empty
  gets 429 with ``Retry-After`` saying when a token will be there. Buckets
  live in each plugin process: behind a load balancer of N plugins a
  project gets up to N times the rate.
* **Backpressure** — a change for a provider whose backlog (QUEUED + PENDING
  tasks) has reached ``[api] max_backlog`` gets 503 with ``Retry-After``:
  the agents are behind, and accepting more would only lengthen the wait.

Both are logged (once per second per project or provider) and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import time

from oslo_config import cfg
from sqlalchemy import orm

from tether.common import metrics
from tether.common.exceptions import TetherError
from tether.common.states import TaskState
from tether.plugin.db import agent_queries

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.FloatOpt(
        "rate_limit",
        default=0.0,
        min=0,
        help="Requests per second each project may make to this plugin process; 0 turns the "
        "limit off. Further requests get 429 with Retry-After.",
    ),
    cfg.IntOpt(
        "rate_burst", default=50, min=1, help="Requests a project may make at once before rate_limit applies."
    ),
    cfg.IntOpt(
        "max_backlog",
        default=10000,
        min=1,
        help="Tasks (QUEUED and PENDING) a provider may have waiting; further changes for it get "
        "503 with Retry-After until its agents catch up.",
    ),
]


class TooManyRequests(TetherError):
    message = "Project {project} is over its rate limit of {rate:g} requests/s; retry in {retry} s."
    status = 429


class Backlogged(TetherError):
    message = (
        "Provider {provider} has {backlog} tasks waiting (the limit is {limit}); its agents are "
        "behind. Retry in {retry} s."
    )
    status = 503


@dataclasses.dataclass
class _Bucket:
    tokens: float
    stamp: float
    #: requests refused since the project was last idle, for the log
    refused: int = 0


class RateLimiter:
    """Token buckets of the projects that asked lately.

    A bucket left alone refills; once it would be full it says no more than
    a new one would, so it is dropped. Buckets are kept in the order they
    were last used, and the idle ones are dropped from the front: memory is
    bounded by the projects active within ``burst / rate`` seconds, whatever
    the number of projects that ever asked.
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._last_log: dict[str, float] = {}

    def __len__(self) -> int:
        """Projects whose bucket is kept."""
        return len(self._buckets)

    def take(self, project: str) -> None:
        """Spend a token of ``project``'s bucket.

        :raises TooManyRequests: with the seconds until a token is there.
        """
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            self._forget_idle(now)
            bucket = self._buckets.get(project)
            if bucket is None:
                bucket = self._buckets[project] = _Bucket(self.burst, now)
            else:
                self._buckets.move_to_end(project)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return
            retry = max(1, math.ceil((1 - bucket.tokens) / self.rate))
            bucket.refused += 1
            refused = bucket.refused
            metrics.REFUSED.labels("rate_limit").inc()
        _log_once(
            self._last_log, project, "project %s over its rate limit (%d refused so far)", project, refused
        )
        raise TooManyRequests(project=project, rate=self.rate, retry=retry, retry_after=retry)

    def _forget_idle(self, now: float) -> None:
        # The front is the least recently used: stop at the first still refilling.
        while self._buckets:
            project, bucket = next(iter(self._buckets.items()))
            if bucket.tokens + (now - bucket.stamp) * self.rate < self.burst:
                return
            del self._buckets[project]
            self._last_log.pop(project, None)


class Backpressure:
    """Refuses changes for providers whose backlog is full."""

    #: seconds a provider's backlog count is reused, so a burst costs one query
    CACHE = 1.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cache: tuple[float, dict[tuple[str, str], int]] = (0.0, {})
        self._lock = threading.Lock()
        self.refused: collections.Counter[str] = collections.Counter()
        self._last_log: dict[str, float] = {}

    def check(self, session: orm.Session, provider: str) -> None:
        with self._lock:
            stamp, counts = self._cache
            if time.monotonic() - stamp > self.CACHE:
                counts = agent_queries.backlog(session)
                self._cache = (time.monotonic(), counts)
        backlog = counts.get((provider, TaskState.QUEUED), 0) + counts.get((provider, TaskState.PENDING), 0)
        if backlog < self.limit:
            return
        self.refused[provider] += 1
        metrics.REFUSED.labels("backlog").inc()
        _log_once(
            self._last_log,
            provider,
            "provider %s backlogged at %d tasks (%d refused so far)",
            provider,
            backlog,
            self.refused[provider],
        )
        retry = 5
        raise Backlogged(provider=provider, backlog=backlog, limit=self.limit, retry=retry, retry_after=retry)


def _log_once(last: dict[str, float], key: str, message: str, *args: object) -> None:
    now = time.monotonic()
    if now - last.get(key, 0.0) >= 1.0:
        last[key] = now
        LOG.warning(message, *args)
