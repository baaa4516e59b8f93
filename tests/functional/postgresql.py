"""A private, throw-away PostgreSQL cluster for the functional tests.

The cluster runs from Debian's postgresql package (see
tools/install-system-deps.sh) with its data directory, socket directory and
TCP port of its own, so it never touches the packaged cluster or another
test session's. PostgreSQL refuses to run as root; as root the cluster runs
as the ``postgres`` user the package creates.

Each deployment gets a database of its own (:meth:`PostgreSQLCluster.create_database`),
so tests sharing the cluster stay apart as they do on a shared RabbitMQ node
through virtual hosts.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg

INSTALL_HINT = "run tools/install-system-deps.sh to install Debian's postgresql"
_SUPERUSER = "tether"
_numbers = itertools.count(1)


def bin_dir() -> pathlib.Path | None:
    """The newest installed server's bin directory, or None."""
    versions = sorted(
        pathlib.Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def is_installed() -> bool:
    return bin_dir() is not None


class PostgreSQLCluster:
    """One ``postgres`` server on a free loopback port, trusting local users."""

    def __init__(self, base_dir: pathlib.Path | None = None) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError(f"no PostgreSQL server is installed: {INSTALL_HINT}")
        self.bin = found
        self.base = pathlib.Path(base_dir or tempfile.mkdtemp(prefix="tether-postgresql-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "run"
        self.log_file = self.base / "postgresql.log"
        self.port = 0
        self._user = "postgres" if os.geteuid() == 0 else None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{_SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def start(self, timeout: float = 60.0) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if not self.data.exists():
            self._own(self.base)
            self._run(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                _SUPERUSER,
                "--auth",
                "trust",
                "--encoding",
                "UTF8",
                "--locale",
                "C",
                "--no-sync",
            )
        self.port = _free_port()
        self._own(self.base)
        # Settings of a small production server, not of a benchmark: fsync
        # stays on, so a commit costs what it costs an operator.
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c max_connections=300",
                "-c shared_buffers=64MB",
                # Deadlocks are reported quickly: tests that provoke lock
                # waits should not sit on the default one second.
                "-c deadlock_timeout=200ms",
            ]
        )
        self._run(
            "pg_ctl",
            "start",
            "--pgdata",
            str(self.data),
            "--log",
            str(self.log_file),
            "--wait",
            f"--timeout={int(timeout)}",
            "-o",
            options,
        )
        self._wait_accepting(timeout)

    def stop(self, mode: str = "fast") -> None:
        if self.data.exists() and (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", mode, "--wait", check=False)

    def close(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its SQLAlchemy URL."""
        name = name or f"tether_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, database: str, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self._dsn(database), autocommit=True) as conn:
            cursor = conn.execute(sql)
            return cursor.fetchall() if cursor.description else []

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname={database}"

    def _wait_accepting(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not accept connections: {exc}\n{self.log()}") from exc
                time.sleep(0.1)

    def _own(self, path: pathlib.Path) -> None:
        if self._user is None:
            return
        entry = pwd.getpwnam(self._user)
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)

    def _run(self, program: str, *args: str, check: bool = True) -> None:
        argv = [str(self.bin / program), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.base)
        if check and result.returncode != 0:
            output = result.stderr or result.stdout
            raise RuntimeError(f"{program} failed ({result.returncode}): {output}\n{self.log()[-3000:]}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
