"""The haproxy driver against the conformance kit, with a real HAProxy."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tether.drivers.base import Driver, Resource
from tether.drivers.haproxy import HaproxyDriver
from tether.drivers.testing import DriverConformance


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _stop_haproxies(tmp_path: pathlib.Path) -> Iterator[None]:
    yield
    for pidfile in tmp_path.glob("**/haproxy.pid"):
        for pid in pidfile.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


class TestHaproxyConformance(DriverConformance):
    driver_class = HaproxyDriver

    def sample(self, type_name: str) -> dict[str, Any]:
        attributes = super().sample(type_name)
        if type_name == "loadbalancer":
            attributes["vip_address"] = "127.0.0.1"
        if type_name == "listener":
            attributes["protocol_port"] = _free_port()
        if type_name == "member":
            attributes["address"] = "127.0.0.1"
        return attributes

    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        assert isinstance(driver, HaproxyDriver)
        for desired in pathlib.Path(driver.base).glob("*/desired.json"):
            held = json.loads(desired.read_text()).get(resource.id)
            config = (desired.parent / "haproxy.cfg").read_text()
            if held is not None:
                if resource.type in ("listener", "pool", "member"):
                    assert resource.id in config, f"{resource.type} {resource.id} is not in haproxy.cfg"
                return dict(held)
        return None
