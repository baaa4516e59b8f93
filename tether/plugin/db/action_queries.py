"""What operators asked for by hand, as the task history and the agents show it."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy import orm

from tether.plugin.db.models import OperatorAction


def of_task(session: orm.Session, task_id: str) -> Sequence[OperatorAction]:
    """The actions that made, ended or acted on a task, oldest first: a
    retry shows on the failed task and on the one that retries it."""
    query = sa.select(OperatorAction).where(
        sa.or_(
            OperatorAction.task_id == task_id,
            sa.and_(OperatorAction.target_type == "task", OperatorAction.target_id == task_id),
        )
    )
    return session.scalars(query.order_by(OperatorAction.id)).all()


def of_target(
    session: orm.Session, target_type: str, target_id: str, limit: int = 20
) -> list[OperatorAction]:
    """The latest ``limit`` actions on one thing (an agent), oldest first."""
    query = (
        sa.select(OperatorAction)
        .where(OperatorAction.target_type == target_type, OperatorAction.target_id == target_id)
        .order_by(OperatorAction.id.desc())
        .limit(limit)
    )
    return list(reversed(session.scalars(query).all()))
