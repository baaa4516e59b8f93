"""schemathesis against the OpenAPI document a real tether-plugin serves.

Every operation, with generated valid and invalid requests, under a time
budget: no 5xx, every answer matches the document (status, content type,
schema, Allow on 405), schema-valid requests accepted, schema-invalid ones
refused, and each operation refuses a request stripped of its token
(schemathesis's ``ignored_auth`` check). A member's token drives the
project operations, an admin's the fleet's. TETHER_API_FUZZ_SECONDS raises
the budget.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys
import time

import httpx2
import pytest

from tests.functional.daemons import Daemon, free_port, write_ini

BIN = pathlib.Path(sys.executable).parent
SECONDS = int(os.environ.get("TETHER_API_FUZZ_SECONDS", "25"))
ADMIN_TAGS = ("agent", "provider", "metrics", "dead-letter", "reapply")


@pytest.fixture(scope="module")
def plugin(tmp_path_factory: pytest.TempPathFactory) -> object:
    root = tmp_path_factory.mktemp("api-fuzz")
    tokens = root / "tokens.yaml"
    port = free_port()
    ini = write_ini(
        root / "plugin.ini",
        {
            # The API alone: no broker is needed to fuzz it.
            "DEFAULT": {"transport_url": "memory://", "state_path": root / "state"},
            "api": {"bind_port": port, "auth_strategy": "token", "token_file": tokens},
        },
    )
    manage = [str(BIN / "tether-manage"), "--config-file", str(ini)]
    subprocess.run([*manage, "db", "upgrade"], check=True, capture_output=True, timeout=120)

    def token(role: str) -> str:
        made = subprocess.run(
            [*manage, "token", "create", "--project", f"fuzz-{role}", "--role", role],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return made.stdout.strip()

    tokens_made = {"member": token("member"), "admin": token("admin")}
    daemon = Daemon(
        "tether-plugin", [str(BIN / "tether-plugin"), "--config-file", str(ini)], root / "plugin.log"
    )
    daemon.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and daemon.alive:
        try:
            if httpx2.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except httpx2.TransportError:
            time.sleep(0.1)
    else:
        raise AssertionError(f"tether-plugin did not start:\n{daemon.log()}")
    yield {"base": base, "daemon": daemon, "root": root, **tokens_made}
    daemon.stop()


def _schemathesis(
    cwd: pathlib.Path, base: str, token: str, seconds: int, *selection: str
) -> tuple[int, int, str]:
    run = subprocess.run(
        [
            str(BIN / "st"),
            "run",
            f"{base}/v1/openapi.json",
            "--checks",
            "all",
            "--header",
            f"X-Auth-Token: {token}",
            "--max-time",
            str(seconds),
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--seed",
            os.environ.get("TETHER_API_FUZZ_SEED", "20261122"),
            *selection,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        cwd=cwd,  # schemathesis keeps its state in the working directory
        env=os.environ | {"NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output = run.stdout + run.stderr
    generated = re.search(r"(\d+) generated", output)
    failures = re.search(r"(\d+) unique failures", output)
    assert generated, output[-3000:]
    return int(generated.group(1)), int(failures.group(1)) if failures else 0, output


def test_the_served_api_survives_schemathesis(
    plugin: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    base, root = str(plugin["base"]), pathlib.Path(str(plugin["root"]))
    # The two run side by side, each in a directory of its own for its state.
    (root / "member").mkdir(exist_ok=True)
    (root / "admin").mkdir(exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        member = pool.submit(
            _schemathesis, root / "member", base, str(plugin["member"]), SECONDS, *_exclude_tags()
        )
        admin = pool.submit(
            _schemathesis, root / "admin", base, str(plugin["admin"]), max(10, SECONDS // 3), *_include_tags()
        )
        runs = [("member", member.result()), ("admin", admin.result())]
    daemon = plugin["daemon"]
    assert isinstance(daemon, Daemon) and daemon.alive, "tether-plugin died under the fuzzer"
    with capsys.disabled():
        for who, (generated, failed, _) in runs:
            print(f"\nAPI fuzz ({who} token): {generated} cases tried, {failed} failed")
    for who, (_, failed, output) in runs:
        assert failed == 0, f"schemathesis with the {who} token:\n{output[-6000:]}"
    log = daemon.log()
    assert "Traceback" not in log and "failed unexpectedly" not in log, log[-4000:]


def _exclude_tags() -> list[str]:
    return [arg for tag in ADMIN_TAGS for arg in ("--exclude-tag", tag)]


def _include_tags() -> list[str]:
    return [arg for tag in ADMIN_TAGS for arg in ("--include-tag", tag)]
