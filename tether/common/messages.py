"""The messages that cross the broker, their schemas and their versions.

Two kinds travel over kombu:

``work``
    plugin → agent: one attempt of a task, with the full desired state of the
    target resource and of its whole tree (drivers never get a diff).
``result``
    agent → plugin: what that attempt did.

Each message states its ``version``. A consumer that meets a version it does
not know, or a body that does not match the schema, dead-letters the message
with a log line that says why (:class:`MalformedMessage`). A new optional
field keeps the version; a changed or removed one bumps it, and consumers
accept every version they know.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import jsonschema

from tether.common.exceptions import MalformedMessage
from tether.common.states import Operation, Outcome

VERSION = 1
KNOWN_VERSIONS = frozenset({1})

_RESOURCE = {
    "type": "object",
    "required": ["type", "id", "project_id", "attributes"],
    "properties": {
        "type": {"type": "string"},
        "id": {"type": "string"},
        "project_id": {"type": "string"},
        "parent_id": {"type": ["string", "null"]},
        "attributes": {"type": "object"},
        "children": {"type": "array", "items": {"$ref": "#/$defs/resource"}},
    },
}

WORK_SCHEMA: dict[str, Any] = {
    "$defs": {"resource": _RESOURCE},
    "type": "object",
    "required": ["version", "kind", "task", "resource", "tree"],
    "properties": {
        "version": {"type": "integer"},
        "kind": {"const": "work"},
        "task": {
            "type": "object",
            "required": [
                "id",
                "operation",
                "resource_type",
                "resource_id",
                "root_id",
                "generation",
                "attempt",
                "project_id",
                "provider",
            ],
            "properties": {
                "id": {"type": "string"},
                "operation": {"enum": [op.value for op in Operation]},
                "resource_type": {"type": "string"},
                "resource_id": {"type": "string"},
                "root_id": {"type": "string"},
                "generation": {"type": "integer", "minimum": 1},
                "attempt": {"type": "integer", "minimum": 1},
                "project_id": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "provider": {"type": "string"},
            },
        },
        "resource": {"$ref": "#/$defs/resource"},
        "tree": {"$ref": "#/$defs/resource"},
    },
}

RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["version", "kind", "task_id", "attempt", "outcome", "agent_id"],
    "properties": {
        "version": {"type": "integer"},
        "kind": {"const": "result"},
        "task_id": {"type": "string"},
        "attempt": {"type": "integer", "minimum": 1},
        "outcome": {"enum": [o.value for o in Outcome]},
        "agent_id": {"type": "string"},
        "host": {"type": ["string", "null"]},
        "request_id": {"type": ["string", "null"]},
        "statuses": {
            "type": "object",
            "description": "Operating status the driver reported, by resource id.",
            "additionalProperties": {"type": "string"},
        },
        "error": {
            "type": ["object", "null"],
            "required": ["type", "message"],
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "retryable": {"type": "boolean"},
            },
        },
        "started_at": {"type": ["string", "null"]},
        "finished_at": {"type": ["string", "null"]},
    },
}

_WORK_VALIDATOR = jsonschema.Draft202012Validator(WORK_SCHEMA)
_RESULT_VALIDATOR = jsonschema.Draft202012Validator(RESULT_SCHEMA)


@dataclasses.dataclass(frozen=True)
class Work:
    """One attempt of a task, as an agent receives it."""

    task: dict[str, Any]
    resource: dict[str, Any]
    tree: dict[str, Any]

    @property
    def task_id(self) -> str:
        return str(self.task["id"])

    @property
    def request_id(self) -> str | None:
        return self.task.get("request_id")

    def to_body(self) -> dict[str, Any]:
        return {
            "version": VERSION,
            "kind": "work",
            "task": self.task,
            "resource": self.resource,
            "tree": self.tree,
        }


@dataclasses.dataclass(frozen=True)
class Result:
    """What one attempt of a task did, as the plugin records it."""

    task_id: str
    attempt: int
    outcome: Outcome
    agent_id: str
    host: str | None = None
    request_id: str | None = None
    statuses: dict[str, str] = dataclasses.field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    #: the same change may succeed later (device unreachable, driver timeout)
    retryable: bool = False
    started_at: str | None = None
    finished_at: str | None = None

    def to_body(self) -> dict[str, Any]:
        error = None
        if self.error_type is not None:
            error = {
                "type": self.error_type,
                "message": self.error_message or "",
                "retryable": self.retryable,
            }
        return {
            "version": VERSION,
            "kind": "result",
            "task_id": self.task_id,
            "attempt": self.attempt,
            "outcome": self.outcome.value,
            "agent_id": self.agent_id,
            "host": self.host,
            "request_id": self.request_id,
            "statuses": self.statuses,
            "error": error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


def now() -> str:
    """A timestamp as messages carry them."""
    return datetime.datetime.now(datetime.UTC).isoformat()


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def decode_work(raw: bytes | str) -> Work:
    body = _decode(raw, _WORK_VALIDATOR, "work")
    return Work(task=body["task"], resource=body["resource"], tree=body["tree"])


def decode_result(raw: bytes | str) -> Result:
    body = _decode(raw, _RESULT_VALIDATOR, "result")
    error = body.get("error") or {}
    return Result(
        task_id=body["task_id"],
        attempt=body["attempt"],
        outcome=Outcome(body["outcome"]),
        agent_id=body["agent_id"],
        host=body.get("host"),
        request_id=body.get("request_id"),
        statuses=dict(body.get("statuses") or {}),
        error_type=error.get("type"),
        error_message=error.get("message"),
        retryable=bool(error.get("retryable", False)),
        started_at=body.get("started_at"),
        finished_at=body.get("finished_at"),
    )


def _decode(raw: bytes | str, validator: jsonschema.Draft202012Validator, kind: str) -> Any:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MalformedMessage(reason=f"the {kind} message is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage(reason=f"the {kind} message is not a JSON object")
    version = body.get("version")
    if version not in KNOWN_VERSIONS:
        raise MalformedMessage(
            reason=f"{kind} message schema version {version!r} is unknown to this "
            f"process (it knows {sorted(KNOWN_VERSIONS)}); upgrade it to read the message"
        )
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    except RecursionError as exc:
        raise MalformedMessage(reason=f"the {kind} message is nested too deeply") from exc
    if error is not None:
        where = error.json_path
        raise MalformedMessage(reason=f"the {kind} message breaks its schema at {where}: {error.message}")
    return body
