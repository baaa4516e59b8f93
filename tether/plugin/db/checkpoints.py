"""SQLite's WAL copied back into the database beside the writers, not by them.

In WAL mode SQLite copies the log back into the database file (a
checkpoint) when a commit leaves it longer than ``wal_autocheckpoint``
pages, 1,000 by default, and the commit that crosses the line does the copy
and its fsync while it still holds the write turn. Under load that was one
commit in ten or so, held 10-25 ms instead of 3 (``bench/inserts.py``'s
accepts, 16 a commit), and every writer queued behind it.

So the pipeline's :class:`Checkpointer` runs a ``PASSIVE`` checkpoint every
:data:`INTERVAL` on a connection of its own: it copies what no reader still
needs, waits for no reader or writer, and takes no write turn. Writers keep
an automatic checkpoint only as a backstop, at :data:`BACKSTOP` pages, for a
database whose pipeline is not running (``tether-manage``, a stopped
plugin) or falls behind.
"""

from __future__ import annotations

import logging
import sqlite3

import sqlalchemy as sa

from tether.common.periodic import Periodic

LOG = logging.getLogger(__name__)

#: seconds between checkpoints
INTERVAL = 0.5
#: pages of WAL (4 KiB each) at which a commit checkpoints by itself
BACKSTOP = 10_000


def database_file(engine: sa.Engine) -> str | None:
    """The file of an SQLite engine's database (its path already expanded by
    :func:`tether.plugin.db.session.make_engine`); None for memory or another database."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return url.database


class Checkpointer(Periodic):
    name = "wal-checkpointer"
    outages = (sqlite3.OperationalError,)

    def __init__(self, path: str, interval: float = INTERVAL) -> None:
        super().__init__(interval)
        self.path = path
        self._connection: sqlite3.Connection | None = None

    def tick(self) -> tuple[int, int, int]:
        """One ``PASSIVE`` checkpoint: (1 if it could not copy all, the
        WAL's frames, the frames copied)."""
        if self._connection is None:
            # Autocommit: a checkpoint cannot run inside a transaction.
            self._connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        busy, frames, copied = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if busy:
            LOG.debug("WAL checkpoint of %s: %d of %d frames copied", self.path, copied, frames)
        return busy, frames, copied

    def stop(self) -> None:
        super().stop()
        if self._connection is not None:
            self._connection.close()
            self._connection = None
