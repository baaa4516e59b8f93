"""Log lines that say what a transaction did, written once it is committed."""

from __future__ import annotations

import logging

import pytest
from oslo_config import cfg

from tether.common import log
from tether.plugin.db import session as db_session


def test_a_line_logged_after_commit_is_written_once_committed_and_never_after_a_rollback(
    conf: cfg.ConfigOpts, caplog: pytest.LogCaptureFixture
) -> None:
    log.install_record_factory()
    caplog.set_level(logging.INFO, logger="tether.test")
    logger = logging.getLogger("tether.test")
    sessionmaker = db_session.make_sessionmaker(db_session.make_engine(conf))
    with pytest.raises(RuntimeError), sessionmaker.begin() as session:
        db_session.log_after_commit(session, logger, "rolled back %s", "task-1")
        raise RuntimeError("rolled back")
    with sessionmaker.begin() as session:
        db_session.log_after_commit(session, logger, "committed %s", "task-2", request_id="req-2")
        assert not caplog.records
    [record] = caplog.records
    assert (record.getMessage(), record.request_id) == ("committed task-2", "req-2")  # type: ignore[attr-defined]
