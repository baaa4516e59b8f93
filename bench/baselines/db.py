"""The baselines' database: one ``tasks`` table in an SQLite file.

The same pragmas as tether's engine (``tether/plugin/db/session.py``): WAL,
``synchronous=FULL`` (every COMMIT is fsynced, so an accepted request survives
power loss), foreign keys on, writers begin with ``BEGIN IMMEDIATE`` and wait
on the busy timeout. sqlite3 directly rather than SQLAlchemy: the baselines
pay for the COMMITs, not for an ORM.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

BUSY_TIMEOUT = 30.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL
)
"""


def connect(path: Path, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in autocommit mode: transactions are begun explicitly."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def create(path: Path, synchronous: str = "FULL") -> None:
    """A fresh, empty database at ``path``; any old one and its WAL are removed."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, synchronous)
    try:
        conn.execute(_SCHEMA)
    finally:
        conn.close()


def accept(conn: sqlite3.Connection, task_id: str) -> float:
    """Insert the task as PENDING in its own transaction; the time it committed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO tasks (id, state, created_at) VALUES (?, 'PENDING', ?)", (task_id, time.time())
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return time.time()


def record_result(conn: sqlite3.Connection, task_id: str) -> float:
    """Mark the task ACTIVE in its own transaction; the time it committed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "UPDATE tasks SET state = 'ACTIVE', finished_at = ? WHERE id = ?", (time.time(), task_id)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return time.time()


def count_active(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM tasks WHERE state = 'ACTIVE'").fetchone()
    return int(row[0])
