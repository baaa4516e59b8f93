"""Callback URLs cannot turn the plugin into the caller's proxy."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import finish
from tether.plugin.outbound import egress
from tether.plugin.service import Plugin

PUBLIC_ADDRESS = "93.184.216.34"


class Server:
    """A local HTTP server whose every POST is answered by ``answer``."""

    def __init__(self, answer: Callable[[http.server.BaseHTTPRequestHandler], None]) -> None:
        self.hits = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                server.hits += 1
                self.rfile.read(int(self.headers["Content-Length"]))
                answer(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.close()


@pytest.fixture
def callbacks_on(conf: cfg.ConfigOpts, plugin: Plugin) -> Plugin:
    conf.set_override("secret", "s3cret", group="callbacks")
    conf.set_override("allowed_schemes", ["https", "http"], group="callbacks")
    conf.set_override("timeout", 0.5, group="callbacks")
    return Plugin(conf)


def _accept(plugin: Plugin, url: str) -> Any:
    with TestClient(plugin.app) as client:
        return client.post("/v1/loadbalancers", json={"provider": "noop"}, headers={"Callback-URL": url})


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://localhost/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private or reserved"),
        ("http://192.168.0.1/hook", "private or reserved"),
        ("http://100.100.100.200/latest/meta-data", "private or reserved"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://0.0.0.0/hook", "unicast"),
        ("http://224.0.0.1/hook", "unicast"),
    ],
)
def test_internal_addresses_are_refused_when_a_callback_is_accepted(
    callbacks_on: Plugin, url: str, why: str
) -> None:
    refused = _accept(callbacks_on, url)
    assert refused.status_code == 400, refused.text
    message = refused.json()["error"]["message"]
    assert why in message and "allowed_networks" in message, message


def test_an_operator_may_allow_an_internal_network(callbacks_on: Plugin, conf: cfg.ConfigOpts) -> None:
    conf.set_override("allowed_networks", ["10.0.0.0/8"], group="callbacks")
    assert _accept(Plugin(conf), "http://10.1.2.3/hook").status_code == 202
    assert _accept(Plugin(conf), "http://10.1.2.3:notaport/hook").status_code == 400


def test_credentials_and_unresolvable_hosts_are_refused(callbacks_on: Plugin) -> None:
    with_password = _accept(callbacks_on, "https://user:hunter2@example.com/hook")
    assert with_password.status_code == 400
    assert "credentials" in with_password.json()["error"]["message"]
    assert "hunter2" not in with_password.text
    unknown = _accept(callbacks_on, "https://no-such-host.invalid/hook")
    assert unknown.status_code == 400 and "does not resolve" in unknown.json()["error"]["message"]


def _deliver_once(plugin: Plugin, url: str, monkeypatch: pytest.MonkeyPatch, resolves_to: str) -> Any:
    """Accept a callback whose host resolves to a public address, finish its
    task, then deliver it with the host resolving to ``resolves_to``."""
    real = socket.getaddrinfo

    def fake(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        address = PUBLIC_ADDRESS if fake.accepting else resolves_to  # type: ignore[attr-defined]
        return real(address, port, *args, **kwargs) if host == "hooks.example" else real(host, port)

    fake.accepting = True  # type: ignore[attr-defined]
    monkeypatch.setattr(egress.socket, "getaddrinfo", fake)
    with TestClient(plugin.app) as client:
        made = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers={"Callback-URL": url})
        assert made.status_code == 202, made.text
        task_id = made.json()["task"]["id"]
        finish(plugin, task_id)
        fake.accepting = False  # type: ignore[attr-defined]
        started = time.monotonic()
        plugin.pipeline.callbacks.deliver_due()
        took = time.monotonic() - started
        return client.get(f"/v1/tasks/{task_id}").json()["callback"] | {"took": took}


def test_a_host_that_resolves_elsewhere_at_delivery_is_not_called(
    callbacks_on: Plugin, servers: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    servers.append(Server(lambda h: (h.send_response(204), h.end_headers())))
    callback = _deliver_once(
        callbacks_on, f"http://hooks.example:{servers[0].port}/hook", monkeypatch, "127.0.0.1"
    )
    assert callback["state"] == "FAILED" and callback["attempts"] == 1
    assert "resolves to 127.0.0.1, a loopback address" in callback["last_error"]
    assert servers[0].hits == 0


def test_the_connection_goes_to_the_checked_address_and_redirects_are_not_followed(
    callbacks_on: Plugin, conf: cfg.ConfigOpts, servers: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf.set_override("allowed_networks", ["127.0.0.0/8"], group="callbacks")
    target = Server(lambda h: (h.send_response(204), h.end_headers()))

    def redirect(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(307)
        handler.send_header("Location", f"http://127.0.0.1:{target.port}/elsewhere")
        handler.end_headers()

    servers.extend([target, Server(redirect)])
    callback = _deliver_once(
        Plugin(conf), f"http://hooks.example:{servers[1].port}/hook", monkeypatch, "127.0.0.1"
    )
    assert servers[1].hits == 1 and target.hits == 0
    assert callback["state"] == "PENDING"
    assert "answered 307; redirects are not followed" in callback["last_error"]


def test_a_slow_or_endless_receiver_is_cut_off(
    callbacks_on: Plugin, conf: cfg.ConfigOpts, servers: list[Server], monkeypatch: pytest.MonkeyPatch
) -> None:
    conf.set_override("allowed_networks", ["127.0.0.0/8"], group="callbacks")

    def endless(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        try:
            for _ in range(10_000):
                handler.wfile.write(b"x" * 8192)
                time.sleep(0.001)
        except OSError:
            pass  # the plugin hung up, as it should

    servers.append(Server(endless))
    callback = _deliver_once(
        Plugin(conf), f"http://hooks.example:{servers[0].port}/hook", monkeypatch, "127.0.0.1"
    )
    assert callback["state"] == "DELIVERED" and callback["took"] < 5
    servers.append(Server(lambda h: time.sleep(3)))
    callback = _deliver_once(
        Plugin(conf), f"http://hooks.example:{servers[1].port}/hook", monkeypatch, "127.0.0.1"
    )
    assert callback["state"] == "PENDING" and "timed out" in callback["last_error"]
    assert callback["took"] < 2.5
