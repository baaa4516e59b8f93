"""The ACME appliance driver.

An ACME appliance keeps one configuration document per load balancer, with
everything under it. The driver renders that document from the desired
state of the tree and replaces the stored one whole, so applying the same
change twice leaves the appliance as once.
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
        self._validate(change.resource, change.tree)
        self._apply(change.tree)
        self._report(change.tree)
        return None

    def update(self, change: Change) -> None:
        self._validate(change.resource, change.tree)
        self._apply(change.tree)
        self._report(change.tree)
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
        document = _render(tree)
        try:
            os.makedirs(self.device_dir, exist_ok=True)
            fd, temporary = tempfile.mkstemp(dir=self.device_dir, prefix=".acme-")
            with os.fdopen(fd, "w") as f:
                json.dump(document, f, sort_keys=True, indent=1)
            os.replace(temporary, self._path(tree.id))  # atomic: never half a configuration
        except OSError as exc:
            raise DeviceUnreachable(
                f"the ACME appliance store at {self.device_dir} is unreachable: {exc.strerror}",
                operator_message=f"writing {self._path(tree.id)}: {exc}",
            ) from exc

    def _validate(self, resource: Resource, tree: Resource) -> None:
        """Refuse a change the appliance cannot take. Only the resource being
        changed is judged: a sibling refused earlier (and left in ERROR) must
        not block the rest of its tree."""
        if not _supported(resource):
            raise NotSupported("ACME appliances do not balance UDP; use a TCP listener.")
        pool = tree.find(resource.parent_id or "") if resource.type == "member" else resource
        if pool is not None and pool.type == "pool":
            members = [c for c in pool.children if c.type == "member"]
            if len(members) > self.max_members:
                raise InvalidConfiguration(
                    f"pool {pool.id} has {len(members)} members; this ACME appliance takes "
                    f"at most {self.max_members} per pool. Split the pool."
                )

    def _report(self, tree: Resource) -> None:
        for node in tree.walk():
            if not _supported(node):
                continue
            up = node.attributes.get("admin_state_up", True)
            self.callbacks.operating_status(
                node.id, OperatingStatus.ONLINE if up else OperatingStatus.OFFLINE
            )

    def _path(self, loadbalancer_id: str) -> str:
        return os.path.join(self.device_dir, f"{loadbalancer_id}.json")


def _supported(node: Resource) -> bool:
    return not (node.type == "listener" and node.attributes.get("protocol") == "UDP")


def _render(node: Resource) -> dict[str, Any]:
    return {
        "type": node.type,
        "id": node.id,
        "attributes": dict(node.attributes),
        "children": [_render(child) for child in node.children if _supported(child)],
    }
