"""The states of resources and tasks, as DESIGN.md defines them."""

from __future__ import annotations

import enum


class ProvisioningStatus(enum.StrEnum):
    PENDING_CREATE = "PENDING_CREATE"
    PENDING_UPDATE = "PENDING_UPDATE"
    PENDING_DELETE = "PENDING_DELETE"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"

    @classmethod
    def known(cls, value: str | None) -> ProvisioningStatus | None:
        """``value`` as a status, or None when it names none this release knows
        (a newer plugin's, or none at all from an older one)."""
        return cls(value) if value is not None and value in cls.__members__ else None


class OperatingStatus(enum.StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    DEGRADED = "DEGRADED"
    NO_MONITOR = "NO_MONITOR"
    UNKNOWN = "UNKNOWN"


class TaskState(enum.StrEnum):
    QUEUED = "QUEUED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    SUPERSEDED = "SUPERSEDED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_TASK_STATES


TERMINAL_TASK_STATES = frozenset(
    {TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED, TaskState.SUPERSEDED}
)
IN_FLIGHT_TASK_STATES = frozenset({TaskState.QUEUED, TaskState.PENDING, TaskState.RUNNING})


class StepState(enum.StrEnum):
    """Where one step of a stepped operation stands (see :class:`tether.drivers.base.Step`)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    UNDONE = "UNDONE"
    UNDO_FAILED = "UNDO_FAILED"


#: Steps one operation may have at most, and the longest name the plugin keeps.
MAX_STEPS = 1000
MAX_STEP_NAME = 255

#: Counters one resource's stats may have at most, and the longest name of one.
MAX_COUNTERS = 100
MAX_COUNTER_NAME = 64


class Operation(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"

    @property
    def pending_status(self) -> ProvisioningStatus:
        return _PENDING_STATUS[self]


_PENDING_STATUS = {
    Operation.CREATE: ProvisioningStatus.PENDING_CREATE,
    Operation.UPDATE: ProvisioningStatus.PENDING_UPDATE,
    Operation.DELETE: ProvisioningStatus.PENDING_DELETE,
}


class Outcome(enum.StrEnum):
    """What an agent reports about one attempt of a task."""

    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
