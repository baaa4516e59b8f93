"""The haproxy driver against the conformance kit, with a real HAProxy."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tests.unit.conftest import wait_for
from tether.drivers.base import Change, Driver, Resource
from tether.drivers.testing import DriverConformance
from tether.reference_drivers.haproxy import HaproxyDriver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tmp_path() -> Iterator[pathlib.Path]:
    # HAProxy refuses a stats socket path longer than 97 characters, and
    # pytest's own temporary directories (deeper under pytest -n) come close.
    path = pathlib.Path(tempfile.mkdtemp(prefix="tether-haproxy-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


def test_a_reload_keeps_established_connections(tmp_path: pathlib.Path) -> None:
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen()
    accepted: list[socket.socket] = []

    def serve() -> None:
        conn, _ = echo.accept()
        accepted.append(conn)
        try:
            while data := conn.recv(1024):
                conn.sendall(data)
        except OSError:
            pass  # the test closed the connection under it when it finished

    threading.Thread(target=serve, daemon=True).start()
    kit = TestHaproxyConformance()
    driver = kit._driver(tmp_path)
    port = _free_port()
    member = Resource(
        "member",
        "m",
        "p",
        {"address": "127.0.0.1", "protocol_port": echo.getsockname()[1], "weight": 1},
        "pool",
    )
    pool = Resource("pool", "pool", "p", {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}, "lb", (member,))
    listener = Resource("listener", "l", "p", {"protocol": "TCP", "protocol_port": port}, "lb")
    lb = Resource(
        "loadbalancer", "lb", "p", {"provider": "haproxy", "vip_address": "127.0.0.1"}, None, (listener, pool)
    )
    driver.create(Change("t1", "create", 1, 1, None, lb, lb))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"before")
        assert client.recv(1024) == b"before"
        heavier = lb.replaced(Resource("member", "m", "p", dict(member.attributes) | {"weight": 5}, "pool"))
        driver.update(Change("t2", "update", 2, 1, None, heavier, heavier))  # a reload with -sf
        client.sendall(b"after the reload")
        assert client.recv(1024) == b"after the reload"
    echo.close()
    for conn in accepted:
        conn.close()


def test_a_load_balancer_whose_haproxy_died_is_not_in_the_inventory(tmp_path: pathlib.Path) -> None:
    kit = TestHaproxyConformance()
    driver, tree = kit._driver(tmp_path), kit._tree()
    kit._create_all(driver, tree)
    assert {r.id for r in tree.walk()} <= set(driver.inventory())
    for pidfile in tmp_path.glob("**/haproxy.pid"):
        for pid in pidfile.read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    wait_for(lambda: not set(driver.inventory()) & {r.id for r in tree.walk()})
