"""The figures every baseline returns, and the command line they share."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any


def summarize(accepted: dict[str, float], recorded: dict[str, float]) -> dict[str, Any]:
    """Throughput and latency percentiles from per-task COMMIT times.

    :param accepted: task id → wall-clock time its accepting COMMIT returned.
    :param recorded: task id → wall-clock time its result's COMMIT returned.
    """
    missing = accepted.keys() - recorded.keys()
    if missing:
        raise ValueError(f"{len(missing)} tasks have no recorded result")
    latencies = sorted((recorded[task] - accepted[task]) * 1000.0 for task in accepted)
    seconds = max(recorded.values()) - min(accepted.values())
    return {
        "tasks": len(latencies),
        "seconds": round(seconds, 3),
        "tasks_per_s": round(len(latencies) / seconds, 1),
        "p50_ms": round(_percentile(latencies, 50), 2),
        "p95_ms": round(_percentile(latencies, 95), 2),
        "p99_ms": round(_percentile(latencies, 99), 2),
        "max_ms": round(latencies[-1], 2),
    }


def _percentile(ordered: list[float], pct: float) -> float:
    # Nearest rank: always one of the measured values.
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def main(
    run: Callable[..., dict[str, Any]],
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """``python -m bench.baselines.X AMQP_URL --tasks N``: print ``run``'s dict as JSON.

    Options that ``add_arguments`` adds are passed to ``run`` as keywords.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("amqp_url", help="amqp://user:pass@host:port/vhost")
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--workdir", type=pathlib.Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--synchronous", default="FULL", choices=["FULL", "NORMAL"])
    parser.add_argument("--timeout", type=float, help="seconds for the whole run")
    if add_arguments is not None:
        add_arguments(parser)
    options = vars(parser.parse_args())
    amqp_url, workdir, tasks = options.pop("amqp_url"), options.pop("workdir"), options.pop("tasks")
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="tether-bench-") as scratch:
            result = run(amqp_url, pathlib.Path(scratch), tasks, **options)
    else:
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(amqp_url, workdir, tasks, **options)
    print(json.dumps(result, indent=2))
