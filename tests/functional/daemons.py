"""Real tether daemons as subprocesses, configured through ini files."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx2
import psycopg
import sqlalchemy as sa

from .postgresql import PostgreSQLCluster
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
        #: the process sent SIGTERM, if it was
        self._terminated: subprocess.Popen[bytes] | None = None

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

    def terminate(self) -> None:
        """SIGTERM, without waiting; once (a second SIGTERM tells uvicorn to force its way out)."""
        if self.process is not None and self.process.poll() is None and self._terminated is not self.process:
            self.process.send_signal(signal.SIGTERM)
            self._terminated = self.process

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait; the exit code (0 for a clean stop)."""
        assert self.process is not None
        self.terminate()
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


def restart_agent(agent: Daemon, timeout: float = 30.0) -> None:
    """Start a stopped or killed agent again and wait until it consumes, so
    that a SIGTERM after finds its handler installed and it stops cleanly."""
    before = agent.log().count(" consuming ")
    agent.start()
    deadline = time.monotonic() + timeout
    while agent.log().count(" consuming ") <= before:
        assert time.monotonic() < deadline, f"{agent.name} did not start consuming:\n{agent.log()}"
        time.sleep(0.1)


class Database:
    """The plugin database of each deployment: an SQLite file under its state
    path, or a new database on a shared PostgreSQL cluster."""

    def __init__(self, cluster: PostgreSQLCluster | None = None) -> None:
        self.cluster = cluster
        #: a database at the current schema to copy (a file, or a database's name)
        self._template: str | None = None

    @property
    def backend(self) -> str:
        return "sqlite" if self.cluster is None else "postgresql"

    def connection(self) -> str | None:
        """``[database] connection`` for a new deployment (None: the default)."""
        return None if self.cluster is None else self.cluster.create_database()

    def migrate(self, deployment: Deployment) -> None:
        """Bring ``deployment``'s database to the current schema.

        The first deployment of the session runs `tether-manage db upgrade`
        as an operator would; the others get a copy of what it made (SQLite's
        backup, PostgreSQL's ``CREATE DATABASE … TEMPLATE``), a second where
        the upgrade takes one. The migrations themselves are tested by
        tests/unit/test_migrations.py (SQLite), test_postgresql_locking.py
        (PostgreSQL) and the first upgrade here.
        """
        if self._template is None:
            subprocess.run(
                [str(BIN / "tether-manage"), "--config-file", str(deployment.plugin_ini), "db", "upgrade"],
                check=True,
                capture_output=True,
                timeout=120,
            )
            self._template = self._keep(deployment)
            return
        if self.cluster is None:
            target = deployment.sqlite_path
            target.parent.mkdir(parents=True, exist_ok=True)
            with (
                contextlib.closing(sqlite3.connect(self._template)) as source,
                contextlib.closing(sqlite3.connect(target)) as copy,
            ):
                source.backup(copy)
            return
        name = sa.make_url(deployment.connection).database
        self.cluster.execute("postgres", f'DROP DATABASE "{name}"')
        self.cluster.execute("postgres", f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')

    def _keep(self, deployment: Deployment) -> str:
        if self.cluster is None:
            template = deployment.root.parent / "migrated-template.sqlite"
            with (
                contextlib.closing(sqlite3.connect(deployment.sqlite_path)) as source,
                contextlib.closing(sqlite3.connect(template)) as copy,
            ):
                source.backup(copy)
            return str(template)
        template = "tether_migrated_template"
        source = sa.make_url(deployment.connection).database
        self.cluster.execute("postgres", f'CREATE DATABASE "{template}" TEMPLATE "{source}"')
        return template


class Deployment:
    """A plugin and its agents on a private broker, as an operator runs them."""

    def __init__(
        self,
        root: pathlib.Path,
        rabbitmq: RabbitMQNode,
        database: Database | None = None,
        agents: int = 2,
        agent_workers: int = 4,
        plugin_options: dict[str, Any] | None = None,
        api_options: dict[str, Any] | None = None,
        agent_options: dict[str, Any] | None = None,
        agent_sections: dict[str, dict[str, Any]] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        tls: bool = False,
        broker_host: str = "127.0.0.1",
        plugins: int = 1,
    ) -> None:
        """``sections`` go into every daemon's ini file; ``tls`` puts the
        node's TLS port in ``transport_url`` (the ssl options go in ``sections``);
        ``broker_host`` is the node's address in ``transport_url``, one of its
        ``extra_addresses`` for daemons in other network namespaces (netns.py);
        ``plugins`` replicas of tether-plugin share the database (PostgreSQL),
        each with its own API port (``plugin`` and ``http`` are the first's)."""
        self.root = root
        self.database = database or Database()
        #: ``[database] connection``; None for the default SQLite file
        self.connection = connection = self.database.connection()
        # Its own virtual host: deployments sharing the node stay apart.
        # Named only when asked for: a RabbitMQCluster stands in for a node here.
        where = {} if broker_host == "127.0.0.1" else {"host": broker_host}
        self.transport_url, self.amqp_url = rabbitmq.add_vhost(f"tether-{root.name}", tls=tls, **where)
        transport_url = self.transport_url
        #: every change the fake driver applied, as JSON lines, from all agents
        self.journal = root / "journal.jsonl"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        common = {"transport_url": transport_url}
        sections = dict(sections or {})
        if connection:
            sections["database"] = {"connection": connection, **sections.get("database", {})}
        self.plugins: list[Daemon] = []
        #: the API of each plugin replica
        self.base_urls: list[str] = []
        for i in range(1, plugins + 1):
            port = self.port if i == 1 else free_port()
            name = "plugin" if i == 1 else f"plugin-{i}"
            ini = write_ini(
                root / f"{name}.ini",
                {
                    "DEFAULT": common
                    | {"state_path": root / name}
                    | ({"host": f"plugin-{i}"} if plugins > 1 else {}),
                    "api": {"bind_port": port, **(api_options or {})},
                    "plugin": {"relay_interval": 0.2, **(plugin_options or {})},
                    **sections,
                },
            )
            self.plugins.append(
                Daemon(
                    "tether-plugin" if i == 1 else f"tether-plugin-{i}",
                    [str(BIN / "tether-plugin"), "--config-file", str(ini)],
                    root / f"{name}.log",
                )
            )
            self.base_urls.append(f"http://127.0.0.1:{port}")
        self.plugin = self.plugins[0]
        self.plugin_ini = root / "plugin.ini"
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
                        # One fake device for all agents, as a shared provider's is.
                        "device_dir": root / "fake-device",
                    },
                    **sections,
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

    @property
    def sqlite_path(self) -> pathlib.Path:
        """The plugin's database file when it is the default SQLite one."""
        return self.root / "plugin" / "tether.sqlite"

    def migrate(self) -> None:
        self.database.migrate(self)

    @contextlib.contextmanager
    def lock_database(self) -> Iterator[None]:
        """Hold the plugin's tables against writers (readers carry on), as a
        long migration or a stuck administrator's session would."""
        if self.connection is None:
            locker = sqlite3.connect(self.sqlite_path, isolation_level=None)
            try:
                locker.execute("BEGIN EXCLUSIVE")
                yield
            finally:
                locker.execute("ROLLBACK")
                locker.close()
            return
        url = sa.make_url(self.connection)
        with psycopg.connect(
            host=url.host, port=url.port, user=url.username, dbname=url.database
        ) as locker:  # a transaction, rolled back when the block ends
            locker.execute("LOCK TABLE resources, tasks, outbox IN EXCLUSIVE MODE")
            yield
            locker.rollback()

    def start(self) -> None:
        self.migrate()
        # The replicas start side by side, and the agents once they answer.
        for plugin in self.plugins:
            plugin.start()
        for replica in range(len(self.plugins)):
            self.wait_for_plugin(replica)
        for agent in self.agents:
            agent.start()

    def start_plugin(
        self, timeout: float = 60.0, env: dict[str, str] | None = None, replica: int = 0
    ) -> None:
        """Start one plugin replica (the first by default) and wait for its API."""
        self.plugins[replica].start(env)
        self.wait_for_plugin(replica, timeout)

    def wait_for_plugin(self, replica: int = 0, timeout: float = 60.0) -> None:
        """Wait until a plugin replica's API answers."""
        plugin = self.plugins[replica]
        deadline = time.monotonic() + timeout
        with httpx2.Client(base_url=self.base_urls[replica], timeout=5) as http:
            while time.monotonic() < deadline:
                if not plugin.alive:
                    raise AssertionError(f"{plugin.name} exited at start:\n{plugin.log()}")
                try:
                    if http.get("/v1").status_code == 200:
                        return
                except httpx2.TransportError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"{plugin.name} did not answer within {timeout} s:\n{plugin.log()}")

    def stop(self) -> dict[str, int]:
        """Stop the agents, then the plugins, each group at once; their exit codes."""
        codes: dict[str, int] = {}
        for group in (self.agents, self.plugins):
            started = [daemon for daemon in group if daemon.process is not None]
            for daemon in started:
                daemon.terminate()
            codes |= {daemon.name: daemon.stop() for daemon in started}
        self.http.close()
        return codes

    def logs(self) -> str:
        return "\n".join(f"----- {d.name} -----\n{d.log()[-6000:]}" for d in [*self.plugins, *self.agents])

    def lines_naming(self, words: Sequence[str], most: int = 40) -> str:
        """Each daemon's log lines, from its start, that name any of ``words``
        (task ids, say): what a log's tail no longer holds."""
        found = []
        for daemon in [*self.plugins, *self.agents]:
            lines = [line for line in daemon.log().splitlines() if any(w in line for w in words)]
            found.append(f"----- {daemon.name}: {len(lines)} line(s) -----\n" + "\n".join(lines[-most:]))
        return "\n".join(found)

    def wait_settled(self, timeout: float = 180.0) -> None:
        """Wait until no task is QUEUED, PENDING or RUNNING."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.unfinished():
                return
            time.sleep(0.2)
        left = self.unfinished()
        named = self.lines_naming([task["id"] for task in left][:20])
        raise AssertionError(f"tasks unfinished after {timeout} s: {left}\n{named}\n{self.logs()}")

    def every(self, collection: str) -> list[dict[str, Any]]:
        """Every item of ``/v1/<collection>``, a thousand to a page."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            page = self.http.get(f"/v1/{collection}", params=params).json()
            items.extend(page[collection])
            if not page["links"]:
                return items
            params["marker"] = items[-1]["id"]

    def unfinished(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = []
        for state in ("QUEUED", "PENDING", "RUNNING"):
            tasks += self.http.get("/v1/tasks", params={"state": state, "limit": 1000}).json()["tasks"]
        return tasks


@contextlib.contextmanager
def running(deployment: Deployment) -> Iterator[Deployment]:
    """Start ``deployment``; stop it after, and fail if a daemon did not stop cleanly."""
    deployment.start()
    try:
        yield deployment
    finally:
        codes = deployment.stop()
    assert set(codes.values()) == {0}, f"a daemon did not stop cleanly: {codes}\n{deployment.logs()}"
