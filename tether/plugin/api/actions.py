"""The actions people take to fix what is stuck: retry a failed task
(``POST /v1/tasks/{id}/retry``) and re-apply a resource to its device
(``POST /v1/<collection>/{id}/reapply``); and the body every action takes,
an optional ``reason`` that is logged and kept in the task history."""

from __future__ import annotations

from typing import Annotated, Any

import fastapi
import jsonschema
from fastapi.responses import JSONResponse

from tether.common.exceptions import InvalidInput
from tether.common.resource_types import ResourceType
from tether.plugin.api import views
from tether.plugin.api.deps import Api, OptionalJsonBody, authorized
from tether.plugin.context import RequestContext
from tether.plugin.tasks import operator_actions, repairs

_NO_NUL = "^[^\\x00]*$"

REASON: dict[str, Any] = {
    "type": "string",
    "maxLength": operator_actions.MAX_REASON,
    "pattern": _NO_NUL,
    "description": "Why, in a line: logged, and kept in the task history with who asked.",
}
#: The body of an action that takes nothing but a reason.
REASON_ONLY: dict[str, Any] = {
    "type": "object",
    "properties": {"reason": REASON},
    "additionalProperties": False,
}


def body_doc(schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    """``openapi_extra`` describing a route's JSON body."""
    return {"requestBody": {"required": required, "content": {"application/json": {"schema": schema}}}}


def checked(body: Any, schema: dict[str, Any], what: str) -> dict[str, Any]:
    """``body`` (None for none: an empty object) once it matches ``schema``.

    :raises InvalidInput: naming where and what, for a body that does not.
    """
    given = {} if body is None else body
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(given))
    if error is not None:
        raise InvalidInput(
            f"Invalid {what} body at {error.json_path}: {str(error.message)[:300]}", path=error.json_path
        )
    result: dict[str, Any] = given
    return result


def reason_of(body: Any, what: str) -> str | None:
    """The ``reason`` of an action's body that may hold nothing else."""
    reason: str | None = checked(body, REASON_ONLY, what).get("reason")
    return reason


Retrier = Annotated[RequestContext, authorized("tether:task:retry")]


def accepted(view: dict[str, Any]) -> JSONResponse:
    return views.Answer(view, status_code=202, headers={"Location": f"/v1/tasks/{view['id']}"})


def tasks_router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix="/v1/tasks", tags=["task"])

    @r.post(
        "/{task_id}/retry",
        status_code=202,
        summary="Retry a FAILED task: a new task applying its resource's current desired state",
        openapi_extra=body_doc(REASON_ONLY),
    )
    def retry(task_id: str, ctx: Retrier, body: OptionalJsonBody) -> JSONResponse:
        reason = reason_of(body, "retry")
        with api.sessionmaker.begin() as session:
            task = repairs.retry(session, api.changes.policy, ctx, task_id)
            operator_actions.record(session, ctx, "retry", "task", task_id, task_id=task.id, reason=reason)
            view = views.task(task) | {"retry_of": task_id}
        api.wake_relay()
        return accepted(view)

    return r


def reapply_router(api: Api, rtype: ResourceType) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix=f"/v1/{rtype.collection}", tags=[rtype.name, "reapply"])
    allowed = authorized(f"tether:{rtype.name}:reapply")

    @r.post(
        "/{resource_id}/reapply",
        status_code=202,
        summary=f"Apply a {rtype.name}'s desired state to its device again (repairs drift or a lost device)",
        openapi_extra=body_doc(REASON_ONLY),
    )
    def reapply(resource_id: str, *, ctx: RequestContext = allowed, body: OptionalJsonBody) -> JSONResponse:
        reason = reason_of(body, "reapply")
        with api.sessionmaker.begin() as session:
            task = repairs.reapply(session, api.changes.policy, ctx, rtype, resource_id, reason)
            operator_actions.record(
                session, ctx, "reapply", rtype.name, resource_id, task_id=task.id, reason=reason
            )
            view = views.task(task)
        api.wake_relay()
        return accepted(view)

    return r
