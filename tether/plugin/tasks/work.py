"""The work message of a task: the task and the full desired state of its tree."""

from __future__ import annotations

from collections.abc import Sequence

from tether.common import messages
from tether.common.states import Operation
from tether.plugin.db.models import ResourceRecord, Row, Task


def message(task: Task, resource: ResourceRecord, tree: Sequence[ResourceRecord]) -> messages.Work:
    """The work message of ``task`` on ``resource``, with ``tree`` (the root's resources) nested."""
    if task.cascade:
        return messages.Work(
            version=messages.CASCADE_VERSION,
            task=work_task(task),
            resource=desired(resource),
            tree=desired_tree(tree),
        )
    return messages.Work(task=work_task(task), resource=desired(resource), tree=desired_tree(tree))


def work_task(task: Task | Row) -> messages.WorkTask:
    return messages.WorkTask(
        id=task.id,
        operation=Operation(task.operation),
        resource_type=task.resource_type,
        resource_id=task.resource_id,
        root_id=task.root_id,
        generation=task.generation,
        attempt=task.attempt + 1,
        project_id=task.project_id,
        request_id=task.request_id,
        provider=task.provider,
        cascade=task.cascade,
    )


def desired(
    resource: ResourceRecord, children: list[messages.DesiredResource] | None = None
) -> messages.DesiredResource:
    return messages.DesiredResource(
        type=resource.type,
        id=resource.id,
        project_id=resource.project_id,
        parent_id=resource.parent_id,
        provisioning_status=str(resource.provisioning_status),
        applied_generation=resource.applied_generation,
        attributes=resource.attributes,
        children=[] if children is None else children,
    )


def desired_tree(rows: Sequence[ResourceRecord]) -> messages.DesiredResource:
    """Nest a root's resources under the root, parents before children."""
    children: dict[str, list[messages.DesiredResource]] = {r.id: [] for r in rows}
    nodes = {r.id: desired(r, children[r.id]) for r in rows}
    root = None
    for row in rows:
        if row.parent_id is None:
            root = nodes[row.id]
        elif row.parent_id in nodes:
            children[row.parent_id].append(nodes[row.id])
    if root is None:
        raise LookupError(f"the tree of {rows[0].root_id if rows else '?'} has no root")
    return root
