"""``/v1/dead-letters``: the messages nobody could use, for administrators:
list them grouped by error, send them back where they came from, or delete
them; what ``tether-manage dead-letters`` does, through
:mod:`tether.common.dead_letter_queue`.

Every route talks to the broker and so runs in a worker thread, never on
the event loop. Each replay and purge is recorded with who asked and why.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import fastapi

from tether.common import dead_letter_queue
from tether.common.dead_letter_reader import DeadLetter
from tether.common.exceptions import ConfigError, InvalidInput, ServiceUnavailable
from tether.common.transport import Broker
from tether.plugin.api import actions
from tether.plugin.api.deps import Api, JsonBody, authorized
from tether.plugin.context import RequestContext
from tether.plugin.tasks import operator_actions

T = TypeVar("T")

#: Which dead letters a replay or purge takes: one of ids, error or all.
SELECTION: dict[str, Any] = {
    "type": "object",
    "properties": {
        "ids": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\x00]*$"},
            "minItems": 1,
            "maxItems": 1000,
            "description": "The message ids of the dead letters to take.",
        },
        "error": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1000,
            "pattern": "^[^\\x00]*$",
            "description": "Every dead letter of this error, as the list groups them.",
        },
        "all": {"const": True, "description": "Every dead letter."},
        "reason": actions.REASON,
    },
    "additionalProperties": False,
    "oneOf": [{"required": ["ids"]}, {"required": ["error"]}, {"required": ["all"]}],
}

Lister = Annotated[RequestContext, authorized("tether:dead_letter:list")]
Replayer = Annotated[RequestContext, authorized("tether:dead_letter:replay")]
Purger = Annotated[RequestContext, authorized("tether:dead_letter:purge")]


def router(api: Api) -> fastapi.APIRouter:
    r = fastapi.APIRouter(prefix="/v1/dead-letters", tags=["dead-letter"])

    @r.get("", summary="List dead letters, grouped by error, leaving them in place")
    def list_(
        _ctx: Lister,
        limit: int = fastapi.Query(
            api.default_limit, ge=1, le=api.max_limit, description="Most dead letters read and listed."
        ),
    ) -> dict[str, Any]:
        total, letters = _on_broker(api, lambda broker: dead_letter_queue.peek(broker, limit))
        groups = collections.Counter(letter.reason for letter in letters)
        return {
            "dead_letters": [_view(letter) for letter in letters],
            "groups": [{"error": error, "count": count} for error, count in groups.most_common()],
            "total": total,
        }

    @r.post(
        "/replay",
        summary="Send dead letters back to the queue they came from",
        openapi_extra=actions.body_doc(SELECTION, required=True),
    )
    def replay(ctx: Replayer, body: JsonBody) -> dict[str, Any]:
        given = _selection(body, "replay")
        ids, error = given.get("ids", []), given.get("error")
        report = _on_broker(api, lambda broker: dead_letter_queue.requeue(broker, ids, error=error))
        done = {
            "replayed": len(report.requeued),
            "left": [{"id": letter.message_id, "why": why} for letter, why in report.left],
            "missing": report.missing,
            "stopped": report.stopped,
        }
        _record(api, ctx, "replay", given, done)
        return done

    @r.post(
        "/purge",
        summary="Delete dead letters for good",
        openapi_extra=actions.body_doc(SELECTION, required=True),
    )
    def purge(ctx: Purger, body: JsonBody) -> dict[str, Any]:
        given = _selection(body, "purge")
        done: dict[str, Any]
        if given.get("all"):
            done = {"purged": _on_broker(api, dead_letter_queue.purge), "missing": []}
        else:
            ids, error = given.get("ids", []), given.get("error")
            report = _on_broker(api, lambda broker: dead_letter_queue.discard(broker, ids, error))
            done = {"purged": len(report.discarded), "missing": report.missing}
        _record(api, ctx, "purge", given, done)
        return done

    return r


def _selection(body: Any, action: str) -> dict[str, Any]:
    """The body of a replay or purge, which names exactly one selection."""
    if isinstance(body, dict) and len({"ids", "error", "all"} & set(body)) != 1:
        raise InvalidInput(
            f'Say which dead letters to {action}: exactly one of "ids" (their message ids), '
            '"error" (a group\'s error, as GET /v1/dead-letters shows it) or "all": true; '
            'and a "reason" if you like.'
        )
    return actions.checked(body, SELECTION, action)


def _on_broker(api: Api, call: Callable[[Broker], T]) -> T:
    if api.broker is None:
        raise ServiceUnavailable("This API process has no broker to read the dead-letter queue from.")
    try:
        return call(api.broker)
    except ConfigError as exc:
        raise ServiceUnavailable(exc.msg) from exc


def _record(api: Api, ctx: RequestContext, action: str, given: dict[str, Any], done: dict[str, Any]) -> None:
    selection = {k: v for k, v in given.items() if k != "reason"}
    with api.sessionmaker.begin() as session:
        operator_actions.record(
            session,
            ctx,
            action,
            "dead-letters",
            None,
            reason=given.get("reason"),
            outcome={"selection": selection, **{k: v for k, v in done.items() if k != "left"}},
        )


def _view(letter: DeadLetter) -> dict[str, Any]:
    exchange, routing_key = letter.origin or (None, None)
    return {
        "id": letter.message_id,
        "queue": letter.queue,
        "error": letter.reason,
        "first_death_at": letter.dead_at,
        "task_id": letter.task_id,
        "exchange": exchange,
        "routing_key": routing_key,
        "size": letter.size,
        "preview": letter.preview,
        "unreadable": letter.unreadable,
    }
