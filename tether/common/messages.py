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

Before the schema, a consumer checks what the broker says about the body: its
content type must be JSON, its encoding UTF-8, and its size at most
:data:`MAX_BODY_BYTES`. JSON's ``NaN``/``Infinity`` and strings holding lone
UTF-16 surrogates are refused too: they parse in Python but nothing
downstream (the database, the next JSON encoder) can carry them.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema

from tether.common.exceptions import MalformedMessage
from tether.common.states import Operation, Outcome

VERSION = 1
KNOWN_VERSIONS = frozenset({1})

#: Largest body a consumer reads. Work carries a whole resource tree, but the
#: API takes at most 1 MiB per change; past this, parsing alone would cost a
#: consumer more memory and time than any real message needs.
MAX_BODY_BYTES = 8 * 1024 * 1024

#: What tether's publishers set; absent is accepted for hand-made messages.
CONTENT_TYPE = "application/json"
#: kombu labels raw bytes "binary"; tether reads them as UTF-8 all the same.
_CONTENT_ENCODINGS = frozenset({"utf-8", "utf8", "binary"})

#: Attempts and generations are stored as 32-bit integers.
_MAX_COUNTER = 2**31 - 1

# Identifiers travel to the plugin in RPC calls and into the database:
# control characters (NUL above all) are refused by some databases.
_ID = {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[^\\x00-\\x1f]*$"}
_OPTIONAL_ID = {"anyOf": [_ID, {"type": "null"}]}
_COUNTER = {"type": "integer", "minimum": 1, "maximum": _MAX_COUNTER}

# An escaped surrogate in the text, paired or not; only then is a walk needed.
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")

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
                "id": _ID,
                "operation": {"enum": [op.value for op in Operation]},
                "resource_type": {"type": "string"},
                "resource_id": _ID,
                "root_id": _ID,
                "generation": _COUNTER,
                "attempt": _COUNTER,
                "project_id": {"type": "string"},
                "request_id": _OPTIONAL_ID,
                "provider": _ID,
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
        "task_id": _ID,
        "attempt": _COUNTER,
        "outcome": {"enum": [o.value for o in Outcome]},
        "agent_id": _ID,
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


def decode_work(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> Work:
    """The work a message carries.

    :raises MalformedMessage: saying what is wrong with it.
    """
    body = _decode(raw, _WORK_VALIDATOR, "work", content_type, content_encoding)
    return Work(task=body["task"], resource=body["resource"], tree=body["tree"])


def decode_result(
    raw: bytes | str, content_type: str | None = None, content_encoding: str | None = None
) -> Result:
    """The result a message carries.

    :raises MalformedMessage: saying what is wrong with it.
    """
    body = _decode(raw, _RESULT_VALIDATOR, "result", content_type, content_encoding)
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


def check_content(kind: str, content_type: str | None, content_encoding: str | None) -> None:
    """Refuse a message whose properties say it is not UTF-8 JSON.

    :raises MalformedMessage: naming the property, its value and what tether sends.
    """
    if content_type:
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type != CONTENT_TYPE:
            raise MalformedMessage(
                reason=f"the {kind} message has content type {content_type[:100]!r}; "
                f"tether reads only {CONTENT_TYPE}"
            )
    if content_encoding and content_encoding.strip().lower() not in _CONTENT_ENCODINGS:
        raise MalformedMessage(
            reason=f"the {kind} message has content encoding {content_encoding[:100]!r}; "
            "tether reads only UTF-8"
        )


def undecodable_reason(kind: str, headers: dict[str, Any] | None, exc: Exception) -> str:
    """Why the broker client could not hand a message over, for its dead-letter header."""
    compression = (headers or {}).get("compression")
    hint = (
        f"; its 'compression' header says {_shorten(str(compression), 100)!r}, "
        "but tether never compresses messages"
        if compression
        else ""
    )
    return f"the {kind} message cannot be decoded ({type(exc).__name__}: {_shorten(str(exc))}){hint}"


def _decode(
    raw: bytes | str,
    validator: jsonschema.Draft202012Validator,
    kind: str,
    content_type: str | None,
    content_encoding: str | None,
) -> Any:
    check_content(kind, content_type, content_encoding)
    size = len(raw.encode(errors="surrogatepass") if isinstance(raw, str) else raw)
    if size > MAX_BODY_BYTES:
        raise MalformedMessage(
            reason=f"the {kind} message is {size} bytes, more than the {MAX_BODY_BYTES} "
            "a consumer reads; nothing tether publishes is that large"
        )
    if isinstance(raw, bytes):
        try:
            # Strict: json.loads(bytes) would also take UTF-16, UTF-32 and
            # encoded surrogates, none of which tether sends.
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessage(
                reason=f"the {kind} message is not JSON: its bytes are not UTF-8 ({exc})"
            ) from exc
    if not raw.strip():
        raise MalformedMessage(reason=f"the {kind} message is empty")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        raise MalformedMessage(reason=f"the {kind} message is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedMessage(
            reason=f"the {kind} message is not a JSON object but a JSON {_json_type(body)}"
        )
    version = body.get("version")
    # Checked by type first: a list or an object is not hashable, and True == 1.
    if isinstance(version, bool) or not isinstance(version, int | float) or version not in KNOWN_VERSIONS:
        raise MalformedMessage(
            reason=f"{kind} message schema version {_short(version)} is unknown to this "
            f"process (it knows {sorted(KNOWN_VERSIONS)}); upgrade it to read the message"
            if version is not None
            else f"the {kind} message has no schema version; tether's messages carry "
            f"'version' (this process knows {sorted(KNOWN_VERSIONS)})"
        )
    try:
        error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    except RecursionError as exc:
        raise MalformedMessage(reason=f"the {kind} message is nested too deeply") from exc
    if error is not None:
        where = error.json_path
        raise MalformedMessage(
            reason=f"the {kind} message breaks its schema at {where}: {_shorten(error.message)}"
        )
    if _ESCAPED_SURROGATE.search(raw):
        where = _lone_surrogate(body)
        if where is not None:
            raise MalformedMessage(
                reason=f"the {kind} message holds a lone UTF-16 surrogate in a string at {where}; "
                "such a string cannot be stored or sent on"
            )
    return body


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _short(value: Any) -> str:
    return _shorten(repr(value))


def _shorten(text: str, limit: int = 300) -> str:
    """Keep reasons readable (and headers small) when a value is huge."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def _lone_surrogate(body: Any) -> str | None:
    """The JSON path of the first string (key or value) with a lone surrogate."""
    for path, text in _strings(body):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return path
    return None


def _strings(body: Any) -> Iterator[tuple[str, str]]:
    # Iterative: the schema check bounds the depth, but a walk needs no stack either way.
    stack: list[tuple[str, Any]] = [("$", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            yield path, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield path, key
                name = key if key.isascii() and key.isidentifier() else ascii(key)
                stack.append((f"{path}.{_shorten(name, 60)}", item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
