"""How resources and tasks look in API answers."""

from __future__ import annotations

import datetime
from typing import Any

from tether.common.resource_types import ResourceType
from tether.common.states import ProvisioningStatus
from tether.plugin.db.models import Resource, Task


def resource(rtype: ResourceType, row: Resource, task: Task | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {"id": row.id}
    if rtype.parent_key:
        view[rtype.parent_key] = row.parent_id
    # Every declared attribute appears, null when unset, so clients see one shape.
    view.update(dict.fromkeys(_attribute_names(rtype)))
    view.update(row.attributes)
    view.update(
        project_id=row.project_id,
        provisioning_status=row.provisioning_status,
        operating_status=row.operating_status,
        in_sync=in_sync(row),
        last_error=row.last_error,
        generation=row.generation,
        applied_generation=row.applied_generation,
        created_at=_time(row.created_at),
        updated_at=_time(row.updated_at),
    )
    if task is not None:
        view["task"] = {"id": task.id, "state": task.state, "href": f"/v1/tasks/{task.id}"}
    return view


def _attribute_names(rtype: ResourceType) -> list[str]:
    return [k for k in rtype.schema["properties"] if k != rtype.parent_key]


def in_sync(row: Resource) -> bool:
    """Does the device hold the latest desired generation, with nothing failed since?"""
    return row.provisioning_status == ProvisioningStatus.ACTIVE and row.applied_generation == row.generation


def task(row: Task) -> dict[str, Any]:
    error = None
    if row.error_type is not None:
        error = {"type": row.error_type, "message": row.error_message}
    return {
        "id": row.id,
        "state": row.state,
        "operation": row.operation,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "root_id": row.root_id,
        "provider": row.provider,
        "generation": row.generation,
        "attempt": row.attempt,
        "agent_id": row.agent_id,
        "host": row.host,
        "project_id": row.project_id,
        "request_id": row.request_id,
        "error": error,
        "created_at": _time(row.created_at),
        "queued_at": _time(row.queued_at),
        "pending_at": _time(row.pending_at),
        "running_at": _time(row.running_at),
        "finished_at": _time(row.finished_at),
    }


def _time(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
