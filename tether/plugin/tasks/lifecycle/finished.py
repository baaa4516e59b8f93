"""What every finish of a task leaves behind, however it was written: the
task named for the waiters and metrics that run after the commit, and the
line in the log, written once it is committed."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from sqlalchemy import orm

from tether.common.states import TaskState
from tether.plugin.db import session as session_lib

LOG = logging.getLogger(__name__)

#: ``session.info`` key: (task id, resource id) of tasks that reached a
#: terminal state in the session, for whoever waits on them after commit.
FINISHED = "tether.finished"
FINISHED_METRICS = "tether.finished-metrics"


def note(session: orm.Session, task: Any, state: TaskState, finished_at: datetime.datetime) -> None:
    """``task`` (an ORM task, or a row of its columns) reached ``state``."""
    session.info.setdefault(FINISHED, []).append((task.id, task.resource_id))
    # Counted after commit (see tether.plugin.api.waiters), so a rollback counts nothing.
    elapsed = (finished_at - task.created_at).total_seconds() if task.created_at else 0.0
    session.info.setdefault(FINISHED_METRICS, []).append(
        (task.provider, task.operation, state.value, elapsed)
    )
    session_lib.log_after_commit(
        session,
        LOG,
        "task %s (%s %s %s, attempt %d on agent %s) %s%s",
        task.id,
        task.operation,
        task.resource_type,
        task.resource_id,
        task.attempt,
        task.agent_id or "-",
        state,
        f": {task.error_message}" if state == TaskState.FAILED else "",
    )
