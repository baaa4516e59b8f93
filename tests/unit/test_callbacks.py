"""Callbacks: a finished task POSTed, signed, to the URL its request named."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import finish, wait_for
from tether.common.messages import ReportedError
from tether.plugin.service import Plugin

SECRET = "s3cret"


class Receiver:
    """An HTTP endpoint that fails its first ``failures`` deliveries, then keeps what it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failures = failures
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.failures > 0:
                    receiver.failures -= 1
                    self.send_response(503)
                else:
                    receiver.received.append((dict(self.headers), body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/tether"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def armed(conf: cfg.ConfigOpts, plugin: Plugin) -> Iterator[Plugin]:
    conf.set_override("secret", SECRET, group="callbacks")
    conf.set_override("allowed_schemes", ["https", "http"], group="callbacks")
    conf.set_override("allowed_networks", ["127.0.0.0/8"], group="callbacks")
    conf.set_override("interval", 0.05, group="callbacks")
    armed = Plugin(conf)
    armed.pipeline.callbacks.start()
    yield armed
    armed.pipeline.callbacks.stop()


def _verify(headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the signature, refuse old timestamps."""
    timestamp = headers["X-Tether-Timestamp"]
    expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(timestamp)) < 300
    return fresh and hmac.compare_digest(headers["X-Tether-Signature"], f"sha256={expected}")


def test_a_finished_task_is_posted_signed_and_its_delivery_shown(armed: Plugin, receiver: Receiver) -> None:
    with TestClient(armed.app) as client:
        lb = client.post(
            "/v1/loadbalancers", json={"provider": "noop"}, headers={"Callback-URL": receiver.url}
        ).json()
        assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["callback"]["state"] == "WAITING"
        finish(armed, lb["task"]["id"])
        wait_for(lambda: receiver.received)
        headers, body = receiver.received[0]
        assert _verify(headers, body)
        assert json.loads(body)["id"] == lb["task"]["id"] and json.loads(body)["state"] == "SUCCEEDED"

        def delivered() -> Any:
            found = client.get(f"/v1/tasks/{lb['task']['id']}").json()["callback"]
            return found if found["state"] == "DELIVERED" else None

        callback = wait_for(delivered)
        assert callback["attempts"] == 1


def test_a_failing_receiver_is_retried_until_it_takes_the_callback(armed: Plugin) -> None:
    receiver = Receiver(failures=2)
    try:
        with TestClient(armed.app) as client:
            lb = client.post(
                "/v1/loadbalancers", json={"provider": "noop"}, headers={"Callback-URL": receiver.url}
            ).json()
            finish(armed, lb["task"]["id"], "FAILED", error=ReportedError(type="DriverError", message="nope"))
            with armed.sessionmaker.begin() as session:  # skip the backoff waits
                session.execute(sa.text("UPDATE callbacks SET next_attempt_at = '2000-01-01'"))
            for _ in range(3):
                armed.pipeline.callbacks.deliver_due()
                with armed.sessionmaker.begin() as session:
                    session.execute(sa.text("UPDATE callbacks SET next_attempt_at = '2000-01-01'"))
            callback = client.get(f"/v1/tasks/{lb['task']['id']}").json()["callback"]
            assert (callback["state"], callback["attempts"]) == ("DELIVERED", 3)
            assert json.loads(receiver.received[0][1])["state"] == "FAILED"
    finally:
        receiver.close()


def test_a_callback_is_refused_without_a_secret_to_sign_with(client: TestClient) -> None:
    refused = client.post(
        "/v1/loadbalancers",
        json={"provider": "noop"},
        headers={"Callback-URL": "https://example.invalid/hook"},
    )
    assert refused.status_code == 400 and "no [callbacks] secret" in refused.json()["error"]["message"]


def test_a_callback_url_must_use_an_allowed_scheme(armed: Plugin) -> None:
    with TestClient(armed.app) as signed:
        ftp = signed.post(
            "/v1/loadbalancers", json={"provider": "noop"}, headers={"Callback-URL": "ftp://x/y"}
        )
    assert ftp.status_code == 400 and "scheme https or http" in ftp.json()["error"]["message"]
