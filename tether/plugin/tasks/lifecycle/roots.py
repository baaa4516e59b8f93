"""The accept of a new root resource, as plain rows.

Creating a root resource is the change clients send at a rate, and the one
that can conflict with nothing: the resource is new, its tree is itself, and
no change of it is in flight. So its three rows (the resource, its task
already PENDING, and the task's outbox row) are built here as plain values
for the group commit's bulk insert, without the ORM objects every other
change is made of. The rules are those of ``new_task`` followed by
``enqueue``; a test holds both paths to the same rows.

The desired attributes are serialised once: the same JSON text is stored as
the resource's attributes and the task's desired state, and is embedded in
the work message as it is.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from typing import Any, cast

import msgspec
import sqlalchemy as sa
from sqlalchemy import orm

from tether.common import messages, transport
from tether.common.states import OperatingStatus, Operation, ProvisioningStatus, TaskState
from tether.plugin.db import group_commit, ids
from tether.plugin.db.models import EncodedJSON, Outbox, ResourceRecord, Row, Task, utcnow
from tether.plugin.outbound import notifications
from tether.plugin.tasks import handoff, work
from tether.plugin.tasks.lifecycle.retries import Policy

LOG = logging.getLogger(__name__)

_RESOURCES = cast(sa.Table, ResourceRecord.__table__)
_TASKS = cast(sa.Table, Task.__table__)
_OUTBOX = cast(sa.Table, Outbox.__table__)


@dataclasses.dataclass(slots=True)
class Accepted:
    """A new root's rows, built outside the transaction that adds them."""

    resource: Row
    task: Row
    #: the rows for the bulk insert, parents first
    inserts: list[tuple[sa.Table, dict[str, Any]]]
    outbox: dict[str, Any]


def build(
    policy: Policy,
    resource_type: str,
    project_id: str,
    attributes: dict[str, Any],
    request_id: str | None = None,
    callback_url: str | None = None,
    notes: list[str] | None = None,
) -> Accepted:
    """A new root of ``resource_type`` and its create task, PENDING with its
    work message for the outbox, as rows for :func:`add`. Built by the
    request's own thread: the transaction's writer only inserts them.

    Only for a provider whose work goes to its shared queue: a host-placed
    root binds an agent first, which reads the database.
    """
    now = utcnow()
    resource_id = ids.new_id()
    provider = attributes["provider"]
    encoded = msgspec.json.encode(attributes)
    resource = Row(
        id=resource_id,
        type=resource_type,
        project_id=project_id,
        parent_id=None,
        root_id=resource_id,
        provider=provider,
        name=attributes.get("name"),
        attributes=attributes,
        provisioning_status=ProvisioningStatus.PENDING_CREATE.value,
        operating_status=OperatingStatus.UNKNOWN.value,
        generation=1,
        applied_generation=0,
        last_error=None,
        agent_id=None,
        stats=None,
        applied_attributes=None,
        drift=None,
        created_at=now,
        updated_at=now,
    )
    task = Row(
        id=ids.new_id(),
        resource_id=resource_id,
        resource_type=resource_type,
        root_id=resource_id,
        project_id=project_id,
        provider=provider,
        operation=Operation.CREATE.value,
        cascade=False,
        generation=1,
        desired=attributes,
        state=TaskState.PENDING.value,
        attempt=0,
        claim_id=None,
        claimed_for=None,
        deadline=now + datetime.timedelta(seconds=policy.pending_timeout),
        callback_url=callback_url,
        progress=None,
        superseded_by=None,
        notes=notes or None,
        agent_id=None,
        host=None,
        request_id=request_id,
        error_type=None,
        error_message=None,
        created_at=now,
        queued_at=now,
        pending_at=now,
        running_at=None,
        finished_at=None,
        updated_at=now,
    )
    stored = EncodedJSON(encoded.decode())
    # A JSON column given None stores JSON's null, not NULL: leave them out.
    columns = {k: v for k, v in vars(resource).items() if k not in ("stats", "applied_attributes")}
    outbox = {
        "task_id": task.id,
        "exchange": transport.WORK_EXCHANGE,
        "routing_key": provider,
        "payload": messages.encode(_work(task, resource, encoded)).decode(),
        "request_id": request_id,
        "created_at": now,
        "not_before": None,
    }
    inserts = [
        (_RESOURCES, columns | {"attributes": stored}),
        (_TASKS, vars(task) | {"desired": stored}),
        (_OUTBOX, outbox),
    ]
    return Accepted(resource, task, inserts, outbox)


def add(session: orm.Session, accepted: Accepted) -> None:
    """Add ``accepted``'s rows to the batch of a unit submitted with
    ``savepoint=False``."""
    for table, row in accepted.inserts:
        group_commit.insert(session, table, row)
    handoff.note(session, accepted.outbox)
    notifications.task_changed(session, accepted.task)


def _work(task: Row, resource: Row, encoded: bytes) -> messages.Work:
    # msgspec writes a Raw's bytes as they are: the attributes, encoded once,
    # go into the message without being encoded again.
    attributes = cast(dict[str, Any], msgspec.Raw(encoded))
    desired = messages.DesiredResource(
        type=resource.type,
        id=resource.id,
        project_id=resource.project_id,
        provisioning_status=resource.provisioning_status,
        applied_generation=resource.applied_generation,
        attributes=attributes,
    )
    return messages.Work(task=work.work_task(task), resource=desired, tree=desired)
