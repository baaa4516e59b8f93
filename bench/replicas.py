"""tether on PostgreSQL with plugin replicas, against SQLite, in one run.

``python -m bench.replicas`` (``make bench-scaling``) starts a private
RabbitMQ node and a private PostgreSQL cluster, then measures each layout in
turn with the ``noop`` driver: wrk posts to every plugin replica at once for
``--seconds``; the run reports API accepts per second, tasks finished per
second end to end, latency from accept to finished, and each role's share of
the CPU, which says what saturates first. SQLite with one plugin is the
baseline of the same run (docs/scaling.md reads these figures).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import pathlib
import sys
import tempfile
import time
from typing import Any

import psutil

from bench import load
from bench.deployment import Tether, latencies
from bench.scale import CPU_FIELDS, CpuMeter
from tests.functional.daemons import Database
from tests.functional.postgresql import PostgreSQLCluster
from tests.functional.rabbitmq import RabbitMQNode

BODY = {"provider": "noop"}
#: (database, plugin replicas)
LAYOUTS = (("sqlite", 1), ("postgresql", 1), ("postgresql", 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each layout's load")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--workers", type=int, default=32, help="driver calls per agent at once")
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections, split over replicas")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/results"))
    args = parser.parse_args(argv)

    rows = []
    with tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp:
        root = pathlib.Path(tmp)
        cluster = PostgreSQLCluster()  # in a directory the postgres user can reach
        with RabbitMQNode(root / "rabbitmq") as node:
            cluster.start()
            try:
                postmaster = psutil.Process(_postmaster_pid(cluster))
                for backend, plugins in LAYOUTS:
                    database = Database(cluster if backend == "postgresql" else None)
                    name = f"{backend}-{plugins}"
                    _say(f"{name}: {plugins} plugin(s), {args.agents} agents, wrk for {args.seconds:.0f} s")
                    (root / name).mkdir()
                    rows.append(
                        measure(
                            root / name,
                            node,
                            database,
                            plugins,
                            args,
                            postmaster if backend == "postgresql" else None,
                        )
                        | {"database": backend, "plugins": plugins}
                    )
            finally:
                cluster.close()
    report(rows, args.out)
    return 0


def measure(
    root: pathlib.Path,
    node: RabbitMQNode,
    database: Database,
    plugins: int,
    args: argparse.Namespace,
    postmaster: psutil.Process | None,
) -> dict[str, Any]:
    tether = Tether(root, node, agents=args.agents, workers=args.workers, database=database, plugins=plugins)
    tether.start()
    try:
        time.sleep(2)  # agents registered, connections warm
        cpu = CpuMeter(tether, node, postmaster)
        share = max(1, args.connections // plugins)
        with concurrent.futures.ThreadPoolExecutor(plugins) as pool:
            answers = list(pool.map(lambda url: load.wrk(url, args.seconds, share, BODY), tether.urls))
        tether.wait_settled(600)
        used = cpu.stop()
        finished = latencies(tether.tasks())
    finally:
        tether.stop()
    return {
        "accepts_per_s": sum(a["per_s"] for a in answers),
        "refused": sum(a["failed"] for a in answers),
        **finished,
        **used,
    }


FIELDS = ("database", "plugins", "accepts_per_s", "refused", "tasks", "tasks_per_s", "p50_ms", "p99_ms")


def report(rows: list[dict[str, Any]], out: pathlib.Path) -> None:
    base = rows[0]["tasks_per_s"]
    heads = (
        "layout",
        "accepts/s",
        "tasks/s",
        "vs sqlite",
        "p50 ms",
        "p99 ms",
        "plugins",
        "agents",
        "broker",
        "database",
        "idle",
    )
    print()
    print(f"{heads[0]:<14}" + "".join(f"{h:>10}" for h in heads[1:]))
    for r in rows:
        numbers = (r["accepts_per_s"], r["tasks_per_s"])
        shares = (r["plugin_cpu"], r["agents_cpu"], r["broker_cpu"], r["database_cpu"], r["idle_cpu"])
        print(
            f"{r['database'] + ' x ' + str(r['plugins']):<14}"
            + "".join(f"{n:>10.0f}" for n in numbers)
            + f"{r['tasks_per_s'] / base:>10.2f}"
            + f"{r['p50_ms']:>10.0f}{r['p99_ms']:>10.0f}"
            + "".join(f"{s:>9.0f}%" for s in shares)
        )
    print("(CPU in % of one core over the load and its drain)")
    out.mkdir(parents=True, exist_ok=True)
    data = out / "replicas.csv"
    with data.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*FIELDS, *CPU_FIELDS], extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
    print(f"raw data: {data}")


def _postmaster_pid(cluster: PostgreSQLCluster) -> int:
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
