"""What people do by hand: the reason they give, and the record of who asked
what and why, logged and kept beside the tasks
(:class:`~tether.plugin.db.models.OperatorAction`), so that a task's history
shows the person behind a cancel, a retry or a re-apply as well as the
agents behind its attempts."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import orm

from tether.plugin.context import RequestContext
from tether.plugin.db.models import OperatorAction

LOG = logging.getLogger(__name__)

#: Longest reason accepted, in characters: a line, not a report.
MAX_REASON = 255


def record(
    session: orm.Session,
    ctx: RequestContext,
    action: str,
    target_type: str,
    target_id: str | None,
    *,
    task_id: str | None = None,
    reason: str | None = None,
    outcome: dict[str, Any] | None = None,
) -> OperatorAction:
    """Keep and log one action, in the transaction that does it.

    :param task_id: the task the action made (retry, reapply) or ended (cancel).
    """
    row = OperatorAction(
        action=action,
        target_type=target_type,
        target_id=target_id,
        task_id=task_id,
        project_id=ctx.project_id,
        roles=sorted(ctx.roles),
        request_id=ctx.request_id,
        reason=reason,
        outcome=outcome,
    )
    session.add(row)
    LOG.info(
        "%s of %s%s%s asked by project %s (roles %s): %s",
        action,
        target_type,
        f" {target_id}" if target_id else "",
        f" (task {task_id})" if task_id and task_id != target_id else "",
        ctx.project_id,
        ", ".join(sorted(ctx.roles)) or "none",
        repr(reason) if reason else "no reason given",
    )
    return row
