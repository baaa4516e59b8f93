"""The ``noop`` driver: applies everything instantly, to nothing.

It keeps a record of what it applied (:attr:`NoopDriver.applied`), and, when
``[driver:NAME] journal_path`` is set, appends each applied change to that
file as a JSON line, so tests and benchmarks can check what reached "the
device" independently of the plugin's database (the ``fake`` driver's steps
add lines of their own, with ``step`` and ``action``). It reports every resource
``ONLINE``.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from oslo_config import cfg

from tether.common.states import OperatingStatus
from tether.drivers.base import Change, Driver, InProgress, Steps, driver_group, opts_entry_point

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "journal_path",
        help="File to which each applied change is appended as a JSON line (resource, "
        "generation, task, attempt, operation); shared safely by several agents.",
    ),
]


class NoopDriver(Driver):
    """A driver whose device is a dictionary in the agent's memory."""

    name = "noop"
    resource_types = frozenset({"loadbalancer", "listener", "pool", "member", "healthmonitor"})
    placement = "shared"
    # No constraint: it takes every value of every attribute.
    capabilities = frozenset({"operating_status"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        #: resource id -> (generation, attributes) last applied
        self.applied: dict[str, tuple[int, dict[str, Any]]] = {}
        self._journal = self.conf[driver_group(self.name)].journal_path

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return OPTS

    def create(self, change: Change) -> InProgress | Steps | None:
        self._apply(change)
        return None

    def update(self, change: Change) -> InProgress | Steps | None:
        self._apply(change)
        return None

    def delete(self, change: Change) -> InProgress | Steps | None:
        with self._lock:
            self.applied.pop(change.resource.id, None)
        self._write_journal(change)
        return None

    def _apply(self, change: Change) -> None:
        with self._lock:
            self.applied[change.resource.id] = (change.generation, dict(change.resource.attributes))
        self._write_journal(change)
        self.callbacks.operating_status(change.resource.id, OperatingStatus.ONLINE)

    def _write_journal(self, change: Change, **extra: Any) -> None:
        if not self._journal:
            return
        entry = {
            "resource_id": change.resource.id,
            "generation": change.generation,
            "task_id": change.task_id,
            "attempt": change.attempt,
            "operation": change.operation,
        }
        line = json.dumps(entry | extra) + "\n"
        # One write() of an O_APPEND file per line: lines from several agent
        # processes never interleave.
        fd = os.open(self._journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


#: the ``oslo.config.opts`` entry point of ``[driver:noop]``
list_opts = opts_entry_point(NoopDriver)
