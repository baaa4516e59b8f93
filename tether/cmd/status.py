"""``tether-manage status``: what an operator checks first.

Reads the plugin's database (no broker needed) and prints the schema
revision, the agents alive and dead, each provider's backlog and lag, the
unpublished outbox and the failures of the last hour. Exits 1 when something
needs a person: the schema is behind, or a provider has work and no live
agent.
"""

from __future__ import annotations

import datetime

import sqlalchemy as sa
from oslo_config import cfg

from tether.common.states import TaskState
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.db import agent_queries, migration, session
from tether.plugin.db.models import Outbox, Task, utcnow


def status_command(conf: cfg.ConfigOpts) -> int:
    engine = session.make_engine(conf, readonly=True)
    registry = AgentRegistry(conf.plugin.agent_down_time)
    alarms: list[str] = []
    current, head = migration.current(engine), migration.head()
    print(f"database  {engine.url.render_as_string(hide_password=True)}")
    print(f"schema    revision {current}" + ("" if current == head else f", behind {head}"))
    if current != head:
        alarms.append("the schema is behind: run tether-manage db upgrade")
        _report(alarms)
        return 1
    with session.make_sessionmaker(engine)() as db:
        now = utcnow()
        fleet = agent_queries.list_agents(db)
        print(
            f"\nagents    {sum(registry.alive(a, now) for a in fleet)} alive, "
            f"{sum(not registry.alive(a, now) for a in fleet)} dead"
        )
        for agent in fleet:
            state = "alive" if registry.alive(agent, now) else "DEAD"
            silent = (now - agent.last_heartbeat).total_seconds()
            enabled = "enabled" if agent.admin_state_up else "DISABLED"
            serves = ", ".join(agent.providers)
            print(
                f"  {agent.id:<24} {agent.host:<20} {state:<5} {enabled:<8} in flight {agent.in_flight:<4}"
                f" last report {silent:.0f} s ago  serves {serves}"
            )
        backlog = agent_queries.backlog(db)
        providers = sorted({p for p, _ in backlog} | {p for a in fleet for p in a.providers})
        print("\nproviders")
        for provider in providers:
            counts = {s: backlog.get((provider, s), 0) for s in ("QUEUED", "PENDING", "RUNNING")}
            live = len(registry.live_for(db, provider))
            print(
                f"  {provider:<12} live agents {live:<3} queued {counts['QUEUED']:<6} pending "
                f"{counts['PENDING']:<6} running {counts['RUNNING']}"
            )
            if sum(counts.values()) and not live:
                alarms.append(
                    f"provider {provider} has {sum(counts.values())} unfinished tasks and no live agent"
                )
        unsent = db.scalar(sa.select(sa.func.count()).select_from(Outbox)) or 0
        hour_ago = now - datetime.timedelta(hours=1)
        failed = db.execute(
            sa.select(Task.error_type, sa.func.count())
            .where(Task.state == TaskState.FAILED, Task.finished_at >= hour_ago)
            .group_by(Task.error_type)
        ).all()
        print(f"\noutbox    {unsent} message(s) committed and not yet published")
        print("failed in the last hour: " + (", ".join(f"{n} {t}" for t, n in failed) or "none"))
    _report(alarms)
    return 1 if alarms else 0


def _report(alarms: list[str]) -> None:
    print("\n" + ("\n".join(f"ATTENTION: {a}" for a in alarms) if alarms else "nothing needs attention"))
