"""The ACME appliance driver.

An ACME appliance keeps one configuration document per load balancer, with
everything under it. The driver renders that document from the desired
state of the tree, read as tether's typed load-balancing models, and
replaces the stored one whole, so applying the same change twice leaves the
appliance as once. A resource whose create failed is left out of it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from oslo_config import cfg

from tether.common.capabilities import AllowedValues, Capabilities, MaxChildren
from tether.common.states import OperatingStatus
from tether.drivers.base import (
    Change,
    DeviceUnreachable,
    Driver,
    InvalidConfiguration,
    NotSupported,
    Resource,
    driver_group,
)
from tether.drivers.lbaas_models import Healthmonitor, Listener, Loadbalancer, Member, Pool
from tether.drivers.models import Model, attributes_of

OPTS: list[cfg.Opt] = [
    cfg.StrOpt("device_dir", help="Directory of the appliance's configuration store (required)."),
    cfg.IntOpt("max_members", default=100, min=1, help="Members the appliance accepts in one pool."),
]


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    return [(driver_group("acme"), OPTS)]


class AcmeDriver(Driver):
    """Realises load balancers on an ACME appliance."""

    name = "acme"
    resource_types = frozenset({"loadbalancer", "listener", "pool", "member", "healthmonitor"})
    placement = "shared"
    capabilities = frozenset(
        {
            "operating_status",
            AllowedValues("listener", "protocol", {"TCP", "HTTP", "HTTPS", "TERMINATED_HTTPS"}),
        }
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.conf[driver_group(self.name)]
        if not options.device_dir:
            raise InvalidConfiguration(
                "[driver:acme] device_dir is not set; point it at the appliance's store."
            )
        self.device_dir = options.device_dir
        self.max_members = options.max_members

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return OPTS

    def current_capabilities(self) -> Capabilities:
        # The appliance's member limit is the operator's to set.
        limit = MaxChildren("pool", "member", self.max_members)
        return Capabilities.of([*self.capabilities, limit], self.resource_types)

    def create(self, change: Change) -> None:
        self._validate(change)
        self._apply(change.tree)
        return None

    def update(self, change: Change) -> None:
        # After a failed create, the user's update is the first call for the
        # resource: writing the whole tree creates it.
        self._validate(change)
        self._apply(change.tree)
        return None

    def delete(self, change: Change) -> None:
        if change.resource.type == "loadbalancer":
            try:
                os.unlink(self._path(change.tree.id))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise DeviceUnreachable(f"the ACME appliance store is unreachable: {exc.strerror}") from exc
            return
        self._apply(change.tree.without(change.resource.id))

    def read(self, loadbalancer_id: str) -> dict[str, Any] | None:
        """The document the appliance holds for a load balancer."""
        try:
            with open(self._path(loadbalancer_id)) as f:
                document: dict[str, Any] = json.load(f)
                return document
        except FileNotFoundError:
            return None

    def _apply(self, tree: Resource) -> None:
        # What failed to be created stays off the appliance: it never held it.
        lb = tree.without_failed_creates().typed(Loadbalancer)
        document = _render(lb)
        try:
            os.makedirs(self.device_dir, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.device_dir, prefix=".acme-")
            with os.fdopen(fd, "w") as f:
                json.dump(document, f, sort_keys=True, indent=1)
            os.replace(temporary, self._path(lb.id))  # atomic: never half a configuration
        except OSError as exc:
            raise DeviceUnreachable(
                f"the ACME appliance store at {self.device_dir} is unreachable: {exc.strerror}",
                operator_message=f"writing {self._path(lb.id)}: {exc}",
            ) from exc
        self._report(lb)

    def _validate(self, change: Change) -> None:
        """Refuse a change the appliance cannot take. Only the resource being
        changed is judged: a sibling refused earlier (left in ERROR, never
        applied) must not block the rest of its tree."""
        resource, tree = change.resource, change.tree
        if resource.type == "listener" and not _supported(resource.typed(Listener)):
            raise NotSupported("ACME appliances do not balance UDP; use a TCP listener.")
        failed = next((r for r in tree.ancestors(resource.id) if r.create_failed), None)
        if failed is not None:
            raise InvalidConfiguration(
                f"{failed.type} {failed.id} failed to be created, so the appliance cannot hold "
                f"{resource.type} {resource.id}; update the {failed.type} first."
            )
        node = tree.find(resource.parent_id or "") if resource.type == "member" else resource
        if node is not None and node.type == "pool":
            pool = node.typed(Pool)
            members = [m for m in pool.members if not m.create_failed]
            if len(members) > self.max_members:
                raise InvalidConfiguration(
                    f"pool {pool.id} has {len(members)} members; this ACME appliance takes "
                    f"at most {self.max_members} per pool. Split the pool."
                )

    def _report(self, lb: Loadbalancer) -> None:
        nodes: list[Loadbalancer | Listener | Pool | Member | Healthmonitor] = [lb]
        nodes += [listener for listener in lb.listeners if _supported(listener)]
        for pool in lb.pools:
            nodes += [pool, *pool.members, *pool.healthmonitors]
        for node in nodes:
            status = OperatingStatus.ONLINE if node.admin_state_up else OperatingStatus.OFFLINE
            self.callbacks.operating_status(node.id, status)

    def _path(self, loadbalancer_id: str) -> str:
        return os.path.join(self.device_dir, f"{loadbalancer_id}.json")


def _supported(listener: Listener) -> bool:
    return listener.protocol != "UDP"


def _render(lb: Loadbalancer) -> dict[str, Any]:
    """The appliance's document of a load balancer: each resource with its
    attributes, under the one it belongs to."""
    listeners = [_node(listener) for listener in lb.listeners if _supported(listener)]
    pools = [_node(pool, [_node(n) for n in (*pool.members, *pool.healthmonitors)]) for pool in lb.pools]
    return _node(lb, listeners + pools)


def _node(model: Model, children: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": model.resource_type,
        "id": model.id,
        "attributes": attributes_of(model),
        "children": children or [],
    }
