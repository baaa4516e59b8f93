"""The HTTP peers' database, as their teams would write it: SQLAlchemy's ORM
on the baselines' ``tasks`` table (:mod:`bench.baselines.db` creates it), one
session and one COMMIT per request or per result.

The engine sets the same pragmas as tether's (WAL, ``synchronous=FULL``,
foreign keys on) and counts, per process, the COMMITs and the rows they
wrote; each process leaves its counts in ``BENCH_COUNTS_DIR`` when it
runs (every half second and at exit: uvicorn's workers leave through
``os._exit``, which skips ``atexit``), so the bench can say what each role
wrote per task.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event, orm

from bench.baselines.db import BUSY_TIMEOUT


class Base(orm.DeclarativeBase):
    pass


class Task(Base):
    __tablename__ = "tasks"

    id: orm.Mapped[str] = orm.mapped_column(sa.String, primary_key=True)
    state: orm.Mapped[str] = orm.mapped_column(sa.String)
    # Wall-clock seconds, as the raw baselines store them: accept → finished latency.
    created_at: orm.Mapped[float] = orm.mapped_column(sa.Float)
    finished_at: orm.Mapped[float | None] = orm.mapped_column(sa.Float, nullable=True)


class WriteCounter:
    """COMMITs and rows written by one process's engine."""

    def __init__(self, role: str) -> None:
        self.role = role
        self.commits = 0
        self.rows = 0
        self._lock = threading.Lock()

    def attach(self, engine: sa.Engine) -> None:
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "after_cursor_execute", self._on_execute)

    def _on_commit(self, _conn: Any) -> None:
        with self._lock:
            self.commits += 1

    def _on_execute(self, _conn: Any, cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")) and cursor.rowcount > 0:
            with self._lock:
                self.rows += cursor.rowcount

    def keep_dumping(self, interval: float = 0.5) -> None:
        def loop() -> None:
            while True:
                time.sleep(interval)
                self.dump()

        threading.Thread(target=loop, name="write-counter", daemon=True).start()
        atexit.register(self.dump)

    def dump(self) -> None:
        directory = os.environ.get("BENCH_COUNTS_DIR")
        if directory:
            path = Path(directory) / f"{self.role}-{os.getpid()}.json"
            # Written whole, then renamed: the bench never reads half a file.
            partial = path.with_suffix(".tmp")
            partial.write_text(json.dumps({"role": self.role, "commits": self.commits, "rows": self.rows}))
            partial.replace(path)


def engine(path: Path, role: str, synchronous: str = "FULL") -> sa.Engine:
    """An engine on ``path`` whose writes are counted for ``role``."""
    made = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": BUSY_TIMEOUT})

    @event.listens_for(made, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    counter = WriteCounter(role)
    counter.attach(made)
    counter.keep_dumping()
    return made


_sessions: dict[str, orm.sessionmaker[orm.Session]] = {}
_sessions_lock = threading.Lock()


def sessions(role: str) -> orm.sessionmaker[orm.Session]:
    """This process's sessions for ``role``, on ``BENCH_DB``: one engine and
    one counter per process and role, however many threads ask at once."""
    with _sessions_lock:
        if role not in _sessions:
            made = engine(Path(os.environ["BENCH_DB"]), role, os.environ.get("BENCH_SYNCHRONOUS", "FULL"))
            _sessions[role] = orm.sessionmaker(made, expire_on_commit=False)
        return _sessions[role]


#: The writers of one process take turns here rather than in SQLite's busy
#: handler, whose sleeps (1, 2, 5, 10 ms…) would dominate; the raw baselines
#: and tether do the same. Writers in other processes still meet the handler.
WRITE_LOCK = threading.Lock()


def accept(sessions: orm.sessionmaker[orm.Session], task_id: str) -> None:
    """The API's write: the task as PENDING, committed."""
    with WRITE_LOCK, sessions() as session:
        session.add(Task(id=task_id, state="PENDING", created_at=time.time()))
        session.commit()


def finish(sessions: orm.sessionmaker[orm.Session], task_id: str, state: str = "ACTIVE") -> None:
    """The result's write: the task's outcome and its time, committed."""
    with WRITE_LOCK, sessions() as session:
        task = session.get(Task, task_id)
        if task is None:
            raise LookupError(f"no task {task_id}")
        task.state = state
        task.finished_at = time.time()
        session.commit()


def read_counts(directory: Path) -> dict[str, dict[str, int]]:
    """Commits and rows written by each role, summed over its processes."""
    found: dict[str, dict[str, int]] = {}
    for path in directory.glob("*.json"):
        counts = json.loads(path.read_text())
        role = found.setdefault(counts["role"], {"commits": 0, "rows": 0})
        role["commits"] += counts["commits"]
        role["rows"] += counts["rows"]
    return found
