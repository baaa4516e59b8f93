"""``hostfake``: the ``fake`` driver with host placement, for functional tests.

tether ships one host-placed driver, ``haproxy``, whose device is a real
HAProxy process. To watch host placement and failover with the ``fake``
driver's knobs (``fake.operation_s``, ``fake.delay_ms`` …) this class is the
fake driver declaring ``placement = "host"``: its "device" is the agent
process's memory, i.e. the agent's host.

Its journal lines (``[driver:hostfake] journal_path``) say which agent wrote
them, and it implements :meth:`converge` like a real host-placed driver:
roots no longer bound to this agent are removed from its host, and each
removal is journaled as operation ``remove``.

It is not installed with tether: :func:`pythonpath` makes a directory holding
a ``.dist-info`` whose entry point names this class, for the ``PYTHONPATH``
of the daemons of one test, so stevedore finds it in ``tether.drivers`` in the
plugin (which reads its placement) and in the agents.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from collections.abc import Collection
from typing import Any

from oslo_config import cfg

from tether.drivers.base import Change, InProgress, driver_group
from tether.reference_drivers.fake import FakeDriver

NAME = "hostfake"
REPO = pathlib.Path(__file__).resolve().parents[2]


class HostFakeDriver(FakeDriver):
    """The fake driver, bound to the agent's host."""

    name = NAME
    placement = "host"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.agent_id = self.conf.agent.agent_id or self.conf.host
        except cfg.NoSuchOptError:  # not in an agent
            self.agent_id = self.conf.host
        #: root id -> when this host last wrote it (time.time())
        self.written: dict[str, float] = {}

    def _apply(self, change: Change) -> None:
        with self._lock:
            self.written[change.tree.id] = time.time()
        super()._apply(change)

    def delete(self, change: Change) -> InProgress | None:
        answer = super().delete(change)
        if answer is None and change.resource.id == change.tree.id:
            with self._lock:
                self.written.pop(change.tree.id, None)
        return answer

    def converge(self, keep: Collection[str], written_before: float) -> None:
        with self._lock:
            stale = [root for root, at in self.written.items() if root not in keep and at < written_before]
            for root in stale:
                del self.written[root]
                self.applied.pop(root, None)
        for root in stale:
            self._record({"resource_id": root, "operation": "remove"})

    def _write_journal(self, change: Change) -> None:
        self._record(
            {
                "resource_id": change.resource.id,
                "generation": change.generation,
                "task_id": change.task_id,
                "attempt": change.attempt,
                "operation": change.operation,
            }
        )

    def _record(self, entry: dict[str, Any]) -> None:
        path = self.conf[driver_group(self.name)].journal_path
        if not path:
            return
        line = json.dumps({**entry, "provider": self.name, "agent_id": self.agent_id, "time": time.time()})
        # One write() of an O_APPEND file per line, as the noop driver does.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def pythonpath(directory: pathlib.Path) -> str:
    """A ``PYTHONPATH`` with which tether's daemons find :class:`HostFakeDriver`
    as provider ``hostfake``; its distribution metadata is written to ``directory``."""
    dist = directory / "tether_functional_hostfake-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tether-functional-hostfake\nVersion: 0\n")
    (dist / "entry_points.txt").write_text(
        f"[tether.drivers]\n{NAME} = {__name__}:{HostFakeDriver.__name__}\n"
    )
    return os.pathsep.join([str(directory), str(REPO)])
