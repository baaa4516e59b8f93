"""The connection thread: one broker connection, and everything done on it.

kombu channels are not thread-safe, and a connection whose thread blocks
stops answering heartbeats (the broker then hands its unacked messages to
someone else while the work still runs). So each connection belongs to one
:class:`ConnectionLoop` thread that does all consuming, publishing and
acking; slow work runs elsewhere and hands results back through a queue.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from typing import Any

import kombu
import kombu.exceptions

from tether.common import backoff
from tether.common.exceptions import PublishNotConfirmed
from tether.common.transport import Broker

LOG = logging.getLogger(__name__)


class ConnectionLoop:
    """A thread that owns one broker connection and everything done on it.

    Subclasses declare and consume in :meth:`on_connect`, do their periodic
    work in :meth:`on_tick`, and forget per-connection state (unacked messages
    cannot be acked on a new connection) in :meth:`on_disconnect`. The loop
    reconnects with capped, jittered backoff until stopped.
    """

    #: Longest time a tick waits for broker events.
    tick: float = 0.05
    #: Most broker events taken in one tick: after the first, those already
    #: arrived, so the tick's work (a commit, a publish) serves them together.
    burst: int = 1

    def __init__(self, broker: Broker, name: str) -> None:
        self.broker = broker
        self.name = name
        self.stopping = threading.Event()
        self.connected = threading.Event()
        #: ``time.monotonic()`` of the connection now up; None while there is none
        self.connected_since: float | None = None
        self._thread: threading.Thread | None = None
        # wake() writes a byte to one end; wait() watches the other beside
        # the broker's socket. Open while the loop's thread runs.
        self._wakers: tuple[socket.socket, socket.socket] | None = None

    def wake(self) -> None:
        """Run the tick now, not when the wait for broker events ends: work
        handed over from another thread (a result, a claim) goes out at once."""
        wakers = self._wakers
        # Full: a wake-up is pending already; closed: the loop has ended.
        with contextlib.suppress(BlockingIOError, OSError):
            if wakers is not None:
                wakers[1].send(b"\0")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        wakers = socket.socketpair()
        for end in wakers:
            end.setblocking(False)
        self._wakers = wakers
        try:
            self._run()
        finally:
            self._wakers = None
            for end in wakers:
                end.close()

    def _run(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            connection = self.broker.connect()
            try:
                connection.ensure_connection(max_retries=1)
                self.on_connect(connection)
                self.connected_since = time.monotonic()
                self.connected.set()
                if failures:
                    LOG.info("%s: connected to %s again", self.name, self.broker.url.masked)
                failures = 0
                while not self.stopping.is_set():
                    self.wait(connection)
                    if self.broker.heartbeat and not self.broker.url.in_memory:
                        connection.heartbeat_check()
                    self.on_tick(connection)
                self.on_stop(connection)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one failure
                self.connected.clear()
                self.connected_since = None
                self.on_disconnect()
                failures += 1
                delay = backoff.RECONNECT.delay(failures)
                recoverable = isinstance(
                    exc,
                    (
                        *connection.recoverable_connection_errors,
                        *connection.connection_errors,
                        # what ensure_connection makes of a refused or reset connection
                        kombu.exceptions.OperationalError,
                        OSError,
                        PublishNotConfirmed,
                    ),
                )
                # Retrying cannot cure a refused certificate, but the broker's
                # may be replaced: keep trying, and say loudly what to fix.
                explained = self.broker.explain(exc)
                log = LOG.error if explained else LOG.warning if recoverable else LOG.exception
                log(
                    "%s: %s; reconnecting to %s in %.1f s",
                    self.name,
                    explained or exc or type(exc).__name__,
                    self.broker.url.masked,
                    delay,
                )
                self.stopping.wait(delay)
            finally:
                try:
                    connection.release()
                except Exception:
                    LOG.debug("%s: releasing the connection failed", self.name, exc_info=True)

    def wait(self, connection: kombu.Connection) -> None:
        """Take broker events until the tick ends, a burst is taken, the
        broker's ``batch_wait`` from the first has passed, or :meth:`wake`."""
        sock = _socket(connection)
        if sock is None:
            # The in-memory transport polls; it has no socket to watch.
            try:
                connection.drain_events(timeout=self.tick)
                until = time.monotonic() + self.broker.batch_wait
                for _ in range(self.burst - 1):
                    connection.drain_events(timeout=max(0.0, until - time.monotonic()))
            except TimeoutError:
                pass
            return
        if not _buffered(sock):
            waker = self._wakers[0] if self._wakers else None
            ready, _, _ = select.select([sock] if waker is None else [sock, waker], [], [], self.tick)
            if waker is not None and waker in ready:
                with contextlib.suppress(BlockingIOError):
                    waker.recv(4096)
            if sock not in ready:
                return
        try:
            # What has arrived, and what arrives within the batch wait of the
            # first: a lone message would cost a wake-up, a transaction and
            # an ack of its own, and a second one is often a millisecond away.
            until = time.monotonic() + self.broker.batch_wait
            for taken in range(1, self.burst + 1):
                connection.drain_events(timeout=self.tick)
                if taken == self.burst or (
                    not _buffered(sock)
                    and not select.select([sock], [], [], max(0.0, until - time.monotonic()))[0]
                ):
                    break
        except TimeoutError:
            pass

    def take_arrived(self, connection: kombu.Connection) -> bool:
        """Take the broker events that have arrived, up to a burst, without
        waiting for more: for a tick whose work has waited (for a database's
        write turn) while they came, so that they share it.

        Whether the connection could be read: a failing one is left for the
        tick's next use of it to meet, since this runs inside that work.
        """
        sock = _socket(connection)
        try:
            for _ in range(self.burst):
                if sock is None:
                    # The in-memory transport: a zero timeout takes only what is there.
                    connection.drain_events(timeout=0)
                    continue
                if not _buffered(sock) and not select.select([sock], [], [], 0)[0]:
                    break
                connection.drain_events(timeout=self.tick)
        except TimeoutError:
            pass
        except Exception as exc:  # noqa: BLE001 - met again by the tick's publish or ack
            LOG.debug("%s: reading what arrived failed: %r", self.name, exc)
            return False
        return True

    def on_connect(self, connection: kombu.Connection) -> None:
        """Declare queues, start consumers."""

    def on_tick(self, connection: kombu.Connection) -> None:
        """Periodic work on the connection's thread."""

    def on_stop(self, connection: kombu.Connection) -> None:
        """Finish what can be finished before the connection closes."""

    def on_disconnect(self) -> None:
        """Forget state bound to the lost connection."""


def _socket(connection: kombu.Connection) -> Any:
    """The broker connection's socket; None on the in-memory transport."""
    transport = getattr(connection.connection, "transport", None)
    return getattr(transport, "sock", None)


def _buffered(sock: Any) -> bool:
    """Bytes TLS decrypted already, which no select() would report."""
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())
