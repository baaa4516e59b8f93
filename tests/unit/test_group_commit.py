"""Group commit: many callers' writes in one transaction, each one's failure its own."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import event, orm

from tether.plugin.db import group_commit
from tether.plugin.db import session as db_session
from tether.plugin.db.exceptions import DuplicateEntry
from tether.plugin.db.group_commit import GroupCommit


class Base(orm.DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    text: orm.Mapped[str] = orm.mapped_column(unique=True)


@pytest.fixture
def sessionmaker(conf: cfg.ConfigOpts) -> Iterator[orm.sessionmaker[orm.Session]]:
    engine = db_session.make_engine(conf)
    Base.metadata.create_all(engine)
    yield db_session.make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def writer(sessionmaker: orm.sessionmaker[orm.Session]) -> Iterator[GroupCommit]:
    writer = GroupCommit(sessionmaker, max_batch=16)
    yield writer
    writer.stop()


def texts(sessionmaker: orm.sessionmaker[orm.Session]) -> set[str]:
    with sessionmaker() as session:
        return set(session.scalars(sa.select(Note.text)))


def hold(writer: GroupCommit) -> tuple[threading.Event, Any]:
    """Keep the writer in a unit of its own until the gate opens, so what is
    submitted meanwhile queues up behind it."""
    entered, gate = threading.Event(), threading.Event()

    def unit(session: orm.Session) -> bool:
        entered.set()
        return gate.wait(10)

    future = writer.submit(unit)
    assert entered.wait(10)
    return gate, future


def add(text: str) -> Any:
    def unit(session: orm.Session) -> str:
        session.add(Note(text=text))
        session.flush()
        return text

    return unit


def test_concurrent_callers_share_commits(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    commits = []
    db_session.after_commit(sessionmaker, [], lambda session: commits.append(1))
    gate, first = hold(writer)
    futures = [writer.submit(add(f"note-{i}")) for i in range(40)]
    gate.set()
    assert first.result(10) is True
    assert [f.result(10) for f in futures] == [f"note-{i}" for i in range(40)]
    assert texts(sessionmaker) == {f"note-{i}" for i in range(40)}
    # 41 units: the first with 15 that queued while it ran, then batches of
    # at most 16; a unit's savepoint is not a commit to after-commit work.
    assert len(commits) == 3


def test_a_failing_unit_undoes_only_its_own_writes(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    def fails(session: orm.Session) -> None:
        session.add(Note(text="doomed"))
        session.flush()
        raise ValueError("refused")

    gate, _ = hold(writer)
    before = writer.submit(add("before"))
    failing = writer.submit(fails)
    duplicate = writer.submit(add("before"))  # a unique violation, at flush
    after = writer.submit(add("after"))
    gate.set()
    assert before.result(10) == "before"
    assert after.result(10) == "after"
    with pytest.raises(ValueError, match="refused"):
        failing.result(10)
    with pytest.raises(DuplicateEntry):
        duplicate.result(10)
    assert texts(sessionmaker) == {"before", "after"}


def test_after_commit_work_of_a_failed_unit_is_dropped(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    seen: list[list[str]] = []
    db_session.after_commit(
        sessionmaker, ["woken"], lambda session: seen.append(session.info.pop("woken", []))
    )

    def wakes(name: str, fail: bool) -> Any:
        def unit(session: orm.Session) -> None:
            session.info.setdefault("woken", []).append(name)
            if fail:
                raise RuntimeError(name)

        return unit

    gate, _ = hold(writer)
    futures = [writer.submit(wakes(name, name == "b")) for name in "abc"]
    gate.set()
    for future in futures:
        future.exception(10)
    assert ["a", "c"] in seen
    assert not any("b" in names for names in seen)


def test_a_failed_commit_fails_every_unit_of_its_batch(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    def refuse(session: orm.Session) -> None:
        # The batch's commit, not a unit's savepoint, fails.
        if session.in_nested_transaction():
            return
        if session.scalar(sa.select(Note.id).where(Note.text == "poison")) is not None:
            raise sa.exc.OperationalError("COMMIT", None, Exception("disk I/O error"))

    event.listen(sessionmaker, "before_commit", refuse)
    gate, _ = hold(writer)
    futures = [writer.submit(add(text)) for text in ("x", "poison", "y")]
    gate.set()
    for future in futures:
        with pytest.raises(sa.exc.OperationalError, match="disk I/O error"):
            future.result(10)
    assert texts(sessionmaker) == set()
    event.remove(sessionmaker, "before_commit", refuse)
    # The writer carries on with the next batch.
    assert writer.run(add("z")) == "z"
    assert texts(sessionmaker) == {"z"}


def test_a_unit_runs_in_its_callers_context(writer: GroupCommit) -> None:
    request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
    request_id.set("req-1")
    assert writer.run(lambda session: request_id.get()) == "req-1"


def test_stop_finishes_what_was_handed_in(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    gate, _ = hold(writer)
    futures = [writer.submit(add(f"n{i}")) for i in range(5)]
    stopper = threading.Thread(target=writer.stop)
    stopper.start()
    gate.set()
    stopper.join(10)
    assert not stopper.is_alive()
    assert all(f.done() and f.exception() is None for f in futures)
    assert texts(sessionmaker) == {f"n{i}" for i in range(5)}


def test_a_unit_its_caller_gave_up_on_is_not_run_and_the_writer_carries_on(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    gate, _ = hold(writer)
    abandoned = writer.submit(add("abandoned"))
    assert abandoned.cancel()
    kept = writer.submit(add("kept"))
    gate.set()
    assert kept.result(10) == "kept"
    assert texts(sessionmaker) == {"kept"}


def test_a_unit_that_raises_a_base_exception_fails_its_batch_and_the_writer_carries_on(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    def exits(session: orm.Session) -> None:
        raise SystemExit(3)

    gate, _ = hold(writer)
    futures = [writer.submit(add("lost")), writer.submit(exits)]
    gate.set()
    for future in futures:
        with pytest.raises(SystemExit):
            future.result(10)
    assert writer.run(add("after")) == "after"
    assert texts(sessionmaker) == {"after"}


def test_units_without_a_savepoint_insert_in_bulk_and_a_failing_one_leaves_nothing(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    statements: list[tuple[str, bool]] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        statements.append((statement.split()[0], executemany))

    def adds(text: str, fail: bool = False) -> Any:
        def unit(session: orm.Session) -> str:
            group_commit.insert(session, Note.__table__, {"text": text})  # type: ignore[arg-type]
            if fail:
                raise ValueError(text)
            return text

        return unit

    engine = sessionmaker.kw["bind"]
    gate, _ = hold(writer)
    event.listen(engine, "before_cursor_execute", seen)
    futures = [writer.submit(adds(t, fail=t == "b"), savepoint=False) for t in "abc"]
    saved = writer.submit(add("d"))
    gate.set()
    assert [futures[0].result(10), futures[2].result(10), saved.result(10)] == ["a", "c", "d"]
    with pytest.raises(ValueError, match="b"):
        futures[1].result(10)
    event.remove(engine, "before_cursor_execute", seen)
    assert texts(sessionmaker) == {"a", "c", "d"}
    # "d" in a savepoint of its own; "a" and "c" in one statement, at the commit.
    assert [s for s in statements if s[0] == "INSERT"] == [("INSERT", False), ("INSERT", True)]


def _taken(writer: GroupCommit) -> None:
    """Return once the writer has taken what was queued."""
    for _ in range(1000):
        if writer._queue.empty():
            return
        threading.Event().wait(0.01)
    raise AssertionError("the writer never took its queue")


def test_a_unit_alone_waits_for_a_second_and_they_share_a_commit(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    commits = []
    db_session.after_commit(sessionmaker, [], lambda session: commits.append(1))
    writer = GroupCommit(sessionmaker, wait=30.0)
    try:
        first = writer.submit(add("first"))
        _taken(writer)
        # Taken, and waiting for company rather than committed alone.
        assert not first.done()
        second = writer.submit(add("second"))
        assert (first.result(10), second.result(10)) == ("first", "second")
    finally:
        writer.stop()
    assert len(commits) == 1
    assert texts(sessionmaker) == {"first", "second"}


def test_a_unit_alone_with_no_wait_is_committed_at_once(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    writer = GroupCommit(sessionmaker, wait=0.0)
    try:
        assert writer.submit(add("alone")).result(10) == "alone"
    finally:
        writer.stop()


def test_stopping_ends_the_wait_for_company(sessionmaker: orm.sessionmaker[orm.Session]) -> None:
    writer = GroupCommit(sessionmaker, wait=30.0)
    lone = writer.submit(add("lone"))
    _taken(writer)
    stopper = threading.Thread(target=writer.stop)
    stopper.start()
    stopper.join(10)
    assert not stopper.is_alive()
    assert lone.result(0) == "lone"


def test_units_that_queue_while_the_writer_waits_for_the_write_turn_share_its_commit(
    writer: GroupCommit, sessionmaker: orm.sessionmaker[orm.Session]
) -> None:
    commits = []
    db_session.after_commit(sessionmaker, [], lambda session: commits.append(1))
    with sessionmaker.begin() as other:
        other.connection()  # another writer holds the turn
        first = writer.submit(add("first"))
        _taken(writer)
        later = [writer.submit(add(f"later-{i}")) for i in range(3)]
    assert first.result(10) == "first"
    assert [f.result(10) for f in later] == [f"later-{i}" for i in range(3)]
    # The other writer's commit, then one for all four.
    assert len(commits) == 2
