"""References between resources, as their types declare them
(``ResourceType.references``): an attribute holding the id of another
resource of the same tree.

Judged when a change is accepted, after the tree's lock, so a create naming
a resource and a delete of it are ordered: a create or update must name a
resource that exists in the same tree (which also keeps references inside
one project), and a delete must not leave a reference dangling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import orm

from tether.common.exceptions import Conflict, InvalidInput
from tether.common.resource_types import Registry, ResourceType
from tether.common.states import ProvisioningStatus
from tether.plugin.db import queries
from tether.plugin.db.models import ResourceRecord


def check_named(
    session: orm.Session,
    registry: Registry,
    rtype: ResourceType,
    resource: ResourceRecord,
    attributes: Mapping[str, Any],
) -> None:
    """Each reference in ``attributes`` (all of a create's, those an update
    changes) must name a resource of its type in ``resource``'s tree.

    :raises InvalidInput: naming the attribute and the id.
    :raises Conflict: when the resource named is being deleted.
    """
    root = registry[_root_type(registry, rtype)]
    for attribute, target_type in rtype.references.items():
        value = attributes.get(attribute)
        if value is None:
            continue
        target = queries.get_resource(session, value, None) if isinstance(value, str) else None
        if target is None or target.type != target_type or target.root_id != resource.root_id:
            # The same words whether the id is unknown or another tree's (another project's).
            raise InvalidInput(
                f"{attribute} {value!r} is no {target_type} of this {rtype.name}'s {root.name} "
                f"{resource.root_id}; name one of its {target_type}s"
                f"{_listing(registry, target_type, resource.root_id)}, or null.",
                path=f"$.{attribute}",
            )
        if target.provisioning_status == ProvisioningStatus.PENDING_DELETE:
            raise Conflict(
                f"{attribute} names {target_type} {target.id}, which is being deleted; name another "
                f"{target_type}, or null."
            )


def check_unreferenced(session: orm.Session, registry: Registry, doomed: Sequence[ResourceRecord]) -> None:
    """Nothing outside ``doomed`` (what a delete removes) may name one of them.

    :raises Conflict: naming the referrer, its attribute and what to do.
    """
    types = {r.type for r in doomed}
    referring = {
        name: {a: t for a, t in rtype.references.items() if t in types}
        for name, rtype in registry.items()
        if any(t in types for t in rtype.references.values())
    }
    if not referring:
        return
    gone = {r.id: r for r in doomed}
    for row in queries.tree(session, doomed[0].root_id):
        # A referrer being deleted goes first: its tree's changes run in order.
        if (
            row.id in gone
            or row.type not in referring
            or row.provisioning_status == ProvisioningStatus.PENDING_DELETE
        ):
            continue
        for attribute in referring[row.type]:
            value = row.attributes.get(attribute)
            target = gone.get(value) if isinstance(value, str) else None
            if target is not None:
                raise Conflict(_dangling(registry, row, attribute, target, doomed[0]))


def _dangling(
    registry: Registry,
    referrer: ResourceRecord,
    attribute: str,
    target: ResourceRecord,
    deleted: ResourceRecord,
) -> str:
    what = f"{target.type} {target.id}"
    if target is not deleted:
        what += f" (under {deleted.type} {deleted.id})"
    collection = registry[referrer.type].collection
    root_type = _root_type(registry, registry[referrer.type])
    return (
        f"{what} is the {attribute} of {referrer.type} {referrer.id}; change that first "
        f'(PUT /v1/{collection}/{referrer.id} {{"{attribute}": null}} or another id), or delete the '
        f"{root_type} {referrer.root_id} with everything under it (DELETE "
        f"/v1/{registry[root_type].collection}/{referrer.root_id}?cascade=true)."
    )


def changed(rtype: ResourceType, before: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """The references an update changes."""
    return {a: v for a, v in changes.items() if a in rtype.references and before.get(a) != v}


def _root_type(registry: Registry, rtype: ResourceType) -> str:
    while rtype.parent is not None:
        rtype = registry[rtype.parent]
    return rtype.name


def _listing(registry: Registry, target_type: str, root_id: str) -> str:
    """Where the caller finds the resources it may name, when one request lists them."""
    target = registry[target_type]
    if target.parent is not None and registry[target.parent].is_root:
        return f" (GET /v1/{target.collection}?{target.parent_key}={root_id})"
    return ""
