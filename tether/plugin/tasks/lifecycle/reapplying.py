"""Applying a resource's desired state again, as an update behind whatever
its tree has in flight: after its tree moved to another host (the reaper,
an agent that restarted), to repair drift (:mod:`.drift`), or as an operator
asks (:mod:`tether.plugin.tasks.repairs`)."""

from __future__ import annotations

import logging

from sqlalchemy import orm

from tether.common.states import Operation, ProvisioningStatus
from tether.plugin.db.models import ResourceRecord, Task
from tether.plugin.tasks.lifecycle.retries import Policy
from tether.plugin.tasks.lifecycle.transitions import advance, new_task

LOG = logging.getLogger(__name__)


def reapply(
    session: orm.Session,
    policy: Policy,
    resource: ResourceRecord,
    reason: str,
    request_id: str | None = None,
    verb: str = "re-applies",
) -> Task:
    """Queue an update applying ``resource``'s desired state again (a root's
    carries its whole tree); the task."""
    task = new_task(resource, Operation.UPDATE, request_id)
    session.add(task)
    if resource.provisioning_status in (ProvisioningStatus.ACTIVE, ProvisioningStatus.ERROR):
        resource.provisioning_status = ProvisioningStatus.PENDING_UPDATE
    session.flush()
    LOG.info("task %s %s %s %s: %s", task.id, verb, resource.type, resource.id, reason)
    advance(session, policy, resource.root_id)
    return task
