"""Authentication as an operator runs it: a real tether-plugin process."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time

import httpx2
import pytest

from tests.functional.daemons import Daemon, free_port, write_ini

BIN = pathlib.Path(sys.executable).parent


def _plugin(root: pathlib.Path, api: dict[str, object]) -> tuple[pathlib.Path, Daemon]:
    ini = write_ini(
        root / "plugin.ini",
        {"DEFAULT": {"transport_url": "memory://", "state_path": root / "state"}, "api": api},
    )
    manage = [str(BIN / "tether-manage"), "--config-file", str(ini)]
    subprocess.run([*manage, "db", "upgrade"], check=True, capture_output=True, timeout=120)
    daemon = Daemon(
        "tether-plugin", [str(BIN / "tether-plugin"), "--config-file", str(ini)], root / "plugin.log"
    )
    return ini, daemon


def _token(ini: pathlib.Path, *args: str) -> str:
    made = subprocess.run(
        [str(BIN / "tether-manage"), "--config-file", str(ini), "token", "create", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return made.stdout.strip()


def test_noauth_on_a_public_address_stops_the_plugin_at_start(tmp_path: pathlib.Path) -> None:
    _, daemon = _plugin(tmp_path, {"bind_host": "0.0.0.0", "bind_port": free_port()})
    daemon.start()
    assert daemon.wait_exit(60) == 2
    assert "auth_strategy = noauth lets any caller act as any project" in daemon.log()


def test_sighup_applies_new_and_revoked_tokens_without_a_restart(tmp_path: pathlib.Path) -> None:
    port = free_port()
    tokens = tmp_path / "tokens.yaml"
    ini, daemon = _plugin(
        tmp_path, {"bind_host": "0.0.0.0", "bind_port": port, "auth_strategy": "token", "token_file": tokens}
    )
    first = _token(ini, "--project", "acme", "--role", "member", "--name", "first")
    daemon.start()
    api = httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 60
        while daemon.alive and time.monotonic() < deadline:
            try:
                api.get("/healthz")
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        assert api.get("/v1/loadbalancers", headers={"X-Auth-Token": first}).status_code == 200
        second = _token(ini, "--project", "acme", "--role", "reader", "--name", "second")
        assert api.get("/v1/loadbalancers", headers={"X-Auth-Token": second}).status_code == 401
        subprocess.run(
            [str(BIN / "tether-manage"), "--config-file", str(ini), "token", "revoke", "--name", "first"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        assert daemon.process is not None
        daemon.process.send_signal(signal.SIGHUP)

        def answers() -> tuple[int, int]:
            return (
                api.get("/v1/loadbalancers", headers={"X-Auth-Token": first}).status_code,
                api.get("/v1/loadbalancers", headers={"X-Auth-Token": second}).status_code,
            )

        deadline = time.monotonic() + 10
        while answers() != (401, 200) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answers() == (401, 200)
        assert daemon.alive
        assert "1 API tokens read again" in daemon.log()
        for secret in (first, second):
            assert secret not in daemon.log()
    finally:
        api.close()
        assert daemon.stop() == 0, daemon.log()


@pytest.mark.parametrize("bad", ["tokens: [", "tokens: [{sha256: nothex, project: p, roles: [member]}]"])
def test_a_bad_token_file_stops_the_plugin_at_start_with_what_is_wrong(
    tmp_path: pathlib.Path, bad: str
) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(bad)
    _, daemon = _plugin(tmp_path, {"bind_port": free_port(), "auth_strategy": "token", "token_file": tokens})
    daemon.start()
    assert daemon.wait_exit(60) == 2
    assert f"token file {tokens}" in daemon.log()
