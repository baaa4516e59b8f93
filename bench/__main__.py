"""``make bench``: tether against the limit and its peers, in one run.

Starts a private RabbitMQ node, runs tether's plugin and agents as real
processes with the noop driver and measures, on this machine, now:

* API accepts per second and end-to-end tasks per second at full load
  (wrk, closed loop), with accept → finished latency and each role's CPU;
* latency at half of that rate (open loop);
* API accepts per second with no agent running;
* the resident memory of the plugin and the agents, idle and under load;
* the HTTP peers behind the same load (:mod:`bench.peers`): FastAPI +
  SQLAlchemy + Celery, and the neutron-lbaas shape over oslo.messaging;
* the baselines on the same broker and the same kind of database, without
  HTTP: a raw kombu round trip and Celery, each committing once per task at
  each end;
* latency against offered load for tether and the peers (:mod:`bench.curve`).

It prints a table, the targets pass or fail, and last one JSON line.
Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile
import time
from typing import Any

import psutil

from bench import backlog, curve, load, peers, scale
from bench.deployment import RssSampler, Tether, accept_floor, latencies, rss
from bench.scale import TETHER_ROLES, BrokerMeter, CpuMeter, IdleMeter, busy_cores, ms_per_task
from tests.functional.rabbitmq import RabbitMQNode

MB = 1024 * 1024
BODY = {"provider": "noop"}
PARTS = ("tether", "baselines", "peers")
#: tether's roles by the names of their processes; the plugin's halves are
#: its children (``--one-process`` has none, and shows 0 for both)
PLUGIN_HALVES = {
    **TETHER_ROLES,
    "plugin_api": "tether-plugin-api",
    "plugin_pipeline": "tether-plugin-pipeline",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each load phase")
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument(
        "--workers",
        type=int,
        default=32,
        help="driver calls per agent at once, and the baselines' worker processes",
    )
    parser.add_argument("--connections", type=int, default=32, help="wrk's connections at full load")
    parser.add_argument(
        "--one-process",
        action="store_true",
        help="tether's plugin in one process ([plugin] separate_pipeline = false)",
    )
    parser.add_argument(
        "--api-processes", type=int, help="the plugin's API processes ([plugin] api_processes)"
    )
    parser.add_argument("--baseline-tasks", type=int, default=3000)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--scale", default="1,2,4", help="agent counts of the scaling runs ('' skips them)")
    parser.add_argument("--scale-workers", type=int, default=2, help="workers per agent in the scaling runs")
    parser.add_argument("--delay-ms", type=int, default=20, help="the fake driver's time per call there")
    parser.add_argument(
        "--backlog", type=int, default=100_000, help="tasks queued behind absent agents (0 skips)"
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("bench/results"))
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"the parts to run, of {','.join(PARTS)} (targets that need a part left out are skipped)",
    )
    parser.add_argument(
        "--curve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="latency against offered load for tether and the peers",
    )
    parser.add_argument("--curve-seconds", type=float, default=5.0, help="length of each point of the curve")
    args = parser.parse_args(argv)
    parts = {part.strip() for part in args.only.split(",") if part.strip()}
    if parts - set(PARTS):
        parser.error(f"--only: unknown parts {', '.join(sorted(parts - set(PARTS)))}")

    plans: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="tether-bench-") as tmp,
        RabbitMQNode(pathlib.Path(tmp) / "rabbitmq") as node,
    ):
        root = pathlib.Path(tmp)
        results: dict[str, Any] = {"curve": []}
        if "tether" in parts:
            _gather(results, measure_tether(root / "tether", node, args))
            _gather(results, measure_no_agents(root / "no-agents", node, args))
        if "peers" in parts:
            _gather(results, measure_peers(root, node, args))
        if "baselines" in parts and not args.skip_baselines:
            _gather(results, measure_baselines(root, node, args))
        counts = tuple(int(n) for n in args.scale.split(",") if n.strip()) if "tether" in parts else ()
        rows = (
            scale.run(root, node, counts, args.scale_workers, args.delay_ms, args.seconds, latencies, _say)
            if counts
            else []
        )
        if args.backlog and "tether" in parts:
            (root / "backlog").mkdir()
            found = backlog.run(root / "backlog", node, args.backlog, args.agents, args.workers, BODY, _say)
            results |= {k: v for k, v in found.items() if k != "plans"}
            plans = found["plans"]
    if results["curve"]:
        data, picture = curve.write(results["curve"], args.out)
        print(f"latency against offered load: {data} and {picture}", file=sys.stderr)
    status = report(results)
    if rows:
        report_scale(rows, args.out)
    if plans:
        status |= report_backlog(results, plans)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    return status


def _gather(results: dict[str, Any], found: dict[str, Any]) -> None:
    results["curve"] += found.pop("curve", [])
    results |= found


def report_backlog(results: dict[str, Any], plans: list[dict[str, Any]]) -> int:
    print()
    first, last = results["accept_first_per_s"], results["accept_last_per_s"]
    print(
        f"backlog of {results['backlog']}: accepted at {first:.0f}/s in the first tenth, {last:.0f}/s in "
        f"the last; drained at {results['drain_per_s']:.0f} tasks/s, "
        f"{results['drain_statements_per_task']:.1f} SQL statements per task"
    )
    width = max(len(p["query"]) for p in plans)
    for plan in plans:
        steps = "; ".join(plan["plan"]) or "-"
        print(f"  {plan['query']:<{width}} {plan['ms']:>7.1f} ms  {steps}")
    scans = [p["query"] for p in plans if p["full_scans"]]
    slower = last < 0.8 * first
    print(
        f"{'FAIL' if slower else 'PASS'}  accepting keeps its pace as the backlog grows (last >= 0.8 first)"
    )
    named = f": {', '.join(scans)}" if scans else ""
    print(f"{'FAIL' if scans else 'PASS'}  no hot query reads a table whole{named}")
    return 1 if slower or scans else 0


def report_scale(rows: list[dict[str, float]], out: pathlib.Path) -> None:
    data, picture = scale.write(rows, out)
    print()
    heads = ("agents", "tasks/s", "bound", "p99 ms", "plugin", "agents", "broker", "idle")
    print(" ".join(f"{h:>8}" for h in heads))
    for r in rows:
        numbers = (r["agents"], r["tasks_per_s"], r["agent_bound_per_s"], r["p99_ms"])
        shares = (r["plugin_cpu"], r["agents_cpu"], r["broker_cpu"], r["idle_cpu"])
        print(" ".join(f"{n:>8.0f}" for n in numbers), " ".join(f"{s:>7.0f}%" for s in shares))
    print(f"(CPU in % of one core; {data} and {picture})")


def _tether(root: pathlib.Path, node: RabbitMQNode, args: argparse.Namespace, **options: Any) -> Tether:
    """A deployment in ``root`` as the command line asks for."""
    root.mkdir()
    return Tether(
        root,
        node,
        agents=args.agents,
        workers=args.workers,
        plugin_options={"separate_pipeline": not args.one_process}
        | ({"api_processes": args.api_processes} if args.api_processes else {}),
        **options,
    )


def measure_tether(root: pathlib.Path, node: RabbitMQNode, args: argparse.Namespace) -> dict[str, Any]:
    tether = _tether(root, node, args)
    tether.start()
    try:
        time.sleep(2)  # agents registered, connections warm
        processes = tether.processes()
        idle = rss(processes)
        _say(f"full load: wrk with {args.connections} connections for {args.seconds:.0f} s")
        statements = tether.db_statements()
        cpu = CpuMeter(tether, node, roles=PLUGIN_HALVES)
        started = _utcnow()
        with RssSampler(processes) as sampler:
            accepted = load.wrk(tether.url, args.seconds, args.connections, BODY)
            tether.wait_settled(600, progress=_progress("full load: draining"))
        used = cpu.stop()
        tasks = tether.tasks()
        full = latencies(tasks)
        # Accepts in each whole second while wrk ran, the drain left out.
        floor = accept_floor([t for t in tasks if t[0] >= started])
        statements = (tether.db_statements() - statements) / full["tasks"]
        rate = full["tasks_per_s"] / 2
        since = _utcnow()
        _say(f"half load: {rate:.0f} requests/s for {args.seconds:.0f} s")
        half_cpu = CpuMeter(tether, node, roles=PLUGIN_HALVES)
        sent = load.open_loop(tether.url, rate, args.seconds, BODY)
        tether.wait_settled(120, progress=_progress("half load: draining"))
        half_used = half_cpu.stop()
        half = latencies([t for t in tether.tasks() if t[0] >= since])
        points = (
            curve.run(tether, "tether", full["tasks_per_s"], args.curve_seconds, BODY, _say)
            if args.curve
            else []
        )
        settled = rss(processes)
    finally:
        tether.stop()
    return {
        "accepts_per_s": accepted["per_s"],
        "statements_per_task": statements,
        "accept_failures": accepted["failed"],
        "accepts_floor_per_s": floor,
        "tether_tasks": full["tasks"],
        "tether_tasks_per_s": full["tasks_per_s"],
        "p50_ms": full["p50_ms"],
        "p95_ms": full["p95_ms"],
        "p99_ms": full["p99_ms"],
        "half_load_rate": rate,
        "half_load_sent_per_s": sent["per_s"],
        "half_load_p50_ms": half["p50_ms"],
        "half_load_p99_ms": half["p99_ms"],
        # CPU milliseconds each role spent per task, wrk's load and the drain
        "cpu_ms_per_task": ms_per_task(used, tuple(PLUGIN_HALVES), int(full["tasks"])),
        # The same at half load, and how much of the machine it kept busy
        # (the load's sender included): a task alone in each batch and
        # wake-up costs more than its share of a full one.
        "half_load_cpu_ms_per_task": ms_per_task(half_used, tuple(PLUGIN_HALVES), int(half["tasks"])),
        "busy_cores": busy_cores(used),
        "half_load_busy_cores": busy_cores(half_used),
        "curve": points,
        "memory_mb": {
            name: {
                "idle": round(idle[name] / MB, 1),
                "peak": round(sampler.peak[name] / MB, 1),
                "after": round(settled[name] / MB, 1),
            }
            for name in processes
        },
    }


def measure_no_agents(root: pathlib.Path, node: RabbitMQNode, args: argparse.Namespace) -> dict[str, Any]:
    """The plugin alone: how fast it accepts when nothing else runs beside it."""
    # A backlog limit past anything wrk can send, so every answer is a 202 or a failure.
    tether = _tether(root, node, args, api_options={"max_backlog": 10**7})
    tether.start(with_agents=False)
    try:
        time.sleep(2)
        _say(f"no agents: wrk with {args.connections} connections for {args.seconds:.0f} s")
        accepted = load.wrk(tether.url, args.seconds, args.connections, BODY)
    finally:
        tether.stop()
    return {"accepts_no_agents_per_s": accepted["per_s"], "accept_failures_no_agents": accepted["failed"]}


def measure_peers(root: pathlib.Path, node: RabbitMQNode, args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = {"peers": {}, "curve": []}
    for stack in (peers.celery_stack(args.workers), peers.oslo_stack(args.workers)):
        measured = peers.measure(stack, root / stack.name, node, args, BODY, _say)
        found["curve"] += measured.pop("curve")
        found["peers"][stack.name] = measured
        found[f"{stack.name}_tasks_per_s"] = measured["tasks_per_s"]
    return found


def measure_baselines(root: pathlib.Path, node: RabbitMQNode, args: argparse.Namespace) -> dict[str, Any]:
    from bench.baselines import celery_baseline, raw_kombu

    found: dict[str, Any] = {}
    for name, module in (("raw", raw_kombu), ("celery", celery_baseline)):
        _say(f"baseline {name}: {args.baseline_tasks} tasks")
        _, amqp_url = node.add_vhost(f"bench-{name}")
        workdir = root / name
        workdir.mkdir()
        broker, idle = BrokerMeter(node), IdleMeter()
        measured = module.run(amqp_url, workdir, args.baseline_tasks, workers=args.workers)
        found[f"{name}_broker_ms_per_task"] = broker.stop() * 1000 / args.baseline_tasks
        # Start-up and shutdown included: an upper bound of what the run left unused.
        found[f"{name}_idle_pct"] = idle.stop()
        found[f"{name}_tasks_per_s"] = measured["tasks_per_s"]
        found[f"{name}_p99_ms"] = measured["p99_ms"]
    return found


#: (what, key, comparison, bound); a target whose key the run did not measure is skipped
TARGETS: tuple[tuple[str, str, str, float], ...] = (
    ("end to end ≥ 1.3x FastAPI + SQLAlchemy + Celery", "ratio_vs_celery_http", ">=", 1.3),
    ("end to end ≥ 2x the oslo.messaging stack", "ratio_vs_oslo_http", ">=", 2.0),
    ("end to end ≥ 1.0x the raw kombu round trip", "ratio_vs_raw", ">=", 1.0),
    ("plugin CPU ≤ 1.0 ms per task at full load", "plugin_cpu_ms_per_task", "<=", 1.0),
    ("agents' CPU ≤ 0.5 ms per task at full load", "agent_cpu_ms_per_task", "<=", 0.5),
    ("p99 accept → finished < 50 ms at half load", "half_load_p99_ms", "<", 50.0),
    ("≥ 2,000 accepts/s with no agent running", "accepts_no_agents_per_s", ">=", 2000.0),
    (
        "with agents running, accepts/s never below the end-to-end rate (slowest second ÷ end to end)",
        "accepts_floor_vs_end_to_end",
        ">=",
        1.0,
    ),
    ("an agent under load < 100 MB", "agent_peak_mb", "<", 100.0),
)

#: the final JSON line's keys, the older ones first
SUMMARY = (
    "tether_tasks_per_s",
    "raw_tasks_per_s",
    "celery_tasks_per_s",
    "ratio_vs_raw",
    "ratio_vs_celery",
    "p50_ms",
    "p99_ms",
    "half_load_p99_ms",
    "half_load_busy_cores",
    "accepts_per_s",
    "celery_http_tasks_per_s",
    "oslo_http_tasks_per_s",
    "ratio_vs_celery_http",
    "ratio_vs_oslo_http",
    "plugin_cpu_ms_per_task",
    "agent_cpu_ms_per_task",
    "accepts_no_agents_per_s",
)


def derive(results: dict[str, Any]) -> None:
    """The ratios and per-task figures the targets read, from what was measured."""
    tether = results.get("tether_tasks_per_s")
    for other in ("raw", "celery", "celery_http", "oslo_http"):
        if tether and f"{other}_tasks_per_s" in results:
            results[f"ratio_vs_{other}"] = tether / results[f"{other}_tasks_per_s"]
    if "cpu_ms_per_task" in results:
        results["plugin_cpu_ms_per_task"] = results["cpu_ms_per_task"]["plugin"]
        results["agent_cpu_ms_per_task"] = results["cpu_ms_per_task"]["agents"]
    if tether:
        results["accepts_floor_vs_end_to_end"] = results["accepts_floor_per_s"] / tether
    if "memory_mb" in results:
        agents = [m["peak"] for name, m in results["memory_mb"].items() if name.startswith("agent")]
        results["agent_peak_mb"] = max(agents)


def report(results: dict[str, Any]) -> int:
    derive(results)
    rows = _tether_rows(results) + _peer_rows(results) + _baseline_rows(results)
    width = max((len(label) for label, _ in rows), default=0)
    print()
    for label, value in rows:
        print(f"{label:<{width}}  {value:>18}")
    print()
    failed = 0
    for text, key, comparison, bound in TARGETS:
        if key not in results:
            print(f"SKIP  {text}")
            continue
        value = results[key]
        ok = {">=": value >= bound, "<=": value <= bound, "<": value < bound}[comparison]
        failed += not ok
        print(f"{'PASS' if ok else 'FAIL'}  {text}: {value:.2f}")
    print(json.dumps({key: round(results[key], 2) for key in SUMMARY if key in results}))
    return 1 if failed else 0


def _tether_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "accepts_no_agents_per_s" in results:
        rows.append(("API accepts/s with no agent running", f"{results['accepts_no_agents_per_s']:.0f}"))
    if "tether_tasks_per_s" not in results:
        return rows
    rows += [
        ("API accepts/s (full load)", f"{results['accepts_per_s']:.0f}"),
        ("  the slowest second of accepts while wrk ran", f"{results['accepts_floor_per_s']:.0f}"),
        ("tether end to end, tasks/s", f"{results['tether_tasks_per_s']:.0f}"),
        ("  SQL statements per task (plugin; agents write nothing)", f"{results['statements_per_task']:.1f}"),
        ("  accept → finished p50 / p95 / p99 ms", _ms(results, "p50_ms", "p95_ms", "p99_ms")),
        (
            f"  at half load ({results['half_load_rate']:.0f}/s) p50 / p99 ms",
            _ms(results, "half_load_p50_ms", "half_load_p99_ms"),
        ),
    ]
    rows += _budget_rows(results)
    if "half_load_cpu_ms_per_task" in results:
        half, cores = results["half_load_cpu_ms_per_task"], psutil.cpu_count() or 1
        rows += [
            (
                "  at half load, CPU ms per task: plugin / agents / broker",
                f"{half['plugin']:.2f} / {half['agents']:.2f} / {half['broker']:.2f}",
            ),
            (
                "  cores the machine kept busy: full / half load",
                f"{_ms(results, 'busy_cores', 'half_load_busy_cores', digits=2)} of {cores}",
            ),
        ]
    for name, memory in results["memory_mb"].items():
        rows.append((f"RSS {name} idle / peak MB", f"{memory['idle']:.0f} / {memory['peak']:.0f}"))
    return rows


def _peer_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for name, peer in results.get("peers", {}).items():
        rows += [
            (f"{peer['title']}", ""),
            ("  API accepts/s (full load)", f"{peer['accepts_per_s']:.0f}"),
            ("  end to end, tasks/s", f"{peer['tasks_per_s']:.0f}"),
            ("  accept → finished p50 / p99 ms", f"{peer['p50_ms']:.0f} / {peer['p99_ms']:.0f}"),
            (
                "  commits / rows written per task, by role",
                ", ".join(
                    f"{role} {w['commits']:.2f}/{w['rows']:.2f}"
                    for role, w in peer["writes_per_task"].items()
                ),
            ),
            (
                "  CPU ms per task, by role",
                ", ".join(f"{role} {ms:.2f}" for role, ms in peer["cpu_ms_per_task"].items()),
            ),
            ("  tasks finished ACTIVE / rows", f"{peer['active']} / {peer['rows']}"),
        ]
        if f"ratio_vs_{name}" in results:
            rows.append(("  tether ÷ this", f"{results[f'ratio_vs_{name}']:.2f}x"))
    return rows


def _baseline_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    if "raw_tasks_per_s" not in results:
        return []
    rows = [
        ("raw kombu round trip + per-task commits, tasks/s", f"{results['raw_tasks_per_s']:.0f}"),
        ("Celery acks_late + same writes (no HTTP), tasks/s", f"{results['celery_tasks_per_s']:.0f}"),
        (
            "broker CPU ms per task: raw / Celery",
            _ms(results, "raw_broker_ms_per_task", "celery_broker_ms_per_task", digits=2),
        ),
        ("machine idle, % of its cores: raw / Celery", _ms(results, "raw_idle_pct", "celery_idle_pct")),
    ]
    if "ratio_vs_raw" in results:
        rows.append(
            (
                "tether ÷ raw, tether ÷ Celery",
                f"{results['ratio_vs_raw']:.2f}x, {results['ratio_vs_celery']:.2f}x",
            )
        )
    return rows


def _budget_rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    """Where the CPU goes per task, and the rates it allows on this machine:
    what bounds tether whatever the plugin's own cost."""
    cost = results["cpu_ms_per_task"]
    cores = psutil.cpu_count() or 1
    results["ceiling_free_plugin_per_s"] = cores * 1000 / (cost["agents"] + cost["broker"])
    results["ceiling_broker_only_per_s"] = cores * 1000 / cost["broker"]
    rows = [
        (
            "  CPU ms per task: plugin / agents / broker",
            f"{cost['plugin']:.2f} / {cost['agents']:.2f} / {cost['broker']:.2f}",
        ),
        (
            "  the plugin's: API process / pipeline process",
            f"{cost['plugin_api']:.2f} / {cost['plugin_pipeline']:.2f}",
        ),
        (
            f"  ceiling on {cores} cores with a free plugin, tasks/s",
            f"{results['ceiling_free_plugin_per_s']:.0f}",
        ),
        ("  ceiling with only the broker working, tasks/s", f"{results['ceiling_broker_only_per_s']:.0f}"),
    ]
    return rows


def _ms(results: dict[str, Any], *keys: str, digits: int = 0) -> str:
    return " / ".join(f"{results[k]:.{digits}f}" for k in keys)


def _say(text: str) -> None:
    print(f"[bench] {text}", file=sys.stderr, flush=True)


def _progress(what: str) -> Any:
    last = [0.0]

    def show(left: int) -> None:
        if time.monotonic() - last[0] >= 2:
            last[0] = time.monotonic()
            _say(f"{what}, {left} tasks left")

    return show


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(tzinfo=None)


if __name__ == "__main__":
    sys.exit(main())
