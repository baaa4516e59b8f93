"""tether as an operator runs it, for measuring: real processes on a
private RabbitMQ node, and what their database and /proc say."""

from __future__ import annotations

import datetime
import pathlib
import statistics
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx2
import psutil
import sqlalchemy as sa

from tests.functional.daemons import Daemon, Database, Deployment
from tests.functional.rabbitmq import RabbitMQNode

TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED", "SUPERSEDED")


class Settling:
    """Waiting until a deployment has finished every task it accepted."""

    def unfinished(self) -> int:
        raise NotImplementedError

    def logs(self) -> str:
        return ""

    def wait_settled(self, timeout: float, progress: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while (left := self.unfinished()) and time.monotonic() < deadline:
            if progress:
                progress(left)
            time.sleep(0.5)
        if left:
            raise RuntimeError(f"{left} tasks unfinished after {timeout:.0f} s:\n{self.logs()}")


class Tether(Settling):
    """A plugin and ``agents`` agents; started without agents on request."""

    def __init__(
        self,
        root: pathlib.Path,
        rabbitmq: RabbitMQNode,
        agents: int = 1,
        workers: int = 8,
        plugin_options: dict[str, Any] | None = None,
        api_options: dict[str, Any] | None = None,
        agent_options: dict[str, Any] | None = None,
        sections: dict[str, dict[str, Any]] | None = None,
        database: Database | None = None,
        plugins: int = 1,
    ) -> None:
        self.deployment = Deployment(
            root,
            rabbitmq,
            database,
            plugins=plugins,
            agents=agents,
            agent_workers=workers,
            plugin_options=plugin_options,
            api_options=api_options,
            agent_options=agent_options,
            agent_sections=sections,
        )
        self.database = root / "plugin" / "tether.sqlite"
        self.db = sa.create_engine(self.deployment.connection or f"sqlite:///{self.database}")
        self.url = f"{self.deployment.base_url}/v1/loadbalancers"
        #: the resource collection on each plugin replica
        self.urls = [f"{base}/v1/loadbalancers" for base in self.deployment.base_urls]

    def start(self, with_agents: bool = True) -> None:
        """The plugins and agents; ``with_agents=False`` stops the agents
        once their state reports have declared their providers, so that the
        plugin publishes every task as it would to them, as in any deployment
        but a brand new one."""
        self.deployment.migrate()
        for replica in range(len(self.deployment.plugins)):
            self.deployment.start_plugin(replica=replica)
        self.start_agents()
        if not with_agents:
            self.wait_declared()
            for agent in self.deployment.agents:
                agent.stop()

    def wait_declared(self, timeout: float = 60.0) -> None:
        """Until every configured provider's placement is known to the plugin."""
        deadline = time.monotonic() + timeout
        url = f"{self.deployment.base_url}/v1/providers"
        while time.monotonic() < deadline:
            answer = httpx2.get(url, headers={"X-Roles": "admin"}, timeout=30).json()
            if all(p["placement"] for p in answer["providers"]):
                return
            time.sleep(0.1)
        raise SystemExit(f"agents left a provider undeclared for {timeout:.0f} s: {answer}")

    def start_agents(self) -> None:
        for agent in self.deployment.agents:
            agent.start()

    def stop(self) -> None:
        self.deployment.stop()
        self.db.dispose()

    def db_statements(self) -> float:
        """SQL statements the plugin has sent so far (its Prometheus counter)."""
        url = f"{self.deployment.base_url}/metrics"
        text = httpx2.get(url, headers={"X-Roles": "admin"}, timeout=30).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("tether_db_statements_total{")
        )

    def processes(self) -> dict[str, psutil.Process]:
        """Each daemon's processes (a plugin's API and pipeline are its children), named by role."""
        return processes_of([*self.deployment.plugins, *self.deployment.agents])

    def tasks(self) -> list[tuple[datetime.datetime, datetime.datetime | None, str]]:
        """(accepted, finished, state) of every task."""
        with self.db.connect() as db:
            rows = db.execute(sa.text("SELECT created_at, finished_at, state FROM tasks")).all()
        return [
            (_time(created), _time(finished) if finished else None, state)
            for created, finished, state in rows
        ]

    def unfinished(self) -> int:
        query = sa.text("SELECT count(*) FROM tasks WHERE state NOT IN :done").bindparams(
            sa.bindparam("done", expanding=True)
        )
        with self.db.connect() as db:
            return int(db.execute(query, {"done": list(TERMINAL)}).scalar_one())

    def logs(self) -> str:
        return self.deployment.logs()


def processes_of(daemons: Sequence[Daemon]) -> dict[str, psutil.Process]:
    """The live daemons' processes and their children, named by daemon and
    by role (a plugin's api and pipeline) or process id."""
    found: dict[str, psutil.Process] = {}
    for daemon in daemons:
        if daemon.process is None or not daemon.alive:
            continue
        leader = psutil.Process(daemon.process.pid)
        found[daemon.name] = leader
        for child in leader.children(recursive=True):
            found[f"{daemon.name}-{_role(child) or child.pid}"] = child
    return found


def _role(process: psutil.Process) -> str | None:
    """A plugin child's role (api, pipeline) from its environment."""
    try:
        return process.environ().get("TETHER_PLUGIN_ROLE")
    except psutil.Error:
        return None


def latencies(tasks: list[tuple[datetime.datetime, datetime.datetime | None, str]]) -> dict[str, float]:
    """Tasks finished per second and accept → finished latency of ``tasks``."""
    done = [(created, finished) for created, finished, _ in tasks if finished is not None]
    if not done:
        raise RuntimeError("no task finished")
    millis = sorted((finished - created).total_seconds() * 1000 for created, finished in done)
    span = (max(f for _, f in done) - min(c for c, _ in done)).total_seconds()
    quantiles = statistics.quantiles(millis, n=100, method="inclusive")
    return {
        "tasks": len(done),
        "tasks_per_s": len(done) / span,
        "p50_ms": quantiles[49],
        "p95_ms": quantiles[94],
        "p99_ms": quantiles[98],
    }


def accept_floor(tasks: list[tuple[datetime.datetime, datetime.datetime | None, str]]) -> float:
    """The fewest tasks accepted in any whole second between the first accept
    and the last: whether accepting ever fell behind while the pipeline ran."""
    created = sorted(created for created, _, _ in tasks)
    if not created:
        return 0.0
    whole = int((created[-1] - created[0]).total_seconds())
    if whole < 1:
        return float(len(created))
    counts = [0] * whole
    for moment in created:
        second = int((moment - created[0]).total_seconds())
        if second < whole:
            counts[second] += 1
    return float(min(counts))


def _time(value: str | datetime.datetime) -> datetime.datetime:
    # SQLite hands back text, PostgreSQL a datetime.
    return value if isinstance(value, datetime.datetime) else datetime.datetime.fromisoformat(value)


class RssSampler:
    """The largest resident set of each process while it runs."""

    def __init__(self, processes: dict[str, psutil.Process], interval: float = 0.2) -> None:
        self.processes = processes
        self.peak: dict[str, int] = {name: 0 for name in processes}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for name, process in self.processes.items():
                try:
                    self.peak[name] = max(self.peak[name], process.memory_info().rss)
                except psutil.Error:
                    pass


def rss(processes: dict[str, psutil.Process]) -> dict[str, int]:
    return {name: process.memory_info().rss for name, process in processes.items()}
