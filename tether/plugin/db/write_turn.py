"""SQLite's one write turn: taken in order, held briefly, synced after.

SQLite admits one writer at a time and makes the others wait in its busy
handler, which sleeps 1, 2, 5, 10... ms between looks: under concurrent
writers most of their time went to sleeping after the lock was free. So a
writer takes the turn before ``BEGIN IMMEDIATE``, first among this process's
threads (a Python lock) and then among processes (:class:`FileTurn`, a
``flock`` beside the database), and it passes to the next writer as soon as
the last one commits.

Every writer of the deployment waits for the one that holds the turn, so a
holder that waits for anything else makes them all wait:

- **for the disk.** SQLite's ``synchronous=FULL`` syncs the write-ahead log
  inside the commit: at half load a quarter of each turn went to it. Writers
  run ``synchronous=NORMAL`` and sync the log themselves (:func:`sync_log`)
  once they have handed the turn on, before the commit returns: before a
  ``202``, a claim's answer or a result's ack. The log is appended to in
  order, so one sync makes every commit before it durable too.
- **for a core.** On a machine whose cores the API, the pipeline, agents and
  the broker share, a holder spent as long waiting to be scheduled as
  running (measured at 500 tasks/s on two cores: 1.5-2.6 ms of its 2.6-5.4
  ms). So it runs at the lowest real-time priority while it holds the turn
  (:class:`TurnPriority`), and at its own again before it syncs. At most one
  thread of a database is raised at a time, for one transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time

LOG = logging.getLogger(__name__)


def connection_class(
    busy_timeout: float, across: FileTurn | None, log_path: str | None, priority: TurnPriority
) -> type[sqlite3.Connection]:
    """A connection class whose write transactions take turns, hold them
    at ``priority``, and sync the write-ahead log at ``log_path`` once
    they have committed and handed the turn on."""
    turn = threading.Lock()

    class Connection(sqlite3.Connection):
        _has_turn = False
        _raised: int | None = None

        def take_write_turn(self) -> None:
            # Bounded like SQLite's own wait, and failing as it does.
            deadline = time.monotonic() + busy_timeout
            if not turn.acquire(timeout=busy_timeout):
                raise sqlite3.OperationalError("database is locked")
            if across is not None and not across.acquire(max(deadline - time.monotonic(), 0.0)):
                turn.release()
                raise sqlite3.OperationalError("database is locked")
            self._has_turn = True
            self._raised = priority.raise_()

        def end_write_turn(self) -> None:
            if self._has_turn:
                self._has_turn = False
                if across is not None:
                    across.release()
                turn.release()
                if self._raised is not None:
                    priority.lower(self._raised)
                    self._raised = None

        def commit(self) -> None:
            writing = self._has_turn
            try:
                super().commit()
            finally:
                self.end_write_turn()
            # Every write transaction, as no change count shows DDL; with
            # nothing new in the log the sync costs a system call.
            if writing and log_path is not None:
                sync_log(log_path)

        def rollback(self) -> None:
            try:
                super().rollback()
            finally:
                self.end_write_turn()

        def close(self) -> None:
            try:
                super().close()
            finally:
                self.end_write_turn()

    return Connection


class TurnPriority:
    """Real-time scheduling (``SCHED_RR``, priority 1) for the thread that
    holds the write turn, so that ordinary threads (agents, the broker, the
    API's event loop) do not take its core while every writer waits for it.

    Raising needs ``CAP_SYS_NICE`` or an ``RLIMIT_RTPRIO`` of at least 1
    (systemd's ``LimitRTPRIO=1``); without either the first attempt logs
    how to grant it and the turn is held at ordinary priority from then on.
    A process already under another scheduling policy is left as it is. The
    kernel's real-time throttling (``kernel.sched_rt_runtime_us``) still
    bounds what a long transaction could take.
    """

    def __init__(self, enabled: bool) -> None:
        self._enabled = (
            enabled and hasattr(os, "sched_setscheduler") and os.sched_getscheduler(0) == os.SCHED_OTHER
        )

    @property
    def enabled(self) -> bool:
        return self._enabled

    def raise_(self) -> int | None:
        """Raise the calling thread; its id, to :meth:`lower` it by, or
        ``None`` when it was not raised."""
        if not self._enabled:
            return None
        try:
            # Not inherited: a process forked meanwhile starts ordinary.
            os.sched_setscheduler(0, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(1))
        except OSError as exc:
            self._enabled = False
            LOG.warning(
                "cannot raise the priority of SQLite's write turn (%s): writers will wait longer for "
                "it on a busy machine. Grant the daemon CAP_SYS_NICE or LimitRTPRIO=1 (systemd), or "
                "set [database] write_turn_realtime = false to stop trying",
                exc.strerror or exc,
            )
            return None
        return threading.get_native_id()

    def lower(self, thread_id: int) -> None:
        """Back to ordinary scheduling; by thread id, so that a turn ended on
        another thread (a connection closed by its pool) lowers the right one."""
        try:
            os.sched_setscheduler(thread_id, os.SCHED_OTHER, os.sched_param(0))
        except ProcessLookupError:
            pass  # the thread has ended


def sync_log(path: str) -> None:
    """Make what has been written to the write-ahead log at ``path`` durable.

    The file is opened anew each time: SQLite deletes the log when the last
    connection closes, and a descriptor kept open would sync the deleted one.
    A log that is gone was checkpointed into the database first, and a
    checkpoint syncs the database.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


class FileTurn:
    """An exclusive ``flock`` on ``path``, taken with a timeout.

    The lock belongs to this process (its open file), so the thread that
    takes it need not be the one that blocks for it: a free lock is taken at
    once; a held one is waited for by a helper thread, blocked in the kernel
    until the holder lets go (no polling), while the caller waits at most
    its timeout. A turn the helper gets for a caller that gave up is handed
    to the next caller, or let go at once if there is none. The kernel
    releases the lock of a process that dies holding it.

    Callers take turns among themselves first (one at a time per process).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._cond = threading.Condition()
        self._held = False
        self._callers = 0
        self._fetching = False
        self._helper: threading.Thread | None = None

    def acquire(self, timeout: float) -> bool:
        with self._cond:
            if not self._fetching:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self._fetching = True
                    if self._helper is None:
                        self._helper = threading.Thread(
                            target=self._fetch, name="sqlite-write-turn", daemon=True
                        )
                        self._helper.start()
                    self._cond.notify_all()
                else:
                    self._held = True
                    return True
            self._callers += 1
            try:
                return self._cond.wait_for(lambda: self._held, timeout)
            finally:
                self._callers -= 1

    def release(self) -> None:
        with self._cond:
            self._held = False
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _fetch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._fetching)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            with self._cond:
                self._fetching = False
                if self._callers:
                    self._held = True
                    self._cond.notify_all()
                else:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
