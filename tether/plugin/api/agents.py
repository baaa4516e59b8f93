"""``/v1/agents`` and ``/v1/providers``: the fleet, for administrators."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
from sqlalchemy import orm

from tether.common.capabilities import Capabilities
from tether.common.exceptions import InvalidInput, NotFound
from tether.common.states import TaskState
from tether.plugin.api import actions, views
from tether.plugin.api.deps import Api, JsonBody, authorized
from tether.plugin.context import RequestContext
from tether.plugin.db import action_queries, agent_queries
from tether.plugin.db.models import utcnow
from tether.plugin.tasks import operator_actions

Updater = Annotated[RequestContext, authorized("tether:agent:update")]

AGENT_UPDATE: dict[str, Any] = {
    "type": "object",
    "properties": {"admin_state_up": {"type": "boolean"}, "reason": actions.REASON},
    "required": ["admin_state_up"],
    "additionalProperties": False,
}


def _actions(session: orm.Session, agent_id: str) -> dict[str, Any]:
    """Who enabled or disabled the agent lately, and why."""
    return {"actions": [views.action(a) for a in action_queries.of_target(session, "agent", agent_id)]}


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
            return views.agent(row, api.agents.alive(row)) | _actions(session, agent_id)

    @r.put(
        "/v1/agents/{agent_id}",
        summary="Enable or disable an agent",
        openapi_extra=actions.body_doc(AGENT_UPDATE, required=True),
    )
    def update_agent(agent_id: str, ctx: Updater, body: JsonBody) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("admin_state_up"), bool):
            raise InvalidInput(
                'The body must be {"admin_state_up": true} or {"admin_state_up": false}, '
                'with a "reason" if you like.'
            )
        enable = body["admin_state_up"]
        reason = actions.reason_of({k: v for k, v in body.items() if k != "admin_state_up"}, "agent")
        with api.sessionmaker.begin() as session:
            row = agent_queries.get_agent(session, agent_id)
            if row is None:
                raise NotFound(kind="Agent", id=agent_id)
            row.admin_state_up = enable
            operator_actions.record(
                session, ctx, "enable" if enable else "disable", "agent", agent_id, reason=reason
            )
            session.flush()
            view = views.agent(row, api.agents.alive(row)) | _actions(session, agent_id)
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
