"""A backlog behind absent agents: accepted without the API slowing down,
drained when agents start, and no query whose cost grows with the tables.

Accepts ``size`` changes with no agent running (wrk, in windows whose rates
are compared), shows the query plans of the plugin's hot queries on the
full tables, then starts the agents and measures the drain and the SQL
statements per task.
"""

from __future__ import annotations

import datetime
import pathlib
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm

from bench import load
from bench.deployment import Tether
from tests.functional.rabbitmq import RabbitMQNode
from tether.plugin.db import agent_queries, attempts, queries

WINDOW = 5.0
#: plan fragments that mean a table is read whole
_SCANS = ("SCAN tasks", "SCAN resources", "SCAN outbox", "SCAN task_attempts", "SCAN callbacks")


def run(
    root: pathlib.Path,
    node: RabbitMQNode,
    size: int,
    agents: int,
    workers: int,
    body: dict[str, Any],
    say: Callable[[str], None],
) -> dict[str, Any]:
    tether = Tether(
        root,
        node,
        agents=agents,
        workers=workers,
        api_options={"max_backlog": size * 2},
        # The operator's choice when agents may be away for long: without it
        # tasks unclaimed past pending_timeout (300 s) fail with NoLiveAgent.
        plugin_options={"pending_timeout": 86400},
    )
    tether.start(with_agents=False)
    try:
        rates = []
        accepted = 0
        while accepted < size:
            window = load.wrk(tether.url, WINDOW, 32, body)
            accepted += int(window["requests"] - window["failed"])
            rates.append(window["per_s"])
            say(f"backlog: {accepted} of {size} accepted, {window['per_s']:.0f}/s in the last {WINDOW:.0f} s")
        plans = explain(tether.database)
        statements = tether.db_statements()
        started = time.monotonic()
        tether.start_agents()
        tether.wait_settled(
            24 * 3600,
            progress=_every(10.0, lambda left: say(f"backlog: draining, {left} left")),
        )
        drained = time.monotonic() - started
        statements = (tether.db_statements() - statements) / accepted
    finally:
        tether.stop()
    tenth = max(1, len(rates) // 10)
    return {
        "backlog": accepted,
        "accept_first_per_s": sum(rates[:tenth]) / tenth,
        "accept_last_per_s": sum(rates[-tenth:]) / tenth,
        "drain_per_s": accepted / drained,
        "drain_statements_per_task": statements,
        "plans": plans,
    }


def explain(database: pathlib.Path) -> list[dict[str, Any]]:
    """The plan SQLite chooses for each hot query, run as the plugin runs it."""
    engine = sa.create_engine(f"sqlite:///file:{database}?mode=ro&uri=true")
    captured: list[tuple[str, Any]] = []
    sa.event.listen(
        engine, "before_cursor_execute", lambda _c, _cur, sql, params, *_: captured.append((sql, params))
    )
    now = datetime.datetime.now(datetime.UTC)
    calls: list[tuple[str, Callable[[orm.Session], Any]]] = [
        ("outbox relay: unsent rows", lambda s: queries.unsent_outbox(s, 200, now)),
        ("claim: a batch's tasks", lambda s: attempts.for_claims(s, ["x", "y"])),
        ("result: a batch's tasks", lambda s: attempts.for_results(s, ["x", "y"])),
        ("result: the busy trees of a batch", lambda s: attempts.busy_trees(s, ["x", "y"])),
        ("result: tasks locked one by one", lambda s: queries.tasks_for_update(s, ["x", "y"])),
        ("changes: in-flight tasks of a tree", lambda s: queries.in_flight_tasks(s, "x")),
        ("API: a resource", lambda s: queries.get_resource(s, "x", "p", "loadbalancer")),
        ("API: a page of resources", lambda s: queries.list_resources(s, "loadbalancer", "p", {}, 100, None)),
        ("API: a page of tasks", lambda s: queries.list_tasks(s, "p", {}, 100, None)),
        ("API: the latest task of a resource", lambda s: queries.latest_task(s, "x")),
        ("reaper: overdue tasks", lambda s: agent_queries.overdue(s, now, 100)),
        ("reaper: undispatched tasks", lambda s: agent_queries.undispatched(s, ["noop"])),
        ("reaper: idle trees with a queue", lambda s: agent_queries.idle_trees_with_queue(s)),
        ("backpressure: backlog by provider", lambda s: agent_queries.backlog(s)),
    ]
    found = []
    raw = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    with orm.Session(engine) as session:
        for name, call in calls:
            captured.clear()
            started = time.perf_counter()
            call(session)
            took = (time.perf_counter() - started) * 1000
            plan = []
            for sql, params in captured:
                plan += [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params or ())]
            scans = [step for step in plan if any(step.startswith(s) for s in _SCANS)]
            found.append({"query": name, "ms": took, "plan": plan, "full_scans": scans})
    raw.close()
    engine.dispose()
    return found


def _every(seconds: float, show: Callable[[int], None]) -> Callable[[int], None]:
    last = [0.0]

    def maybe(left: int) -> None:
        if time.monotonic() - last[0] >= seconds:
            last[0] = time.monotonic()
            show(left)

    return maybe
