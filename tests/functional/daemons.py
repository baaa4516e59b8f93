"""Real tether daemons as subprocesses, configured through ini files."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import httpx2

from .rabbitmq import RabbitMQNode

BIN = pathlib.Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_ini(path: pathlib.Path, sections: dict[str, dict[str, Any]]) -> pathlib.Path:
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {value}" for key, value in options.items())
        lines.append("")
    path.write_text("\n".join(lines))
    return path


class Daemon:
    """One tether process, its log kept in a file for the test's eyes."""

    def __init__(self, name: str, argv: list[str], log_path: pathlib.Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it for its life
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        log.close()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code (0 for a clean stop)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.name} ignored SIGTERM for {timeout} s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Deployment:
    """A plugin and its agents on a private broker, as an operator runs them."""

    def __init__(
        self,
        root: pathlib.Path,
        rabbitmq: RabbitMQNode,
        agents: int = 2,
        agent_workers: int = 4,
        plugin_options: dict[str, Any] | None = None,
        api_options: dict[str, Any] | None = None,
        agent_options: dict[str, Any] | None = None,
        agent_sections: dict[str, dict[str, Any]] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        tls: bool = False,
    ) -> None:
        """``sections`` go into every daemon's ini file; ``tls`` puts the
        node's TLS port in ``transport_url`` (the ssl options go in ``sections``)."""
        self.root = root
        # Its own virtual host: deployments sharing the node stay apart.
        self.transport_url, self.amqp_url = rabbitmq.add_vhost(f"tether-{root.name}", tls=tls)
        transport_url = self.transport_url
        #: every change the fake driver applied, as JSON lines, from all agents
        self.journal = root / "journal.jsonl"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        common = {"transport_url": transport_url}
        self.plugin_ini = write_ini(
            root / "plugin.ini",
            {
                "DEFAULT": common | {"state_path": root / "plugin"},
                "api": {"bind_port": self.port, **(api_options or {})},
                "plugin": {"relay_interval": 0.2, **(plugin_options or {})},
                **(sections or {}),
            },
        )
        self.plugin = Daemon(
            "tether-plugin",
            [str(BIN / "tether-plugin"), "--config-file", str(self.plugin_ini)],
            root / "plugin.log",
        )
        self.agents = []
        for i in range(1, agents + 1):
            ini = write_ini(
                root / f"agent-{i}.ini",
                {
                    "DEFAULT": common | {"state_path": root / f"agent-{i}"},
                    "agent": {
                        "providers": "noop,fake",
                        "agent_id": f"agent-{i}",
                        "workers": agent_workers,
                        "shutdown_timeout": 10,
                        **(agent_options or {}),
                    },
                    # Shared, so that fake.crash fires once per resource across agents.
                    "driver:fake": {
                        "crash_marker_dir": root / "fake-crash-markers",
                        "journal_path": self.journal,
                    },
                    **(sections or {}),
                    **(agent_sections or {}),
                },
            )
            self.agents.append(
                Daemon(
                    f"agent-{i}",
                    [str(BIN / "tether-agent"), "--config-file", str(ini)],
                    root / f"agent-{i}.log",
                )
            )
        self.http = httpx2.Client(base_url=self.base_url, timeout=30)

    def migrate(self) -> None:
        subprocess.run(
            [str(BIN / "tether-manage"), "--config-file", str(self.plugin_ini), "db", "upgrade"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.migrate()
        self.start_plugin()
        for agent in self.agents:
            agent.start()

    def start_plugin(self, timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.plugin.start(env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.plugin.alive:
                raise AssertionError(f"tether-plugin exited at start:\n{self.plugin.log()}")
            try:
                if self.http.get("/v1").status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"tether-plugin did not answer within {timeout} s:\n{self.plugin.log()}")

    def stop(self) -> dict[str, int]:
        codes = {agent.name: agent.stop() for agent in self.agents if agent.process is not None}
        codes["tether-plugin"] = self.plugin.stop()
        self.http.close()
        return codes

    def logs(self) -> str:
        return "\n".join(f"----- {d.name} -----\n{d.log()[-6000:]}" for d in [self.plugin, *self.agents])

    def wait_settled(self, timeout: float = 180.0) -> None:
        """Wait until no task is QUEUED, PENDING or RUNNING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unfinished():
                return
            time.sleep(0.2)
        raise AssertionError(f"tasks unfinished after {timeout} s: {self.unfinished()}\n{self.logs()}")

    def unfinished(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for state in ("QUEUED", "PENDING", "RUNNING"):
            tasks += self.http.get("/v1/tasks", params={"state": state, "limit": 1000}).json()["tasks"]
        return tasks
