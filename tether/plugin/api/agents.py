"""``/v1/agents`` and ``/v1/providers``: the fleet, for administrators."""

from __future__ import annotations

from typing import Any

import fastapi

from tether.common.capabilities import Capabilities
from tether.common.exceptions import InvalidInput, NotFound
from tether.common.states import TaskState
from tether.plugin.api import views
from tether.plugin.api.deps import Api, JsonBody, authorized
from tether.plugin.db import agent_queries
from tether.plugin.db.models import utcnow


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(tags=["agent"])

    @r.get("/v1/agents", summary="List agents, alive or dead", dependencies=[authorized("tether:agent:list")])
    def list_agents() -> dict[str, Any]:
        now = utcnow()
        with api.reader() as session:
            rows = agent_queries.list_agents(session)
        return {"agents": [views.agent(a, api.agents.alive(a, now)) for a in rows]}

    @r.get("/v1/agents/{agent_id}", summary="Show an agent", dependencies=[authorized("tether:agent:get")])
    def show_agent(agent_id: str) -> dict[str, Any]:
        with api.reader() as session:
            row = agent_queries.get_agent(session, agent_id)
        if row is None:
            raise NotFound(kind="Agent", id=agent_id)
        return views.agent(row, api.agents.alive(row))

    @r.put(
        "/v1/agents/{agent_id}",
        summary="Enable or disable an agent",
        dependencies=[authorized("tether:agent:update")],
    )
    def update_agent(agent_id: str, body: JsonBody) -> dict[str, Any]:
        if (
            not isinstance(body, dict)
            or set(body) != {"admin_state_up"}
            or not isinstance(body["admin_state_up"], bool)
        ):
            raise InvalidInput('The body must be {"admin_state_up": true} or {"admin_state_up": false}.')
        with api.sessionmaker.begin() as session:
            row = agent_queries.get_agent(session, agent_id)
            if row is None:
                raise NotFound(kind="Agent", id=agent_id)
            row.admin_state_up = body["admin_state_up"]
            view = views.agent(row, api.agents.alive(row))
        return view

    @r.get(
        "/v1/providers",
        summary="List providers with their live agents and backlog",
        tags=["provider"],
        dependencies=[authorized("tether:provider:list")],
    )
    def list_providers() -> dict[str, Any]:
        now = utcnow()
        with api.reader() as session:
            fleet = agent_queries.list_agents(session)
            backlog = agent_queries.backlog(session)
            declared = api.changes.capabilities.declared(session) if api.changes.capabilities else {}
        providers = []
        for provider in api.changes.providers.names:
            serving = [a for a in fleet if provider in (a.providers or [])]
            live = [a.id for a in serving if a.admin_state_up and api.agents.alive(a, now)]
            counts = {
                s.value: backlog.get((provider, s.value), 0)
                for s in (TaskState.QUEUED, TaskState.PENDING, TaskState.RUNNING)
            }
            providers.append(
                {
                    "name": provider,
                    "placement": api.changes.providers.placement(provider),
                    "live_agents": live,
                    "agents": len(serving),
                    "backlog": counts[TaskState.QUEUED] + counts[TaskState.PENDING],
                    "tasks": counts,
                    # What a change is judged against: what at least one of its drivers supports.
                    "capabilities": (
                        Capabilities.widest(declared[provider]).to_wire() if provider in declared else None
                    ),
                }
            )
        return {"providers": providers}

    return r
