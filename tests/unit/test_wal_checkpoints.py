"""SQLite's WAL is copied back by the pipeline's checkpointer, beside the
writers, not by the commit that crosses 1,000 pages while it holds the
write turn."""

from __future__ import annotations

import threading

from fastapi.testclient import TestClient

from tether.plugin.db import checkpoints
from tether.plugin.service import Plugin

from .conftest import accepted, wait_for


def test_writers_leave_checkpoints_to_the_checkpointer_but_keep_a_backstop(plugin: Plugin) -> None:
    with plugin.engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()
    assert pages == checkpoints.BACKSTOP
    # Readers never commit a write, so they never checkpoint anyway.
    assert checkpoints.database_file(plugin.read_engine) == checkpoints.database_file(plugin.engine)


def test_a_checkpoint_copies_the_log_back_without_waiting_for_a_writer(
    plugin: Plugin, client: TestClient
) -> None:
    for _ in range(5):
        accepted(client, "loadbalancers", {"provider": "noop"})
    checkpointer = plugin.pipeline.checkpointer
    assert checkpointer is not None
    busy, frames, copied = checkpointer.tick()
    assert (busy, copied) == (0, frames) and frames > 0
    # A writer holding the write turn in an open transaction does not stop
    # a checkpoint from returning at once with what it could copy.
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with plugin.sessionmaker.begin() as session:
            session.connection().exec_driver_sql("DELETE FROM outbox WHERE id < 0")
            holding.set()
            release.wait(10)

    writer = threading.Thread(target=hold)
    writer.start()
    try:
        assert holding.wait(10)
        busy, frames, copied = checkpointer.tick()  # returns while the writer still holds the turn
        assert writer.is_alive() and not release.is_set()
    finally:
        release.set()
        writer.join(10)
    assert busy == 0 and copied == frames, (busy, frames, copied)


def test_the_pipeline_runs_the_checkpointer_and_stops_it(plugin: Plugin) -> None:
    checkpointer = plugin.pipeline.checkpointer
    assert checkpointer is not None
    plugin.start()
    try:
        wait_for(lambda: any(t.name == checkpoints.Checkpointer.name for t in threading.enumerate()))
    finally:
        plugin.stop()
    assert not any(t.name == checkpoints.Checkpointer.name for t in threading.enumerate())
