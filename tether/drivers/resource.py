"""The desired state of a resource as a driver receives it, with what the
plugin knows of it: its provisioning status and whether a device holds it.

A driver that writes a whole tree to its device (one configuration file per
load balancer, say) must leave out a resource whose create failed: the
device never held it, and writing it again would put back what the device
refused, or make every later change of the tree fail with its error.
:meth:`Resource.without_failed_creates` is that tree.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from tether.common.states import ProvisioningStatus

if TYPE_CHECKING:
    from tether.drivers.models import Model

M = TypeVar("M", bound="Model")


@dataclasses.dataclass(frozen=True)
class Resource:
    """The desired state of one resource, as a driver receives it.

    :ivar type: the resource type name, e.g. ``listener``.
    :ivar attributes: every attribute, defaults applied.
    :ivar children: the resources that belong to this one, each with its own.
    :ivar provisioning_status: its status when the plugin built the change:
        the target's is ``PENDING_CREATE``, ``PENDING_UPDATE`` or
        ``PENDING_DELETE``; the others in the tree are ``ACTIVE``, ``ERROR``,
        or ``PENDING_*`` when a change of theirs waits. None when the plugin
        is of a release that did not say.
    :ivar applied_generation: the newest generation of it a driver reported
        applied: 0 when no device has ever held it; None when the plugin did
        not say.
    """

    type: str
    id: str
    project_id: str
    attributes: Mapping[str, Any]
    parent_id: str | None = None
    children: tuple[Resource, ...] = ()
    provisioning_status: ProvisioningStatus | None = None
    applied_generation: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Resource:
        return cls(
            type=data["type"],
            id=data["id"],
            project_id=data["project_id"],
            attributes=dict(data.get("attributes") or {}),
            parent_id=data.get("parent_id"),
            children=tuple(cls.from_dict(c) for c in data.get("children") or ()),
            provisioning_status=ProvisioningStatus.known(data.get("provisioning_status")),
            applied_generation=data.get("applied_generation"),
        )

    @property
    def on_device(self) -> bool | None:
        """Whether a device is believed to hold some generation of it
        (``applied_generation > 0``); None when the plugin did not say."""
        return believed_held(self.applied_generation)

    @property
    def create_failed(self) -> bool:
        """Its create failed and no device ever held it (``ERROR``, never
        applied). A driver leaves it, and what belongs to it, off the device;
        the user's next update of it is the first call for it, and creates it."""
        return failed_create(self.provisioning_status, self.applied_generation)

    @property
    def model(self) -> Model:
        """This resource, and what belongs to it, as the typed model of its
        type (:mod:`tether.drivers.models`), made from the schemas of the
        resource types installed in this process.

        :raises LookupError: when no installed package declares its type.
        :raises ValueError: when it lacks an attribute its schema requires.
        """
        from tether.drivers import models  # here: models imports this module

        return models.installed().model_of(self)

    def typed(self, cls: builtins.type[M]) -> M:
        """This resource as the model class ``cls`` (``Loadbalancer`` of
        :mod:`tether.drivers.lbaas_models`, or a service's own), statically
        typed.

        :raises TypeError: when it is not a resource of ``cls``'s type.
        :raises ValueError: when it lacks an attribute ``cls`` requires.
        """
        from tether.drivers import models  # here: models imports this module

        return models.build(cls, self)

    def walk(self) -> Iterator[Resource]:
        """This resource and every descendant, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def find(self, resource_id: str) -> Resource | None:
        return next((r for r in self.walk() if r.id == resource_id), None)

    def ancestors(self, resource_id: str) -> tuple[Resource, ...]:
        """The resources above ``resource_id`` in this tree, this one first;
        empty when it is this one or not in the tree."""
        for child in self.children:
            if child.id == resource_id:
                return (self,)
            above = child.ancestors(resource_id)
            if above:
                return (self, *above)
        return ()

    def without(self, resource_id: str) -> Resource:
        """This tree less the resource ``resource_id`` and everything under it."""
        children = tuple(c.without(resource_id) for c in self.children if c.id != resource_id)
        return dataclasses.replace(self, children=children)

    def without_failed_creates(self) -> Resource:
        """This tree less every resource whose create failed (see
        :attr:`create_failed`), with everything under it: what a driver that
        writes the whole tree writes."""
        children = tuple(c.without_failed_creates() for c in self.children if not c.create_failed)
        return dataclasses.replace(self, children=children)

    def replaced(self, new: Resource) -> Resource:
        """This tree with ``new`` in place of the resource of the same id (keeping its children)."""
        if self.id == new.id:
            return dataclasses.replace(new, children=self.children)
        return dataclasses.replace(self, children=tuple(c.replaced(new) for c in self.children))


def believed_held(applied_generation: int | None) -> bool | None:
    """Whether a resource of which ``applied_generation`` was reported applied is on its device."""
    return None if applied_generation is None else applied_generation > 0


def failed_create(status: ProvisioningStatus | None, applied_generation: int | None) -> bool:
    """Whether a resource's create failed before any device held it."""
    return status == ProvisioningStatus.ERROR and applied_generation == 0
