"""Throughput and latency against the number of agents, with a slow driver.

The fake driver takes ``delay_ms`` per call, so each agent can finish at
most ``workers / delay`` tasks a second: while throughput grows with agents
they are the bound; where it stops growing, the CPU use of the plugin and
the broker, measured in the same run, says which is.
"""

from __future__ import annotations

import csv
import pathlib
import time
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from bench import load
from bench.deployment import Tether
from tests.functional.rabbitmq import RabbitMQNode

FIELDS = ("agents", "workers", "tasks", "tasks_per_s", "agent_bound_per_s", "p50_ms", "p99_ms")
CPU_FIELDS = ("plugin_cpu", "agents_cpu", "broker_cpu", "database_cpu", "idle_cpu")


def run(
    root: pathlib.Path,
    node: RabbitMQNode,
    agent_counts: tuple[int, ...],
    workers: int,
    delay_ms: int,
    seconds: float,
    latencies: Callable[[list[Any]], dict[str, float]],
    say: Callable[[str], None],
) -> list[dict[str, float]]:
    body = {"provider": "fake", "metadata": {"fake.delay_ms": str(delay_ms)}}
    rows = []
    for agents in agent_counts:
        say(f"scale: {agents} agent(s) x {workers} workers, fake driver at {delay_ms} ms, {seconds:.0f} s")
        (root / f"scale-{agents}").mkdir()
        tether = Tether(root / f"scale-{agents}", node, agents=agents, workers=workers)
        tether.start()
        try:
            time.sleep(2)
            cpu = CpuMeter(tether, node)
            load.wrk(tether.url, seconds, 32, body)
            tether.wait_settled(900)
            used = cpu.stop()
            measured = latencies(tether.tasks())
        finally:
            tether.stop()
        rows.append(
            {
                "agents": agents,
                "workers": workers,
                "tasks": measured["tasks"],
                "tasks_per_s": measured["tasks_per_s"],
                "agent_bound_per_s": agents * workers * 1000 / delay_ms,
                "p50_ms": measured["p50_ms"],
                "p99_ms": measured["p99_ms"],
                **used,
            }
        )
    return rows


class Measured(Protocol):
    """A deployment whose processes the meters read: tether's or a peer's."""

    def processes(self) -> dict[str, psutil.Process]: ...


#: tether's roles and the prefix of their process names
TETHER_ROLES = {"plugin": "tether-plugin", "agents": "agent"}


class CpuMeter:
    """Each role's share of the machine's CPU time between start and stop, in %
    of one core; idle_cpu is what no process used.

    :param database: the PostgreSQL postmaster, whose backends count as the
        database's (SQLite's work is the plugin's own).
    :param roles: role → prefix of its processes' names; ``stop`` reports
        ``<role>_cpu`` for each (tether's plugin and agents by default).
    """

    def __init__(
        self,
        system: Measured,
        node: RabbitMQNode,
        database: psutil.Process | None = None,
        roles: dict[str, str] | None = None,
    ) -> None:
        self.processes = system.processes()
        self.roles = roles or TETHER_ROLES
        beam = node.beam_pid()
        self.broker = psutil.Process(beam) if beam else None
        self.database = database
        self.start = {name: _cpu(p) for name, p in self._all().items()}
        self.machine = psutil.cpu_times()

    def _all(self) -> dict[str, psutil.Process]:
        found = dict(self.processes)
        if self.broker is not None:
            found["broker"] = self.broker
        if self.database is not None:
            # Backends live as long as the plugins' pooled connections.
            for process in [self.database, *self.database.children()]:
                found[f"database-{process.pid}"] = process
        return found

    def stop(self) -> dict[str, float]:
        end = {}
        for name, process in self._all().items():
            try:
                end[name] = _cpu(process)
            except psutil.Error:
                pass
        machine = psutil.cpu_times()
        wall = sum(machine) - sum(self.machine)
        cores = psutil.cpu_count() or 1
        used = {name: (end[name] - self.start.get(name, 0.0)) / wall * cores * 100 for name in end}
        return {
            "wall_s": wall / cores,
            **{
                f"{role}_cpu": sum(v for k, v in used.items() if k.startswith(prefix))
                for role, prefix in self.roles.items()
            },
            "broker_cpu": used.get("broker", 0.0),
            "database_cpu": sum(v for k, v in used.items() if k.startswith("database-")),
            "idle_cpu": (machine.idle - self.machine.idle) / wall * cores * 100,
        }


def ms_per_task(used: dict[str, float], roles: tuple[str, ...], tasks: int) -> dict[str, float]:
    """CPU milliseconds each role (and the broker) spent per task, from :meth:`CpuMeter.stop`."""
    return {role: used[f"{role}_cpu"] / 100 * used["wall_s"] * 1000 / tasks for role in (*roles, "broker")}


def busy_cores(used: dict[str, float]) -> float:
    """Cores the whole machine kept busy, from :meth:`CpuMeter.stop`."""
    return (psutil.cpu_count() or 1) - used["idle_cpu"] / 100


class BrokerMeter:
    """The broker's CPU seconds between start and stop."""

    def __init__(self, node: RabbitMQNode) -> None:
        beam = node.beam_pid()
        self.process = psutil.Process(beam) if beam else None
        self.start = _cpu(self.process) if self.process else 0.0

    def stop(self) -> float:
        return _cpu(self.process) - self.start if self.process else 0.0


class IdleMeter:
    """The machine's idle CPU between start and stop, in % of all its cores:
    whether a run kept the machine busy."""

    def __init__(self) -> None:
        self.start = psutil.cpu_times()

    def stop(self) -> float:
        end = psutil.cpu_times()
        return (end.idle - self.start.idle) / (sum(end) - sum(self.start)) * 100


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def write(rows: list[dict[str, float]], directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The raw data as CSV and a PNG of throughput and p99 against agents."""
    directory.mkdir(parents=True, exist_ok=True)
    data = directory / "scale.csv"
    with data.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=[*FIELDS, *CPU_FIELDS], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    agents = [r["agents"] for r in rows]
    figure, left = pyplot.subplots(figsize=(7, 4.2), dpi=120)
    left.plot(agents, [r["tasks_per_s"] for r in rows], "o-", color="tab:blue", label="tasks/s")
    left.plot(agents, [r["agent_bound_per_s"] for r in rows], ":", color="tab:gray", label="agents' bound")
    left.set_xlabel("agents")
    left.set_ylabel("tasks/s", color="tab:blue")
    left.set_xticks(agents)
    right = left.twinx()
    right.plot(agents, [r["p99_ms"] for r in rows], "s--", color="tab:red", label="p99 ms")
    right.set_ylabel("p99 accept → finished, ms", color="tab:red")
    for row in rows:
        left.annotate(
            f"plugin {row['plugin_cpu']:.0f}% · broker {row['broker_cpu']:.0f}%",
            (row["agents"], row["tasks_per_s"]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize=7,
        )
    lines = left.get_lines() + right.get_lines()
    left.legend(lines, [line.get_label() for line in lines], loc="upper center", fontsize=8)
    left.set_title(f"tether, fake driver at {rows[0]['workers']} workers per agent")
    figure.tight_layout()
    picture = directory / "scale.png"
    figure.savefig(picture)
    pyplot.close(figure)
    return data, picture
