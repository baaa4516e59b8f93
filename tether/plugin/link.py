"""What a plugin's API process and its pipeline process tell each other.

``tether-plugin`` runs its API in one process and its pipeline (outbox
relay, claim server, result consumer, RPC server, reaper, callbacks) in
another, so that both use a core (:mod:`tether.plugin.processes`). The
database is all they share; what one must hear from the other at once
travels on a pair of connected UNIX datagram sockets their parent made:

* API → pipeline, :data:`RELAY`: an accept committed rows to the outbox; the
  relay publishes them now instead of at its next ``relay_interval``;
  :data:`HANDOFF` does the same carrying the rows (:mod:`tether.plugin.tasks.handoff`);
* pipeline → API, :data:`FINISHED`: ids of tasks it finished, to answer
  ``?wait`` requests at once (on PostgreSQL NOTIFY carries them instead, as
  between replicas), and :data:`LOST` when some could not be sent;
* pipeline → API, :data:`STATUS` every :data:`STATUS_INTERVAL`: whether its
  loops are connected to the broker and since when it has heard agents'
  reports, for ``/readyz`` and for judging agents alive.

A send never waits: a full socket drops a wake-up (the relay's interval
and a waiter's re-read make up for it) rather than stall a commit.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tether.plugin.db.models import Row
from tether.plugin.tasks import handoff

LOG = logging.getLogger(__name__)

RELAY = b"r"
HANDOFF = b"o"
FINISHED = b"f"
LOST = b"*"
STATUS = b"s"

#: seconds between the pipeline's status messages
STATUS_INTERVAL = 0.5
#: a pipeline silent this long is taken to be stuck or gone
STATUS_STALE = 3.0
# Task ids are 36 characters: 200 of them make a datagram of about 7 KB.
_IDS_PER_DATAGRAM = 200

Handler = Callable[[bytes], None]


class Link:
    """One end of the pair; ``handlers`` says what each kind of message does here."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.name = name
        self._lost = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def send(self, kind: bytes, body: bytes = b"") -> bool:
        """Send one message if the socket has room; whether it was sent."""
        if self._lost and kind != LOST and self.send(LOST):
            self._lost = False
        try:
            self.sock.send(kind + body)
        except (BlockingIOError, ConnectionRefusedError):
            # A dropped list of finished tasks leaves waiters asleep: say so
            # when there is room again.
            self._lost = self._lost or kind == FINISHED
            return False
        except OSError:
            return False  # the other process has gone; its parent stops this one
        return True

    def wake_relay(self) -> None:
        self.send(RELAY)

    def hand_over(self, rows: Sequence[Row]) -> None:
        """Committed outbox rows for the relay; those that find no room wait
        for its scan."""
        for datagram in handoff.encode(rows):
            self.send(HANDOFF, datagram)

    def send_finished(self, task_ids: Sequence[str]) -> None:
        for start in range(0, len(task_ids), _IDS_PER_DATAGRAM):
            self.send(FINISHED, ",".join(task_ids[start : start + _IDS_PER_DATAGRAM]).encode())

    def start(
        self, handlers: Mapping[bytes, Handler], every: tuple[float, Callable[[], None]] | None = None
    ) -> None:
        """Hear the other process in a thread of its own; run ``every[1]``
        every ``every[0]`` seconds from that thread too."""
        self._thread = threading.Thread(target=self._run, args=(handlers, every), name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(5)
        self.sock.close()

    def _run(self, handlers: Mapping[bytes, Handler], every: tuple[float, Callable[[], None]] | None) -> None:
        interval, periodic = every if every is not None else (1.0, None)
        due = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() >= due:
                due = time.monotonic() + interval
                if periodic is not None:
                    _guarded(periodic)
            readable, _, _ = select.select([self.sock], [], [], max(due - time.monotonic(), 0.0))
            if not readable:
                continue
            while True:
                try:
                    datagram = self.sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:
                    return
                if not datagram:
                    return
                handler = handlers.get(datagram[:1])
                if handler is None:
                    LOG.warning("%s: ignored a message of unknown kind %r", self.name, datagram[:1])
                    continue
                _guarded(handler, datagram[1:])


def _guarded(call: Callable[..., None], *args: Any) -> None:
    try:
        call(*args)
    except Exception:
        # The link must outlive a bug in one handler.
        LOG.exception("%s failed", getattr(call, "__qualname__", call))


class PipelineStatus:
    """The API process's view of its pipeline process, from its status messages."""

    def __init__(self) -> None:
        self._status: dict[str, Any] = {}
        self._heard: float | None = None
        self._started = time.monotonic()

    def heard(self, body: bytes) -> None:
        self._status = json.loads(body)
        self._heard = time.monotonic()

    def _fresh(self) -> dict[str, Any] | None:
        if self._heard is None or time.monotonic() - self._heard > STATUS_STALE:
            return None
        return self._status

    def problem(self) -> str | None:
        """What keeps the pipeline from doing its job, for ``/readyz``."""
        status = self._fresh()
        if status is None:
            if self._heard is None:
                waited = time.monotonic() - self._started
                return f"the pipeline process has not reported yet ({waited:.0f} s since this one started)"
            return f"the pipeline process has not reported for {time.monotonic() - self._heard:.0f} s"
        problem = status.get("problem")
        return None if problem is None else str(problem)

    def listening_since(self) -> float | None:
        """``time.monotonic()`` since when the pipeline hears agents' reports
        (one clock for every process of a machine); None while it does not."""
        status = self._fresh()
        if status is None:
            return None
        since = status.get("listening_since")
        return None if since is None else float(since)


def status(problem: str | None, listening_since: float | None) -> bytes:
    return json.dumps({"problem": problem, "listening_since": listening_since}).encode()
