"""SQLite's one write turn: taken in order, held briefly, synced after.

SQLite admits one writer at a time and makes the others wait in its busy
handler, which sleeps 1, 2, 5, 10... ms between looks: under concurrent
writers most of their time went to sleeping after the lock was free. So a
writer takes the turn before ``BEGIN IMMEDIATE``, first among this process's
threads (a Python lock) and then among processes (:class:`FileTurn`, a
``flock`` beside the database), and it passes to the next writer as soon as
the last one commits.

Every writer of the deployment waits for the one that holds the turn, so
the holder must not wait for anything else, the disk included. SQLite's
``synchronous=FULL`` syncs the write-ahead log inside the commit: at half
load a quarter of each turn went to it. Writers run ``synchronous=NORMAL``
and sync the log themselves (:func:`sync_log`) once they have handed the
turn on, before the commit returns: before a ``202``, a claim's answer or a
result's ack. The log is appended to in order, so one sync makes every
commit before it durable too.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time


def connection_class(
    busy_timeout: float, across: FileTurn | None, log_path: str | None
) -> type[sqlite3.Connection]:
    """A connection class whose write transactions take turns, and sync the
    write-ahead log at ``log_path`` once they have committed and handed the
    turn on."""
    turn = threading.Lock()

    class Connection(sqlite3.Connection):
        _has_turn = False

        def take_write_turn(self) -> None:
            # Bounded like SQLite's own wait, and failing as it does.
            deadline = time.monotonic() + busy_timeout
            if not turn.acquire(timeout=busy_timeout):
                raise sqlite3.OperationalError("database is locked")
            if across is not None and not across.acquire(max(deadline - time.monotonic(), 0.0)):
                turn.release()
                raise sqlite3.OperationalError("database is locked")
            self._has_turn = True

        def end_write_turn(self) -> None:
            if self._has_turn:
                self._has_turn = False
                if across is not None:
                    across.release()
                turn.release()

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
