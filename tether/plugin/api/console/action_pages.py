"""The console's actions: each a form that asks for confirmation and a
reason, shows the CLI command that does the same, and is carried out by
the API (:mod:`tether.plugin.api.console.api_call`).

| action | API | CLI |
|---|---|---|
| cancel a task | ``POST /v1/tasks/{id}/cancel`` | ``tether task cancel ID --reason …`` |
| retry a failed task | ``POST /v1/tasks/{id}/retry`` | ``tether task retry ID --reason …`` |
| re-apply a resource | ``POST /v1/<collection>/{id}/reapply`` | ``tether <type> reapply ID --reason …`` |
| disable, enable an agent | ``PUT /v1/agents/{id}`` | ``tether agent disable|enable ID --reason …`` |
| replay, purge dead letters | ``POST /v1/dead-letters/{verb}`` | ``tether dead-letter replay|purge …`` |
"""

from __future__ import annotations

import dataclasses
import logging
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Any

import fastapi
from fastapi.responses import RedirectResponse, Response

from tether.common.exceptions import InvalidInput, TetherError, Unauthorized
from tether.plugin.api.console import api_call, caller
from tether.plugin.api.console.render import back, cli, error, form, to_login
from tether.plugin.api.deps import Api

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Action:
    """What one button does: its API request and its CLI twin."""

    label: str
    method: str
    path: str
    body: dict[str, Any]
    cli: str


def _q(segment: str) -> str:
    # Ids come from the console's URL: one path segment each, whatever they hold.
    return urllib.parse.quote(segment, safe="")


def task_action(verb: str, task_id: str, why: str) -> Action:
    """``cancel`` or ``retry``."""
    return Action(
        verb.capitalize(),
        "POST",
        f"/v1/tasks/{_q(task_id)}/{verb}",
        {"reason": why},
        cli("tether", "task", verb, task_id, reason=why),
    )


def reapply(type_name: str, collection: str, resource_id: str, why: str) -> Action:
    return Action(
        "Re-apply",
        "POST",
        f"/v1/{collection}/{_q(resource_id)}/reapply",
        {"reason": why},
        cli("tether", type_name, "reapply", resource_id, reason=why),
    )


def agent_state(agent_id: str, up: bool, why: str) -> Action:
    body: dict[str, Any] = {"admin_state_up": up}
    if why:
        body["reason"] = why
    verb = "enable" if up else "disable"
    return Action(
        verb.capitalize(),
        "PUT",
        f"/v1/agents/{_q(agent_id)}",
        body,
        cli("tether", "agent", verb, agent_id, reason=why),
    )


def dead_letters(verb: str, error_text: str | None, why: str) -> Action:
    selection: dict[str, Any] = {"error": error_text} if error_text else {"all": True}
    words = ["tether", "dead-letter", verb, *(["--error", error_text] if error_text else ["--all"])]
    return Action(
        verb.capitalize(),
        "POST",
        f"/v1/dead-letters/{verb}",
        {**selection, "reason": why},
        cli(*words, reason=why),
    )


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix=caller.PATH, include_in_schema=False)

    @r.post("/tasks/{task_id}/{verb}")
    async def on_task(request: fastapi.Request, task_id: str, verb: str) -> Response:
        if verb not in ("cancel", "retry"):
            return error(request, 404, f"There is no task action {verb}; a task can be cancelled or retried.")
        return await carry_out(
            request, lambda f: task_action(verb, task_id, f["reason"]), f"{caller.PATH}/tasks/{task_id}"
        )

    @r.post("/resources/{type_name}/{resource_id}/reapply")
    async def on_resource(request: fastapi.Request, type_name: str, resource_id: str) -> Response:
        rtype = api.registry.get(type_name)
        if rtype is None:
            return error(request, 404, f"There is no resource type {type_name}.")
        return await carry_out(
            request,
            lambda f: reapply(rtype.name, rtype.collection, resource_id, f["reason"]),
            f"{caller.PATH}/resources",
        )

    @r.post("/agents/{agent_id}/{verb}")
    async def on_agent(request: fastapi.Request, agent_id: str, verb: str) -> Response:
        if verb not in ("enable", "disable"):
            return error(request, 404, "An agent can be enabled or disabled.")
        return await carry_out(
            request, lambda f: agent_state(agent_id, verb == "enable", f["reason"]), f"{caller.PATH}/agents"
        )

    @r.post("/dead-letters/{verb}")
    async def on_dead_letters(request: fastapi.Request, verb: str) -> Response:
        if verb not in ("replay", "purge"):
            return error(request, 404, "Dead letters can be replayed or purged.")
        return await carry_out(
            request,
            lambda f: dead_letters(verb, f.get("error") or None, f["reason"]),
            f"{caller.PATH}/dead-letters",
        )

    return r


async def carry_out(
    request: fastapi.Request, make: Callable[[Mapping[str, str]], Action], done: str
) -> Response:
    """Check the form, have the API do what ``make`` makes of it, and go back
    to the page (or to the task the action started)."""
    try:
        fields = await form(request)
        caller.check_form(request, fields.get("form_token", ""))
        if fields.get("confirm") != "yes":
            raise InvalidInput("The action was not confirmed; tick the box that confirms it.")
        fields["reason"] = fields.get("reason", "").strip()
        action = make(fields)
    except TetherError as exc:
        return error(request, exc.status, exc.msg)
    answer = await api_call.call(request, action.method, action.path, action.body)
    if answer.status == Unauthorized.status:
        return to_login(request, answer.message)
    if not answer.ok:
        return error(request, answer.status, f"{action.label}: {answer.message}")
    LOG.info("console: %s %s (%s)", action.method, action.path, action.cli)
    # A retry and a re-apply answer with the new task: what to look at next.
    made = answer.body.get("id") if isinstance(answer.body, dict) else None
    if made and action.path.endswith(("/retry", "/reapply")):
        return RedirectResponse(f"{caller.PATH}/tasks/{made}", status_code=303)
    return RedirectResponse(back(fields.get("next"), done), status_code=303)
