"""The ``noop`` driver: applies everything instantly, to nothing.

It keeps a record of what it applied (:attr:`NoopDriver.applied`), so tests
and benchmarks can check what reached "the device", and reports every
resource ``ONLINE``.
"""

from __future__ import annotations

import threading
from typing import Any

from tether.common.states import OperatingStatus
from tether.drivers.base import Change, Driver


class NoopDriver(Driver):
    """A driver whose device is a dictionary in the agent's memory."""

    name = "noop"
    resource_types = frozenset({"loadbalancer", "listener", "pool", "member", "healthmonitor"})
    placement = "shared"
    capabilities = frozenset({"operating_status"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        #: resource id -> (generation, attributes) last applied
        self.applied: dict[str, tuple[int, dict[str, Any]]] = {}

    def create(self, change: Change) -> None:
        self._apply(change)

    def update(self, change: Change) -> None:
        self._apply(change)

    def delete(self, change: Change) -> None:
        with self._lock:
            self.applied.pop(change.resource.id, None)

    def _apply(self, change: Change) -> None:
        with self._lock:
            self.applied[change.resource.id] = (change.generation, dict(change.resource.attributes))
        self.callbacks.operating_status(change.resource.id, OperatingStatus.ONLINE)
