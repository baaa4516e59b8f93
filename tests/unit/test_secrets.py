"""Secrets stay secret: not in logs, errors or the API."""

from __future__ import annotations

import logging
import pathlib
import socket

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.plugin.api import auth
from tether.plugin.service import Plugin

TRANSPORT_PASSWORD = "transport-pw-8b1f"
CALLBACK_SECRET = "hmac-key-5d2e"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _reconnecting(caplog: pytest.LogCaptureFixture) -> set[str]:
    """The connection loops that logged a failure to reach 127.0.0.1."""
    return {
        record.getMessage().split(":")[0]
        for record in caplog.records
        if record.name == "tether.common.connection" and "127.0.0.1" in record.getMessage()
    }


def test_no_secret_reaches_the_logs_or_any_answer(
    conf: cfg.ConfigOpts, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = tmp_path / "tokens.yaml"
    token = auth.add_token(tokens, "acme", ["admin"])
    # A broker that is not there: the plugin logs its connection failures.
    url = f"rabbit://tether:{TRANSPORT_PASSWORD}@127.0.0.1:{_closed_port()}/"
    conf.set_override("transport_url", url)
    conf.set_override("auth_strategy", "token", group="api")
    conf.set_override("token_file", str(tokens), group="api")
    conf.set_override("secret", CALLBACK_SECRET, group="callbacks")
    caplog.set_level(logging.DEBUG)
    plugin = Plugin(conf, migrate=True)
    answers = []
    # oslo.messaging's RPC server would block start until the broker is up;
    # tether's own connection loops retry in the background and log why.
    plugin.pipeline.relay.start()
    plugin.pipeline.traffic.start()
    try:
        with TestClient(plugin.app) as client:
            admin = {"X-Auth-Token": token}
            for method, path, headers in (
                ("GET", "/readyz", {}),
                ("GET", "/v1/loadbalancers", {"X-Auth-Token": token[:-1]}),
                ("GET", "/v1/providers", admin),
                ("GET", "/metrics", admin),
                ("POST", "/v1/loadbalancers", admin | {"Callback-URL": "http://127.0.0.1/x"}),
                ("POST", "/v1/loadbalancers", admin),
            ):
                answers.append(client.request(method, path, headers=headers, json={"provider": "noop"}))
            # Both connection loops fail to connect, and log it.
            wait_for(lambda: {"outbox-relay", "agent-traffic"} <= _reconnecting(caplog))
            answers.append(client.get("/readyz"))
    finally:
        plugin.stop()
    assert "127.0.0.1" in caplog.text  # the broker's failures were logged...
    assert answers[0].status_code == 503
    assert any(a.status_code == 202 for a in answers)
    for secret in (TRANSPORT_PASSWORD, CALLBACK_SECRET, token, auth.token_digest(token)):
        assert secret not in caplog.text  # ...without the password
        for answer in answers:
            assert secret not in answer.text, answer.request.url
