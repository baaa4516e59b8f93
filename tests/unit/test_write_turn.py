"""SQLite's write turn across processes: a flock beside the database, taken
with a timeout and handed over when the other process lets go."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from oslo_config import cfg

from tether.plugin.db import session as db_session
from tether.plugin.db import write_turn
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.db.write_turn import FileTurn

# Another process that takes the turn, says so, and lets go when told.
HOLDER = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    sys.stdin.readline()
    fcntl.flock(fd, fcntl.LOCK_UN)
    print("released", flush=True)
    sys.stdin.readline()
    """
)

# Another process that asks whether the turn is free, without waiting.
PROBE = textwrap.dedent(
    """
    import fcntl, os, sys
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("taken")
    else:
        print("free")
    """
)


class Holder:
    def __init__(self, path: pathlib.Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "held"

    def release(self) -> None:
        self._say()
        assert self._line() == "released"

    def close(self) -> None:
        self.process.kill()
        self.process.communicate()

    def _say(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()

    def _line(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline().strip()


def probe(path: pathlib.Path) -> str:
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def lock_path(tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "db.sqlite.write-turn"


@pytest.fixture
def holder(lock_path: pathlib.Path) -> Iterator[Holder]:
    holder = Holder(lock_path)
    yield holder
    holder.close()


def test_a_free_turn_is_taken_and_given_back(lock_path: pathlib.Path) -> None:
    turn = FileTurn(str(lock_path))
    assert turn.acquire(0.0)
    assert probe(lock_path) == "taken"
    turn.release()
    assert probe(lock_path) == "free"


def test_a_turn_another_process_holds_is_waited_for_until_it_lets_go(
    lock_path: pathlib.Path, holder: Holder
) -> None:
    turn = FileTurn(str(lock_path))
    assert not turn.acquire(0.05)
    holder.release()
    assert turn.acquire(30.0)
    turn.release()


def test_a_turn_fetched_after_its_caller_gave_up_is_not_kept(lock_path: pathlib.Path, holder: Holder) -> None:
    turn = FileTurn(str(lock_path))
    assert not turn.acquire(0.05)
    holder.release()
    # The helper thread takes the turn for nobody and lets go of it again.
    deadline = 100
    while probe(lock_path) != "free":
        deadline -= 1
        assert deadline, "the turn fetched for a caller that gave up was kept"
    assert turn.acquire(0.0)
    turn.release()


def test_a_write_waits_for_another_process_and_fails_as_sqlite_would_after_the_busy_timeout(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "db.sqlite"
    conf.set_override("connection", f"sqlite:///{path}", group="database")
    conf.set_override("busy_timeout", 0.2, group="database")
    engine = db_session.make_engine(conf)
    holder = Holder(pathlib.Path(f"{path}.write-turn"))
    try:
        with pytest.raises(DatabaseUnavailable) as raised, engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE notes (text TEXT)")
        assert raised.value.detail == "database is locked"
        holder.release()
        with engine.begin() as connection:
            connection.exec_driver_sql("CREATE TABLE notes (text TEXT)")
    finally:
        holder.close()
        engine.dispose()


def test_a_commit_that_wrote_syncs_the_log_once_it_has_handed_the_turn_on(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "db.sqlite"
    conf.set_override("connection", f"sqlite:///{path}", group="database")
    engine = db_session.make_engine(conf)
    synced: list[tuple[str, str]] = []
    fdatasync = os.fdatasync

    def seen(fd: int) -> None:
        # Which file, and whether another process could take the turn now.
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), probe(pathlib.Path(f"{path}.write-turn"))))
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", seen)
    try:
        with engine.begin() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL: synced here
            connection.exec_driver_sql("CREATE TABLE notes (text TEXT)")
        with engine.begin() as connection:
            connection.exec_driver_sql("INSERT INTO notes VALUES ('one')")
        assert synced == [(f"{path}-wal", "free")] * 2
    finally:
        engine.dispose()


def test_a_log_that_is_gone_has_nothing_to_sync(tmp_path: pathlib.Path) -> None:
    # SQLite deletes it once the last connection has checkpointed it into the database.
    write_turn.sync_log(str(tmp_path / "db.sqlite-wal"))
