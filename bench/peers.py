"""The HTTP peers: the stacks a team would build instead of tether, behind
the same load.

Each peer runs as real processes on its own virtual host of the bench's
RabbitMQ node and its own SQLite file (WAL, ``synchronous=FULL``), with an
API under uvicorn (2 workers, as its docs advise for 2 cores) that COMMITs
the task before it answers 202:

- ``celery_http`` (:mod:`bench.baselines.celery_http`): FastAPI +
  SQLAlchemy + Celery; a ``celery worker`` records the outcome;
- ``oslo_http`` (:mod:`bench.baselines.oslo_http`): the neutron-lbaas shape;
  the API casts to an agent over oslo.messaging, the agent calls the
  plugin's RPC server, which records the outcome.

The bench measures them as it measures tether: wrk's accepts per second,
tasks per second from the first accept to the last finished, latency from
the rows' timestamps, each role's CPU, and the COMMITs and rows each role
wrote per task (counted by the processes themselves, :mod:`bench.baselines.peer_db`).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import pathlib
import sqlite3
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx2
import psutil

from bench import curve, load
from bench.baselines import db, peer_db
from bench.deployment import Settling, latencies, processes_of
from bench.scale import CpuMeter, ms_per_task
from tests.functional.daemons import Daemon, free_port
from tests.functional.rabbitmq import RabbitMQNode

_REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
#: uvicorn's workers for the peers' APIs: its docs' advice for 2 cores
API_WORKERS = 2
START_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Stack:
    """One peer: its API's ASGI app and its other roles' commands, started in order."""

    name: str
    title: str
    app: str
    #: role → argv; each touches BENCH_READY_FILE once it consumes
    backends: dict[str, list[str]]


def celery_stack(workers: int) -> Stack:
    # Celery's docs name eventlet/gevent for I/O-bound tasks, but this task's
    # I/O is SQLite's COMMIT (an fsync in a C call no green thread can yield
    # from), so the threads pool, the other choice for I/O-bound work: real
    # threads that release the GIL in that call, in one process (prefork on
    # 2 cores would hand every task to a child through a pipe). As many as
    # tether's agent workers.
    worker = [
        sys.executable, "-m", "celery", "-A", "bench.baselines.celery_http", "worker",
        "--pool=threads", f"--concurrency={workers}", "-n", "peer@localhost", "--loglevel=WARNING",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    return Stack(
        "celery_http", "FastAPI + SQLAlchemy + Celery", "bench.baselines.celery_http:api", {"worker": worker}
    )


def oslo_stack(workers: int) -> Stack:
    module = [sys.executable, "-m", "bench.baselines.oslo_http"]
    return Stack(
        "oslo_http",
        "FastAPI + oslo.messaging (neutron-lbaas)",
        "bench.baselines.oslo_http:api",
        {"rpc-server": [*module, "rpc-server"], "agent": [*module, "agent"]},
    )


class HttpPeer(Settling):
    """A peer's processes and what its database says."""

    def __init__(self, root: pathlib.Path, node: RabbitMQNode, stack: Stack, workers: int) -> None:
        self.root = root
        self.stack = stack
        root.mkdir(parents=True, exist_ok=True)
        transport_url, amqp_url = node.add_vhost(f"bench-{stack.name}")
        self.database = root / "peer.sqlite"
        db.create(self.database)
        self.counts_dir = root / "counts"
        self.counts_dir.mkdir()
        self.env = {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_REPO_ROOT), os.environ.get("PYTHONPATH")])),
            "BENCH_AMQP_URL": amqp_url,
            "BENCH_TRANSPORT_URL": transport_url,
            "BENCH_QUEUE": f"bench.{stack.name}",
            "BENCH_DB": str(self.database),
            "BENCH_COUNTS_DIR": str(self.counts_dir),
            "BENCH_AGENT_THREADS": str(workers),
        }
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/v1/loadbalancers"
        self._health = f"http://127.0.0.1:{port}/healthz"
        api = [
            sys.executable, "-m", "uvicorn", stack.app, "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(API_WORKERS), "--no-access-log", "--log-level", "warning",
        ]  # fmt: skip
        self.daemons = [Daemon(role, argv, root / f"{role}.log") for role, argv in stack.backends.items()]
        self.daemons.append(Daemon("api", api, root / "api.log"))

    def start(self) -> None:
        for daemon in self.daemons[:-1]:
            ready = self.root / f"ready-{daemon.name}"
            daemon.start(self.env | {"BENCH_READY_FILE": str(ready)})
            self._wait(daemon, ready.exists)
        api = self.daemons[-1]
        api.start(self.env)
        self._wait(api, self._answers)

    def _answers(self) -> bool:
        try:
            return httpx2.get(self._health, timeout=2).status_code == 200
        except httpx2.HTTPError:
            return False

    def _wait(self, daemon: Daemon, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not ready():
            if not daemon.alive:
                raise RuntimeError(
                    f"{self.stack.name} {daemon.name} exited at start:\n{daemon.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.stack.name} {daemon.name} not ready:\n{daemon.log()[-4000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        # The API first, so nothing new arrives while the rest stops.
        for daemon in reversed(self.daemons):
            if daemon.process is not None:
                try:
                    daemon.stop(timeout=30)
                except AssertionError as exc:
                    print(f"[bench] {exc}", file=sys.stderr)

    def processes(self) -> dict[str, psutil.Process]:
        """Each role's processes (uvicorn's workers are its children), named by role."""
        return processes_of(self.daemons)

    def tasks(self) -> list[tuple[datetime.datetime, datetime.datetime | None, str]]:
        with self._connect() as conn:
            rows = conn.execute("SELECT created_at, finished_at, state FROM tasks").fetchall()
        return [
            (_when(created), _when(finished) if finished else None, state)
            for created, finished, state in rows
        ]

    def unfinished(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT count(*) FROM tasks WHERE finished_at IS NULL").fetchone()[0])

    def states(self) -> dict[str, int]:
        with self._connect() as conn:
            return dict(conn.execute("SELECT state, count(*) FROM tasks GROUP BY state").fetchall())

    def logs(self) -> str:
        return "\n".join(f"----- {d.name} -----\n{d.log()[-4000:]}" for d in self.daemons)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)


def measure(
    stack: Stack,
    root: pathlib.Path,
    node: RabbitMQNode,
    args: argparse.Namespace,
    body: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Full load, then (with ``args.curve``) the latency curve, on one deployment.

    :raises RuntimeError: the peer lost a task (a row left unfinished, or
        fewer rows than wrk's 202s).
    """
    peer = HttpPeer(root, node, stack, args.workers)
    peer.start()
    points: list[dict[str, Any]] = []
    try:
        time.sleep(2)  # connections warm
        roles = {role: role for role in (*stack.backends, "api")}
        say(f"{stack.name}: wrk with {args.connections} connections for {args.seconds:.0f} s")
        cpu = CpuMeter(peer, node, roles=roles)
        accepted = load.wrk(peer.url, args.seconds, args.connections, body)
        peer.wait_settled(600, progress=lambda left: say(f"{stack.name}: draining, {left} left"))
        used = cpu.stop()
        full = latencies(peer.tasks())
        time.sleep(1)  # the processes' write counts on disk (peer_db.WriteCounter)
        cost = ms_per_task(used, tuple(roles), int(full["tasks"]))
        if args.curve:
            points = curve.run(peer, stack.name, full["tasks_per_s"], args.curve_seconds, body, say)
    finally:
        peer.stop()
    states = peer.states()
    rows = sum(states.values())
    if states.get("ACTIVE", 0) != rows or rows < accepted["requests"] - accepted["failed"]:
        raise RuntimeError(f"{stack.name} lost tasks: {states} after {accepted} from wrk")
    counts = peer_db.read_counts(peer.counts_dir)
    return {
        "title": stack.title,
        "accepts_per_s": accepted["per_s"],
        "accept_failures": accepted["failed"],
        "tasks": full["tasks"],
        "tasks_per_s": full["tasks_per_s"],
        "p50_ms": full["p50_ms"],
        "p99_ms": full["p99_ms"],
        "rows": rows,
        "active": states.get("ACTIVE", 0),
        "cpu_ms_per_task": cost,
        # Over every task of the deployment, the curve's included.
        "writes_per_task": {
            role: {"commits": n["commits"] / rows, "rows": n["rows"] / rows}
            for role, n in sorted(counts.items())
        },
        "curve": points,
    }


def _when(seconds: float) -> datetime.datetime:
    # Naive UTC, as tether's tasks hold their times.
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).replace(tzinfo=None)
