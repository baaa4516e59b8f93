"""The plugin's accept path alone: accepts per second and the plugin's CPU
per accept, with no agent running (one declares the provider, then stops).

    .venv/bin/python -m bench.accepts --seconds 10 --runs 3
    .venv/bin/python -m bench.accepts --profile /tmp/accepts.svg   # py-spy --gil over one run

A private RabbitMQ node carries the relay's publishes, so the CPU counted is
everything the plugin spends on a task before an agent sees it: HTTP, the
group commit and the relay. Each run waits for the outbox to drain before
reading /proc, and runs of one sitting share a plugin, so compare runs taken
back to back (the machine is shared).

Each run also reads the broker's CPU, wrk's, and the whole machine's busy
time per accept: ``ceiling_per_s`` is the rate all cores would allow if
every one of them were busy with nothing but this load at that cost, the
bound no change to the plugin alone can pass.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import tempfile
import time

import psutil
import sqlalchemy as sa

from bench.deployment import Tether
from bench.load import wrk
from tests.functional.rabbitmq import RabbitMQNode

BODY = {"provider": "noop"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="the pipeline in the API's process ([plugin] separate_pipeline)",
    )
    parser.add_argument("--api-processes", type=int, help="[plugin] api_processes")
    parser.add_argument("--profile", type=pathlib.Path, help="py-spy --gil flame graph of the last run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tether-accepts-") as tmp, RabbitMQNode() as rabbitmq:
        tether = Tether(
            pathlib.Path(tmp),
            rabbitmq,
            agents=1,
            # Nobody drains the tasks: neither the reaper nor backpressure may step in.
            plugin_options={"pending_timeout": 86400, "separate_pipeline": not args.one_process}
            | ({"api_processes": args.api_processes} if args.api_processes else {}),
            api_options={"max_backlog": 10_000_000},
        )
        tether.start(with_agents=False)
        try:
            plugin = [p for name, p in tether.processes().items() if name.startswith("tether-plugin")]
            wrk(tether.url, 2, args.connections, BODY)  # warm up
            _drained(tether.db)
            broker = psutil.Process(rabbitmq.beam_pid())
            cores = os.cpu_count() or 1
            for run in range(args.runs):
                spy = None
                if args.profile and run == args.runs - 1:
                    spy = _py_spy(plugin[0].pid, args.profile, args.seconds)
                before = (_cpu(plugin), _cpu([broker]), _children_cpu(), _busy())
                load = wrk(tether.url, args.seconds, args.connections, BODY)
                _drained(tether.db)
                after = (_cpu(plugin), _cpu([broker]), _children_cpu(), _busy())
                if spy is not None:
                    spy.wait()
                plugin_cpu, broker_cpu, wrk_cpu, busy = (a - b for a, b in zip(after, before, strict=True))
                per_accept = 1000 / max(load["requests"] - load["failed"], 1)
                print(
                    json.dumps(
                        {
                            "accepts_per_s": round(load["per_s"]),
                            "cpu_ms_per_accept": round(plugin_cpu * per_accept, 3),
                            "broker_ms_per_accept": round(broker_cpu * per_accept, 3),
                            "wrk_ms_per_accept": round(wrk_cpu * per_accept, 3),
                            "machine_ms_per_accept": round(busy * per_accept, 3),
                            "ceiling_per_s": round(cores * 1000 / max(busy * per_accept, 1e-9)),
                            "failed": load["failed"],
                        }
                    ),
                    flush=True,
                )
        finally:
            tether.stop()


def _cpu(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def _children_cpu() -> float:
    # wrk runs as this process's child and is reaped before this is read.
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy() -> float:
    """CPU seconds the whole machine spent on anything but idling."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def _drained(db: sa.Engine, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with db.connect() as conn:
        while conn.execute(sa.text("SELECT count(*) FROM outbox")).scalar() and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.05)


def _py_spy(pid: int, output: pathlib.Path, seconds: float) -> subprocess.Popen[bytes]:
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is missing: pip install py-spy")
    command = [py_spy, "record", "--gil", "--subprocesses", "--pid", str(pid)]
    command += ["--duration", str(round(seconds))]
    command += ["--output", str(output)]
    if output.suffix != ".svg":
        command += ["--format", "raw"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
