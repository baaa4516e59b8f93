"""The ACME driver against tether's conformance kit, plus its own rules."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from acme_tether.driver import AcmeDriver
from oslo_config import cfg

from tether.common.states import ProvisioningStatus
from tether.drivers.base import (
    Change,
    DeviceUnreachable,
    Driver,
    DriverError,
    InvalidConfiguration,
    NotSupported,
    Resource,
)
from tether.drivers.testing import DriverConformance


def _find(document: dict[str, Any] | None, resource_id: str) -> dict[str, Any] | None:
    if document is None:
        return None
    if document["id"] == resource_id:
        return document
    for child in document["children"]:
        found = _find(child, resource_id)
        if found is not None:
            return found
    return None


class TestAcmeConformance(DriverConformance):
    driver_class = AcmeDriver

    def configure(self, conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> None:
        conf.set_override("device_dir", str(tmp_path / "appliance"), group="driver:acme")
        conf.set_override("max_members", 2, group="driver:acme")

    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        assert isinstance(driver, AcmeDriver)
        for document_path in pathlib.Path(driver.device_dir).glob("*.json"):
            node = _find(driver.read(document_path.stem), resource.id)
            if node is not None:
                return dict(node["attributes"])
        return None

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
        lb_id = str(uuid.uuid4())
        udp = Resource("listener", str(uuid.uuid4()), "p", {"protocol": "UDP", "protocol_port": 53}, lb_id)
        lb = Resource("loadbalancer", lb_id, "p", {"provider": "acme"}, None, (udp,))
        yield Change(str(uuid.uuid4()), "create", 1, 1, None, udp, lb), NotSupported

        pool_id = str(uuid.uuid4())
        members = tuple(
            Resource(
                "member", str(uuid.uuid4()), "p", {"address": "192.0.2.1", "protocol_port": port}, pool_id
            )
            for port in (1, 2, 3)
        )
        pool = Resource(
            "pool", pool_id, "p", {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}, lb_id, members
        )
        crowded = Resource("loadbalancer", lb_id, "p", {"provider": "acme"}, None, (pool,))
        yield Change(str(uuid.uuid4()), "create", 1, 1, None, members[2], crowded), InvalidConfiguration

        assert isinstance(driver, AcmeDriver)
        pathlib.Path(driver.device_dir).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(driver.device_dir).write_text("not a directory: the store is unreachable")
        plain = Resource("loadbalancer", str(uuid.uuid4()), "p", {"provider": "acme"})
        yield Change(str(uuid.uuid4()), "create", 1, 1, None, plain, plain), DeviceUnreachable

    def test_a_member_whose_create_failed_does_not_crowd_its_pool(self, tmp_path: pathlib.Path) -> None:
        driver = self._driver(tmp_path)  # max_members = 2
        lb_id, pool_id = str(uuid.uuid4()), str(uuid.uuid4())

        def member(port: int, status: ProvisioningStatus, applied: int) -> Resource:
            attributes = {"address": "192.0.2.1", "protocol_port": port}
            return Resource("member", str(uuid.uuid4()), "p", attributes, pool_id, (), status, applied)

        refused = member(1, ProvisioningStatus.ERROR, 0)
        held, new = member(2, ProvisioningStatus.ACTIVE, 1), member(3, ProvisioningStatus.PENDING_CREATE, 0)
        attributes = {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}
        pool = Resource("pool", pool_id, "p", attributes, lb_id, (refused, held, new))
        lb = Resource("loadbalancer", lb_id, "p", {"provider": "acme"}, None, (pool,))
        driver.create(Change(str(uuid.uuid4()), "create", 1, 1, None, new, lb))
        document = driver.read(lb_id)
        assert _find(document, new.id) is not None and _find(document, refused.id) is None
