"""The messages that cross the broker: typed structs with a schema version.

Two kinds travel over kombu:

``work``
    plugin → agent: one attempt of a task, with the full desired state of the
    target resource and of its whole tree (drivers never get a diff).
``result``
    agent → plugin: what that attempt did.
``results``
    agent → plugin: the results an agent's connection thread had at one tick,
    in one message (AMQP ``type`` property ``results``), once the plugin's
    answer to its state report said it reads them (``result_batches``).
    Each is read on its own, so one malformed result does not take the
    others down with it.

Each message states its ``version`` and its ``kind``. A new optional field
keeps the version; a changed or removed one bumps it, and consumers accept
every version they know. Fields a consumer does not know are ignored, so a
newer publisher's additions do not stop an older consumer. Work of version 2
(:data:`CASCADE_VERSION`) is a cascade delete, which a consumer must not
ignore: one that knows only version 1 dead-letters it instead of deleting the
target alone. The constraints
below are the ones the database and the RPC calls need; :mod:`tether.common.wire`
reads bodies into these types and words the refusals.
"""

from __future__ import annotations

import datetime
import enum
from typing import Annotated, Any, Literal, cast

import msgspec

from tether.common.states import Operation, Outcome

VERSION = 1
KNOWN_VERSIONS = frozenset({1})
#: The version of work that removes a subtree (``task.cascade``): an agent
#: that ignored the field would delete the target alone and leave its
#: children on the device, so such work states a version older agents refuse.
#: All other work stays version 1, which agents of either release read.
CASCADE_VERSION = 2
WORK_VERSIONS = frozenset({VERSION, CASCADE_VERSION})

# Identifiers travel to the plugin in RPC calls and into the database:
# control characters (NUL above all) are refused by some databases. \Z, not $:
# $ would let a trailing newline through.
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f]*\Z")]
#: Attempts and generations are stored as 32-bit integers.
Counter = Annotated[int, msgspec.Meta(ge=1, le=2**31 - 1)]


class _Implied(enum.IntEnum):
    VERSION = VERSION


class _ImpliedKind(enum.StrEnum):
    WORK = "work"
    RESULT = "result"


# A message built here gets these defaults; they encode as plain 1, "work",
# "result". msgspec fills a field a body left out with the very same default
# object, which is how a decoded message that never stated its version or
# kind is told from one that did: the wire requires both, the constructors
# should not.
_IMPLIED_VERSION: int = _Implied.VERSION
_IMPLIED_WORK = cast(Literal["work"], _ImpliedKind.WORK)
_IMPLIED_RESULT = cast(Literal["result"], _ImpliedKind.RESULT)


class WorkTask(msgspec.Struct, frozen=True, kw_only=True):
    """The task a work message is one attempt of."""

    id: Id
    operation: Operation
    resource_type: str
    resource_id: Id
    root_id: Id
    generation: Counter
    attempt: Counter
    project_id: str
    request_id: Id | None = None
    provider: Id
    #: a delete of the resource with everything under it in ``tree``
    cascade: bool = False


class DesiredResource(msgspec.Struct, frozen=True, kw_only=True):
    """The desired state of a resource and, in a tree, of its descendants."""

    type: str
    id: str
    project_id: str
    parent_id: str | None = None
    #: the resource's provisioning status when the plugin built the message;
    #: a plain string, so that a status a later release adds does not make
    #: this release refuse the message. None from plugins before it was sent.
    provisioning_status: str | None = None
    #: the newest generation a driver reported applied: 0 when no device has
    #: ever held the resource (its create has not succeeded yet). None from
    #: plugins before it was sent.
    applied_generation: int | None = None
    attributes: dict[str, Any]
    children: list[DesiredResource] = []


class Work(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt of a task, as an agent receives it."""

    version: int = _IMPLIED_VERSION
    kind: Literal["work"] = _IMPLIED_WORK
    task: WorkTask
    resource: DesiredResource
    tree: DesiredResource

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def request_id(self) -> str | None:
        return self.task.request_id


class ReportedError(msgspec.Struct, frozen=True, kw_only=True):
    """Why an attempt failed, in words for the API user."""

    type: str
    message: str
    #: the same change may succeed later (device unreachable, driver timeout)
    retryable: bool = False


class Result(msgspec.Struct, frozen=True, kw_only=True):
    """What one attempt of a task did, as the plugin records it."""

    version: int = _IMPLIED_VERSION
    kind: Literal["result"] = _IMPLIED_RESULT
    task_id: Id
    attempt: Counter
    outcome: Outcome
    agent_id: Id
    host: str | None = None
    request_id: str | None = None
    #: operating status the driver reported, by resource id
    statuses: dict[str, str] = {}
    error: ReportedError | None = None
    started_at: str | None = None
    finished_at: str | None = None
    #: a failed operation of steps took back every step it had done: the
    #: device holds what it held before (plugins before 0.3 ignore it)
    undone: bool = False


#: Results one ``results`` message carries at most.
MAX_RESULTS = 256
#: The AMQP ``type`` property of a ``results`` message; a result's has none.
RESULTS_TYPE = "results"


class Results(msgspec.Struct, frozen=True, kw_only=True):
    """Several results in one message (see the module's docstring)."""

    version: int = VERSION
    kind: Literal["results"] = "results"
    results: list[Result]


def unstated(message: Work | Result) -> str | None:
    """The envelope field (``version`` or ``kind``) a decoded message's body left out."""
    if message.version is _IMPLIED_VERSION:
        return "version"
    if message.kind is _IMPLIED_WORK or message.kind is _IMPLIED_RESULT:
        return "kind"
    return None


_ENCODER = msgspec.json.Encoder()


def encode(message: Work | Result | Results) -> bytes:
    return _ENCODER.encode(message)


def now() -> str:
    """A timestamp as messages carry them."""
    return datetime.datetime.now(datetime.UTC).isoformat()
