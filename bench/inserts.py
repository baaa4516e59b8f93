"""The accept's write alone: what a group commit of new roots costs the
writer, with random (version 4) ids against time-ordered (version 7) ones,
on tables that already hold ``--rows`` accepts.

    .venv/bin/python -m bench.inserts                  # 100,000 rows, batches of 16
    .venv/bin/python -m bench.inserts --rows 0 --batch 4

Both run in this process, one after the other and then again, on SQLite
files like the plugin's (WAL, ``synchronous=FULL``, its write turn), with
the rows :func:`tether.plugin.tasks.lifecycle.roots.build` makes and the
group commit's own bulk insert. It prints the thread CPU and the wall time
per accept (the time the write turn is held), and the ratio of the two id
kinds taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import tempfile
import time
import uuid
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy import orm

from tether.plugin.db import group_commit, ids
from tether.plugin.db.models import Base
from tether.plugin.db.session import _sqlite_engine as sqlite_engine  # the plugin's own engine
from tether.plugin.db.session import make_sessionmaker
from tether.plugin.tasks.lifecycle import roots
from tether.plugin.tasks.lifecycle.retries import Policy

ATTRIBUTES = {"provider": "noop", "admin_state_up": True, "description": None, "vip_address": None}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="accepts in the tables before measuring")
    parser.add_argument("--batch", type=int, default=16, help="accepts per commit")
    parser.add_argument("--accepts", type=int, default=4_000, help="accepts measured per run")
    parser.add_argument("--runs", type=int, default=2, help="runs of each id kind, alternating")
    args = parser.parse_args()
    kinds: dict[str, Callable[[], str]] = {"v4": lambda: str(uuid.uuid4()), "v7": ids.new_id}
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory(prefix="tether-inserts-") as tmp:
        for run in range(args.runs):
            for kind, new_id in kinds.items():
                path = pathlib.Path(tmp) / f"{kind}-{run}.sqlite"
                measured = _measure(path, new_id, args.rows, args.batch, args.accepts)
                results[kind].append(measured)
                print(json.dumps({"ids": kind, "run": run + 1, **measured}), flush=True)
    best = {kind: min(r["cpu_ms_per_accept"] for r in runs) for kind, runs in results.items()}
    held = {kind: min(r["held_ms_per_accept"] for r in runs) for kind, runs in results.items()}
    print(
        f"rows {args.rows:,}, batches of {args.batch}: CPU per accept v4 {best['v4']:.3f} ms, "
        f"v7 {best['v7']:.3f} ms ({best['v7'] / best['v4']:.2f}x); write turn held per accept "
        f"v4 {held['v4']:.3f} ms, v7 {held['v7']:.3f} ms ({held['v7'] / held['v4']:.2f}x)"
    )


def _measure(
    path: pathlib.Path, new_id: Callable[[], str], rows: int, batch: int, accepts: int
) -> dict[str, float]:
    engine = sqlite_engine(sa.make_url(f"sqlite:///{path}"), busy_timeout=30.0, immediate=True)
    Base.metadata.create_all(engine)
    sessionmaker = make_sessionmaker(engine)
    original = ids.new_id
    ids.new_id = new_id  # roots.build takes its ids from here
    try:
        _insert(sessionmaker, _build(rows), 256)
        built = _build(accepts)
        cpu, wall = time.thread_time(), time.perf_counter()
        _insert(sessionmaker, built, batch)
        cpu, wall = time.thread_time() - cpu, time.perf_counter() - wall
    finally:
        ids.new_id = original
        engine.dispose()
    return {
        "cpu_ms_per_accept": round(1000 * cpu / accepts, 4),
        "held_ms_per_accept": round(1000 * wall / accepts, 4),
    }


def _build(count: int) -> list[roots.Accepted]:
    return [
        roots.build(Policy(), "loadbalancer", "bench", ATTRIBUTES | {"name": f"lb-{i}"}) for i in range(count)
    ]


def _insert(sessionmaker: orm.sessionmaker[orm.Session], accepted: list[roots.Accepted], batch: int) -> None:
    for start in range(0, len(accepted), batch):
        with sessionmaker.begin() as session:
            for one in accepted[start : start + batch]:
                for table, row in one.inserts:
                    group_commit.insert(session, table, row)
            # The group commit's own bulk insert, without its thread.
            group_commit._insert_deferred(session)  # noqa: SLF001


if __name__ == "__main__":
    main()
