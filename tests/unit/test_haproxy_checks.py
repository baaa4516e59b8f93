"""What haproxy.cfg says, as a real HAProxy does it: every form of
expected_codes, checks over TLS, session persistence and member timeouts with
traffic (TLS termination and inserted cookies: tests/functional/test_haproxy.py),
and what the driver declares it supports."""

from __future__ import annotations

import contextlib
import http.server
import os
import pathlib
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.common import config
from tether.common.states import OperatingStatus
from tether.drivers.base import Callbacks, Change, NotSupported, Resource, driver_group
from tether.reference_drivers.haproxy import HaproxyDriver


@pytest.fixture
def tmp_path() -> Iterator[pathlib.Path]:
    # HAProxy refuses a stats socket path longer than 97 characters.
    path = pathlib.Path(tempfile.mkdtemp(prefix="tether-haproxy-"))
    yield path
    for pidfile in path.glob("**/haproxy.pid"):
        for pid in pidfile.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    shutil.rmtree(path, ignore_errors=True)


class _Server:
    """An HTTP server on loopback answering every request with ``status``,
    over TLS when given a context."""

    def __init__(self, status: int, context: ssl.SSLContext | None = None) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # TLS-HELLO checks hang up after the hello

        self.server = Server(("127.0.0.1", 0), Handler)
        if context is not None:
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _driver(tmp_path: pathlib.Path, certificate_dir: str | None = None) -> HaproxyDriver:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf.register_opts(HaproxyDriver.list_opts(), group=driver_group("haproxy"))
    conf([], project="tether", default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    if certificate_dir is not None:
        conf.set_override("certificate_dir", certificate_dir, group=driver_group("haproxy"))
    return HaproxyDriver(conf, Callbacks())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _checked(
    driver: HaproxyDriver, monitor: dict[str, Any], servers: list[_Server], expected: list[str]
) -> None:
    """HAProxy's checks of ``monitor`` on a pool of one member per server
    come to the ``expected`` operating status of each."""
    members = tuple(
        Resource("member", f"m-{i}", "p", {"address": "127.0.0.1", "protocol_port": s.port}, "pool")
        for i, s in enumerate(servers)
    )
    hm_attributes = {"delay": 1, "timeout": 1, "max_retries": 1, "max_retries_down": 1, **monitor}
    hm = Resource("healthmonitor", "hm", "p", hm_attributes, "pool")
    protocol = "HTTP" if monitor["type"] == "HTTP" else "TCP"
    pool_attributes = {"protocol": protocol, "lb_algorithm": "ROUND_ROBIN"}
    pool = Resource("pool", "pool", "p", pool_attributes, "lb", (*members, hm))
    listener = Resource("listener", "l", "p", {"protocol": protocol, "protocol_port": _free_port()}, "lb")
    lb_attributes = {"provider": "haproxy", "vip_address": "127.0.0.1"}
    lb = Resource("loadbalancer", "lb", "p", lb_attributes, None, (listener, pool))
    driver.create(Change("t", "create", 1, 1, None, lb, lb))
    want = {m.id: OperatingStatus(e) for m, e in zip(members, expected, strict=True)}
    # Servers start UP; one failed check (fall 1, every second) takes one DOWN.
    wait_for(lambda: {m: driver.status()[0].get(m) for m in want} == want, 10)


@pytest.mark.parametrize("codes", ["200,202", "201-204"])
def test_a_list_or_a_range_of_expected_codes_judges_every_code_in_it(
    tmp_path: pathlib.Path, codes: str
) -> None:
    servers = [_Server(202), _Server(500), _Server(200)]
    expected = ["ONLINE", "OFFLINE", "ONLINE" if codes == "200,202" else "OFFLINE"]
    try:
        _checked(_driver(tmp_path), {"type": "HTTP", "expected_codes": codes}, servers, expected)
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("kind", ["HTTPS", "TLS-HELLO"])
def test_https_and_tls_hello_checks_speak_tls(tmp_path: pathlib.Path, kind: str) -> None:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("member.example").configure_cert(context)
    servers = [_Server(200, context), _Server(200)]
    try:
        _checked(_driver(tmp_path), {"type": kind}, servers, ["ONLINE", "OFFLINE"])
    finally:
        for server in servers:
            server.stop()


def test_terminated_https_is_supported_only_with_a_certificate_directory(tmp_path: pathlib.Path) -> None:
    listener = Resource(
        "listener",
        "l",
        "p",
        {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": "lb.pem"},
        "lb",
    )
    lb = Resource("loadbalancer", "lb", "p", {"provider": "haproxy"}, None, (listener,))
    change = Change("t", "create", 1, 1, None, listener, lb)
    with pytest.raises(
        NotSupported, match=r"listener protocol TERMINATED_HTTPS is not supported by provider"
    ):
        _driver(tmp_path).check_supported(change)
    _driver(tmp_path, str(tmp_path)).check_supported(change)


@pytest.mark.parametrize(
    ("kind", "supported"), [("PING", False), ("UDP-CONNECT", False), ("TLS-HELLO", True)]
)
def test_monitor_types_haproxy_cannot_run_are_refused(
    tmp_path: pathlib.Path, kind: str, supported: bool
) -> None:
    refusal = (
        _driver(tmp_path)
        .current_capabilities()
        .judge("healthmonitor", {"type": kind, "delay": 1, "timeout": 1, "max_retries": 1}, {})
    )
    assert (refusal is None) == supported


class _Named:
    """An HTTP server on loopback answering with its name, setting the
    application's cookie ``JSESSIONID=<name>`` when the request has none, after
    ``delay`` seconds."""

    def __init__(self, name: str, delay: float = 0.0) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                time.sleep(delay)
                body = name.encode()
                self.send_response(200)
                if "JSESSIONID" not in (self.headers.get("Cookie") or ""):
                    self.send_header("Set-Cookie", f"JSESSIONID={name}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # HAProxy hung up on a slow answer

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def servers() -> Iterator[list[_Named]]:
    started = [_Named("a"), _Named("b"), _Named("slow", delay=1.0)]
    yield started
    for server in started:
        server.server.shutdown()
        server.server.server_close()


def _serve(tmp_path: pathlib.Path, pool: dict[str, Any], listener: dict[str, Any], *servers: _Named) -> int:
    """The port of a load balancer on loopback: one HTTP listener and a
    round-robin pool of ``servers``."""
    members = tuple(
        Resource("member", f"m-{s.port}", "p", {"address": "127.0.0.1", "protocol_port": s.port}, "pool")
        for s in servers
    )
    pool_attributes = {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", **pool}
    port = _free_port()
    lb = Resource(
        "loadbalancer",
        "lb",
        "p",
        {"provider": "haproxy", "vip_address": "127.0.0.1"},
        None,
        (
            Resource("listener", "l", "p", {"protocol": "HTTP", "protocol_port": port, **listener}, "lb"),
            Resource("pool", "pool", "p", pool_attributes, "lb", members),
        ),
    )
    _driver(tmp_path).create(Change("t", "create", 1, 1, None, lb, lb))
    return port


def _get(port: int, cookie: str | None = None) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/", headers={"Cookie": cookie} if cookie else {}
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return str(answer.read().decode())


def test_app_cookie_keeps_a_client_on_the_member_that_set_it(
    tmp_path: pathlib.Path, servers: list[_Named]
) -> None:
    persistence = {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"}
    port = _serve(tmp_path, {"session_persistence": persistence}, {}, *servers[:2])
    first = _get(port)  # the member's answer sets JSESSIONID=<its name>, which HAProxy learns
    assert {_get(port, f"JSESSIONID={first}") for _ in range(6)} == {first}
    assert {_get(port) for _ in range(6)} == {"a", "b"}  # those without a cookie are spread


def test_source_ip_keeps_a_client_address_on_one_member(
    tmp_path: pathlib.Path, servers: list[_Named]
) -> None:
    port = _serve(tmp_path, {"session_persistence": {"type": "SOURCE_IP"}}, {}, *servers[:2])
    assert len({_get(port) for _ in range(6)}) == 1


def test_timeout_member_data_cuts_a_member_that_stays_silent(
    tmp_path: pathlib.Path, servers: list[_Named]
) -> None:
    port = _serve(tmp_path, {}, {"timeout_member_data": 300}, servers[2])
    # The member answers after a second; the default timeout (50 s) would have waited for it.
    with pytest.raises(urllib.error.HTTPError) as answered:
        _get(port)
    answered.value.close()
    assert answered.value.code == 504
