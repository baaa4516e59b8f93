"""Cascade deletes: the subtree one delete task removes, what accepting it
does to each resource under its target, and what its end leaves.

A cascade delete is one task, on its target. Accepting it makes every
resource under the target ``PENDING_DELETE`` with a new generation, as a
delete does to its own resource: no change of any of them is accepted
meanwhile, and their changes still waiting for an agent are superseded by
it. Its success removes the whole subtree in the transaction that records
it, children first, with a ``deleted`` notification for each; its failure
leaves every resource of the subtree as it leaves the target, with the
reason (which names what the device no longer holds and what remains).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from sqlalchemy import orm

from tether.common.states import ProvisioningStatus
from tether.plugin.db import queries
from tether.plugin.db.models import ResourceRecord, Task
from tether.plugin.outbound import notifications


def subtree(session: orm.Session, resource: ResourceRecord) -> list[ResourceRecord]:
    """``resource`` and everything under it, parents before children."""
    under: dict[str | None, list[ResourceRecord]] = collections.defaultdict(list)
    for row in queries.tree(session, resource.root_id):
        under[row.parent_id].append(row)
    found = [resource]
    waiting = collections.deque([resource])
    while waiting:
        children = under.get(waiting.popleft().id, [])
        found += children
        waiting.extend(children)
    return found


def mark_deleting(doomed: Sequence[ResourceRecord]) -> None:
    """What accepting a delete does to each resource it removes."""
    for resource in doomed:
        resource.generation += 1
        resource.provisioning_status = ProvisioningStatus.PENDING_DELETE


def remove(session: orm.Session, task: Task, resource: ResourceRecord) -> None:
    """The cascade delete ``task`` succeeded: its subtree is gone."""
    for doomed in reversed(subtree(session, resource)):
        session.delete(doomed)
        # One row at a time, children first: a row goes only once no row names it as parent.
        session.flush()
        notifications.resource_changed(session, task, "DELETED", doomed)


def settle_failed(session: orm.Session, task: Task, resource: ResourceRecord, message: str) -> None:
    """The cascade delete ``task`` failed for good: each resource under its
    target ends as the target did (restored when the driver undid the whole
    operation and the resource had been applied, ERROR otherwise)."""
    restored = resource.provisioning_status == ProvisioningStatus.ACTIVE
    for below in subtree(session, resource)[1:]:
        status = (
            ProvisioningStatus.ACTIVE
            if restored and below.applied_generation > 0
            else ProvisioningStatus.ERROR
        )
        below.provisioning_status = status
        below.last_error = message
        notifications.resource_changed(session, task, status, below)
