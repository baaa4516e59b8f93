"""``in_sync`` in answers: the ``?in_sync=`` filter of a list, and why a
resource is out of sync (``out_of_sync``), shown on every one that is."""

from __future__ import annotations

from typing import Any

from sqlalchemy import orm

from tether.common.exceptions import InvalidInput
from tether.common.resource_types import ResourceType
from tether.plugin.api import views
from tether.plugin.db import sync_queries
from tether.plugin.db.models import ResourceRecord

#: ``?in_sync=`` as the list operations declare it (read by :func:`wanted`, strictly).
LIST_PARAMETERS: dict[str, Any] = {
    "parameters": [
        {
            "name": "in_sync",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["true", "false"]},
            "description": "false: only the resources whose device may differ from what was asked "
            "(a change in flight or failed, drift, a dead agent), each with out_of_sync saying why; "
            "true: only the others.",
        }
    ]
}


def wanted(value: str | None) -> bool | None:
    """``?in_sync=true|false``, read strictly."""
    if value is None:
        return None
    if value not in ("true", "false"):
        raise InvalidInput(
            f"in_sync must be true or false (got {value[:50]!r}); ?in_sync=false lists the "
            "resources whose device may differ from what was asked."
        )
    return value == "true"


def views_of(
    session: orm.Session, rtype: ResourceType, rows: list[tuple[ResourceRecord, bool]]
) -> list[dict[str, Any]]:
    """The answers for ``rows`` (each with whether its agent is dead), those
    out of sync with ``out_of_sync``: why, and the task behind it."""
    why = sync_queries.reasons(
        session, [(r, dead) for r, dead in rows if not sync_queries.is_in_sync(r, dead)]
    )
    answers = []
    for row, dead in rows:
        view = views.resource(rtype, row, agent_dead=dead)
        if row.id in why:
            view["out_of_sync"] = why[row.id]
        answers.append(view)
    return answers
