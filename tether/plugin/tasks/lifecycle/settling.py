"""Results that only finish their task, settled set-based (the common case);
every other result goes through :func:`tether.plugin.tasks.lifecycle.record_result`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import orm

from tether.common import log, messages
from tether.common.states import OperatingStatus, Operation, Outcome, TaskState
from tether.plugin.db import attempts
from tether.plugin.db.models import utcnow
from tether.plugin.outbound import notifications
from tether.plugin.tasks.lifecycle import finished
from tether.plugin.tasks.lifecycle.retries import Policy

LOG = logging.getLogger(__name__)


def settle_simply(
    session: orm.Session,
    policy: Policy,
    results: Sequence[tuple[Any, messages.Result]],
    busy_trees: set[str],
) -> list[messages.Result]:
    """Record, in set-based statements, the results that only finish their
    task: a success of the running attempt of a create or an update, with no
    task queued behind it on its tree, no callback and no notification to
    send. The others are returned, for :func:`record_result`.

    :param results: each result with its task as :data:`attempts.RESULT_COLUMNS` read it.
    """
    if session.info.get(notifications.WANTED):
        return [result for _, result in results]
    simple: list[tuple[Any, messages.Result]] = []
    rest: list[messages.Result] = []
    seen: set[str] = set()
    for task, result in results:
        if (
            result.outcome == Outcome.SUCCEEDED
            and task.state == TaskState.RUNNING
            and task.attempt == result.attempt
            and task.open_attempt
            and task.operation in (Operation.CREATE, Operation.UPDATE)
            and not task.callback_url
            and task.root_id not in busy_trees
            and task.id not in seen
        ):
            simple.append((task, result))
        else:
            rest.append(result)
        seen.add(task.id)
    if not simple:
        return rest
    now = utcnow()
    attempts.succeed(
        session,
        [
            {
                "id": task.id,
                "attempt": task.attempt,
                "host": result.host[:255] if result.host else None,
                "resource_id": task.resource_id,
                "generation": task.generation,
            }
            for task, result in simple
        ],
        now,
    )
    attempts.set_operating_statuses(
        session,
        [
            {"resource_id": resource_id, "root_id": task.root_id, "status": status}
            for task, result in simple
            for resource_id, status in result.statuses.items()
            if _known_status(task.id, resource_id, status)
        ],
    )
    for task, result in simple:
        with log.request_context(result.request_id):
            finished.note(session, task, TaskState.SUCCEEDED, now)
    return rest


def _known_status(task_id: str, resource_id: str, status: str) -> bool:
    if status in OperatingStatus.__members__:
        return True
    LOG.warning("task %s: unknown operating status %r for %s ignored", task_id, status, resource_id)
    return False
