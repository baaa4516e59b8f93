"""Who is asking: the project and roles of an API caller."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RequestContext:
    project_id: str
    roles: frozenset[str] = frozenset()
    #: ``tether:all_projects`` allows this caller every project's rows
    all_projects: bool = False
    request_id: str | None = None
    #: where to POST the task this request starts, when it finishes
    callback_url: str | None = None

    @property
    def project_filter(self) -> str | None:
        """The project a query is limited to; None lets an admin see all."""
        return None if self.all_projects else self.project_id
