"""The work message of a task: the task and the full desired state of its tree."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tether.common import messages
from tether.plugin.db.models import Resource, Task


def message(task: Task, resource: Resource, tree: Sequence[Resource]) -> messages.Work:
    """The work message of ``task`` on ``resource``, with ``tree`` (the root's resources) nested."""
    return messages.Work(task=work_task(task), resource=resource_message(resource), tree=tree_message(tree))


def work_task(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "operation": task.operation,
        "resource_type": task.resource_type,
        "resource_id": task.resource_id,
        "root_id": task.root_id,
        "generation": task.generation,
        "attempt": task.attempt + 1,
        "project_id": task.project_id,
        "request_id": task.request_id,
        "provider": task.provider,
    }


def resource_message(resource: Resource) -> dict[str, Any]:
    return {
        "type": resource.type,
        "id": resource.id,
        "project_id": resource.project_id,
        "parent_id": resource.parent_id,
        "attributes": resource.attributes,
    }


def tree_message(rows: Sequence[Resource]) -> dict[str, Any]:
    """Nest a root's resources under the root, parents before children."""
    nodes = {r.id: resource_message(r) | {"children": []} for r in rows}
    root = None
    for row in rows:
        if row.parent_id is None:
            root = nodes[row.id]
        elif row.parent_id in nodes:
            nodes[row.parent_id]["children"].append(nodes[row.id])
    if root is None:
        raise LookupError(f"the tree of {rows[0].root_id if rows else '?'} has no root")
    return root
