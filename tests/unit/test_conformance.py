"""The conformance kit, run against the drivers tether ships."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from tether.drivers.base import Change, DeviceUnreachable, Driver, DriverError, Resource
from tether.drivers.fake import FakeDriver
from tether.drivers.noop import NoopDriver
from tether.drivers.testing import DriverConformance


class _Noopish(DriverConformance):
    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        held = driver.applied.get(resource.id)  # type: ignore[attr-defined]
        return None if held is None else held[1]


class TestNoopConformance(_Noopish):
    driver_class = NoopDriver


class TestFakeConformance(_Noopish):
    driver_class = FakeDriver

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
        for metadata, expected in (
            ({"fake.fail": "rack 7 is full"}, DriverError),
            ({"fake.unreachable": "no route"}, DeviceUnreachable),
        ):
            lb = Resource("loadbalancer", str(uuid.uuid4()), "p", {"provider": "fake", "metadata": metadata})
            yield Change(str(uuid.uuid4()), "create", 1, 1, None, lb, lb), expected


class TestFakeLongOperationConformance(_Noopish):
    """The fake driver running every change as a long device operation."""

    driver_class = FakeDriver

    def sample(self, type_name: str) -> dict[str, Any]:
        return super().sample(type_name) | {"metadata": {"fake.operation_s": "0.2"}}
