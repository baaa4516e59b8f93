"""Live pages: server-sent events when something a page shows may have changed.

Nothing polls. Two things wake the open pages of an API process:

* a commit of this process's own writes (an accepted change, a cancel, an
  agent disabled: the ``after_commit`` hook of its sessionmaker);
* a task finished anywhere: :class:`~tether.plugin.api.waiters.Waiters` hears
  of it from this process's commits, from the pipeline process over the
  link, and from other replicas by PostgreSQL ``NOTIFY``, and tells its
  observers.

Each open page holds one stream and one flag; a wake-up sets every
stream's flag and the stream sends one ``changed`` event, upon which the
page fetches itself again. Wake-ups that arrive while a stream waits to
send coalesce into its next event, and a stream sends at most one event
per :attr:`LiveEvents.min_interval`, so a burst of commits costs each page
a few reads and a slow client holds one flag, never a queue: a stream
whose client does not read waits in its ``send``, and memory stays flat.
The number of streams per process is bounded; past it the console answers
503 and the page's EventSource tries again later.

A stream's first event is sent at once: the page was rendered before it
connected, and after a plugin restart it reconnects (EventSource does, and
htmx's extension backs off while the plugin is away) to a process that
knows nothing of what changed meanwhile. Streams end when the process is
asked to stop (:meth:`LiveEvents.close`, called by the plugin's server), so
that they do not hold up its graceful shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator

from sqlalchemy import orm

from tether.common.exceptions import ServiceUnavailable
from tether.plugin.api.waiters import Waiters
from tether.plugin.db.session import after_commit

LOG = logging.getLogger(__name__)


class LiveEvents:
    def __init__(self, max_streams: int = 64, min_interval: float = 0.5, keepalive: float = 15.0) -> None:
        self.max_streams = max_streams
        self.min_interval = min_interval
        self.keepalive = keepalive
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._streams: set[asyncio.Event] = set()
        self._scheduled = False
        self._closing = False
        #: events sent, all streams together (for tests and curiosity)
        self.sent = 0

    def install(self, sessionmaker: orm.sessionmaker[orm.Session], waiters: Waiters) -> None:
        after_commit(sessionmaker, (), lambda _session: self.changed())
        waiters.observers.append(self.changed)

    @property
    def streams(self) -> int:
        return len(self._streams)

    def changed(self) -> None:
        """Something may have changed; from any thread, cheap when no page is open."""
        loop = self._loop
        if loop is None or not self._streams:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the loop has closed: no stream is left to tell
            self._scheduled = False

    def _wake(self) -> None:
        with self._lock:
            self._scheduled = False
        for flag in self._streams:
            flag.set()

    def close(self) -> None:
        """End every stream (the process is stopping); from any thread."""
        self._closing = True
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._wake)
            except RuntimeError:
                pass

    async def stream(self) -> AsyncIterator[str]:
        """One page's events, as the text of a ``text/event-stream``."""
        if len(self._streams) >= self.max_streams:
            raise ServiceUnavailable(
                reason=f"the console already serves {self.max_streams} live pages from this process; "
                "close some, or reload later",
                retry_after=10,
            )
        self._loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        flag.set()
        self._streams.add(flag)
        return self._events(flag)

    async def _events(self, flag: asyncio.Event) -> AsyncIterator[str]:
        try:
            # How long EventSource waits before it reconnects, in ms.
            yield "retry: 1000\n\n"
            while not self._closing:
                try:
                    await asyncio.wait_for(flag.wait(), self.keepalive)
                except TimeoutError:
                    # A comment keeps proxies from closing an idle stream.
                    yield ": still here\n\n"
                    continue
                if self._closing:
                    break
                flag.clear()
                self.sent += 1
                yield "event: changed\ndata: \n\n"
                await asyncio.sleep(self.min_interval)
        finally:
            self._streams.discard(flag)
