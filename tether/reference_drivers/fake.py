"""The ``fake`` driver: does what the resource's metadata tells it to.

It lets tests, and people trying tether, walk every path of the pipeline.
Instructions are read from the ``metadata`` of the resource being changed:

``fake.fail``
    Fail permanently with this text as the error message.
``fake.fail_operation``
    With ``fake.fail``: fail only this operation (``create``, ``update`` or
    ``delete``); the others succeed.
``fake.fail_detail``
    With ``fake.fail``, ``fake.fail_step`` or ``fake.unreachable``: the
    operator message of the failure (device detail for the agent's log
    only; the API shows the user message alone).
``fake.unreachable``
    Fail as if the device did not answer (a retryable error) with this text.
``fake.unreachable_attempts``
    Fail as if the device did not answer during the first N attempts, then
    succeed: exercises retries with backoff.
``fake.delay_ms``
    Sleep this many milliseconds before answering (a slow device).
``fake.crash``
    Kill the agent's process at the start of the call, once per resource (a
    marker under ``state_path`` remembers it), to exercise redelivery. In the
    all-in-one this kills the whole process.
``fake.progress``
    With ``fake.delay_ms``: report progress this many times over the delay
    ("fake progress 2 of 4").
``fake.stats``
    Report these counters for the resource once applied (``sessions=12,bytes_in=3400``),
    from a thread of the driver's own; the device keeps them, and ``status()``
    reports them too.
``fake.push_status``
    Report this operating status from a thread of the driver's own, outside
    any call, ``fake.push_after_ms`` milliseconds (1000 by default) after
    applying, as a device event would; the device keeps it under ``pushed``
    with the time it was reported.
``fake.drift_after_s``
    Forget the resource this many seconds after applying it, once per
    resource, as if someone removed it from the device by hand: the drift
    audit then finds it missing.
``fake.operation_s``
    Start a long operation that the device finishes after this many
    seconds: the call returns at once (``InProgress``) and the agent polls
    until it is done, without holding a worker meanwhile.
``fake.operating_status``
    Report this operating status instead of ``ONLINE``.
``fake.steps``
    Run the operation as this many steps (:class:`~tether.drivers.base.Steps`),
    named "fake step 1 of N" and so on; the last one applies the change.
    Each step and each undo is journaled (``journal_path``) with ``step``
    and ``action`` (``apply`` or ``undo``).
``fake.step_ms``
    With ``fake.steps``: sleep this many milliseconds in each step.
``fake.fail_step``
    With ``fake.steps``: step N (from 1) fails permanently, so the steps
    before it are undone.
``fake.unreachable_step``
    With ``fake.steps``: step N fails as unreachable (retryable) during the
    first ``fake.unreachable_attempts`` attempts (one when not given), so a
    later attempt resumes at it.
``fake.crash_step``
    With ``fake.steps``: kill the agent's process during step N, once per
    resource, so another attempt resumes at it.
``fake.fail_undo``
    With ``fake.steps``: undoing step N fails, so the resource ends in ERROR.

Example: ``{"provider": "fake", "metadata": {"fake.fail": "no capacity"}}``
ends in ``ERROR`` with ``last_error`` "no capacity".

Asked for ``status(roots)``, the fake device reports the counters it keeps
of the resources of those trees (no operating status: that comes from calls
and ``fake.push_status``), and writes which roots it was asked about, and
when, to ``<device_dir>/polls/<pid>-<n>.json``: one file per driver,
replaced at each poll, so tests can tell which agent polls which roots.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from oslo_config import cfg

from tether.common.states import OperatingStatus
from tether.drivers.base import (
    Change,
    DeviceUnreachable,
    DriverError,
    InProgress,
    Step,
    Steps,
    driver_group,
    opts_entry_point,
)
from tether.reference_drivers import noop
from tether.reference_drivers.noop import NoopDriver

LOG = logging.getLogger(__name__)

_instances = itertools.count(1)

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "crash_marker_dir",
        help="Directory of the markers that make fake.crash fire once per resource; "
        "defaults to <state_path>/fake-driver.",
    ),
    cfg.StrOpt(
        "device_dir",
        help="Directory where the fake device keeps what it holds, a JSON file per resource, "
        "listed to the drift audit; agents that share it share the device. Defaults to "
        "<state_path>/fake-device.",
    ),
]


class FakeDriver(NoopDriver):
    """A noop driver that fails, stalls or crashes on request."""

    name = "fake"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: names this driver's record of the roots it was polled for
        self._poll_record = f"{os.getpid()}-{next(_instances)}.json"

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return noop.OPTS + OPTS

    def create(self, change: Change) -> InProgress | Steps | None:
        self._obey(change)
        return self._start(change) or self._steps(change, super().create)

    def update(self, change: Change) -> InProgress | Steps | None:
        self._obey(change)
        return self._start(change) or self._steps(change, super().update)

    def _steps(self, change: Change, finish: Callable[[Change], object]) -> Steps | None:
        """The operation as ``fake.steps`` steps, or done at once without them."""
        meta = _instructions(change)
        if "fake.steps" not in meta:
            finish(change)
            return None
        count = int(meta["fake.steps"])

        def step(number: int) -> Step:
            name = f"fake step {number} of {count}"

            def apply() -> None:
                self._write_journal(change, step=name, action="apply")
                if "fake.step_ms" in meta:
                    time.sleep(int(meta["fake.step_ms"]) / 1000.0)
                if int(meta.get("fake.crash_step", 0)) == number:
                    self._crash_once(change, f"step-{number}")
                if int(meta.get("fake.unreachable_step", 0)) == number and change.attempt <= int(
                    meta.get("fake.unreachable_attempts", 1)
                ):
                    raise DeviceUnreachable(f"no answer from the device in {name} (attempt {change.attempt})")
                if int(meta.get("fake.fail_step", 0)) == number:
                    raise DriverError(
                        meta.get("fake.fail") or f"{name} refused by the fake device",
                        meta.get("fake.fail_detail"),
                    )
                if number == count:
                    finish(change)

            def undo() -> None:
                self._write_journal(change, step=name, action="undo")
                if int(meta.get("fake.fail_undo", 0)) == number:
                    raise DriverError(f"the fake device refused to undo {name}")

            return Step(name, apply, undo)

        return Steps(step(number) for number in range(1, count + 1))

    def poll(self, change: Change, operation: InProgress) -> InProgress | None:
        total, done_at = float(operation.handle["total"]), float(operation.handle["done_at"])
        left = done_at - time.time()
        if left > 0:
            percent = int(100 * (1 - left / total))
            return InProgress(min(0.5, left), f"fake operation {percent} % done", operation.handle)
        if change.operation == "delete":
            self._remove(change)
        else:
            getattr(super(), change.operation)(change)
        return None

    @staticmethod
    def _start(change: Change) -> InProgress | None:
        seconds = _instructions(change).get("fake.operation_s")
        if seconds is None:
            return None
        total = float(seconds)
        return InProgress(
            min(0.5, total), "fake operation started", {"total": total, "done_at": time.time() + total}
        )

    def _apply(self, change: Change) -> None:
        super()._apply(change)
        self._hold(change)
        meta = _instructions(change)
        status = meta.get("fake.operating_status")
        if status:
            self.callbacks.operating_status(change.resource.id, OperatingStatus(status))
        if "fake.stats" in meta:
            # From a thread of the driver's own, as a device poller would.
            reporter = threading.Thread(
                target=self.callbacks.stats, args=(change.resource.id, _counters(meta["fake.stats"]))
            )
            reporter.start()
            reporter.join()
        if "fake.push_status" in meta:
            threading.Thread(
                target=self._push,
                args=(
                    change.resource.id,
                    meta["fake.push_status"],
                    int(meta.get("fake.push_after_ms", 1000)),
                ),
                name="fake-device-event",
                daemon=True,
            ).start()

    def _push(self, resource_id: str, status: str, after_ms: int) -> None:
        """A device event: the resource's status changed."""
        time.sleep(after_ms / 1000.0)
        path = self._device_file(resource_id)
        try:
            with open(path) as f:
                entry = json.load(f)
        except (OSError, ValueError):
            return  # gone from the device meanwhile
        entry["pushed"] = {"status": status, "at": time.time()}
        self._write_entry(entry, path)
        self.callbacks.operating_status(resource_id, OperatingStatus(status))

    def status(
        self, roots: Collection[str] | None = None
    ) -> tuple[Mapping[str, OperatingStatus], Mapping[str, Mapping[str, float]]]:
        directory = self._device_dir()
        wanted = None if roots is None else set(roots)
        polls = os.path.join(directory, "polls")
        os.makedirs(polls, exist_ok=True)
        record = {"pid": os.getpid(), "roots": None if wanted is None else sorted(wanted), "at": time.time()}
        self._write_entry(record, os.path.join(polls, self._poll_record))
        counters: dict[str, Mapping[str, float]] = {}
        for resource_id, entry in self._entries().items():
            if "stats" in entry and (wanted is None or entry.get("root_id") in wanted):
                counters[resource_id] = entry["stats"]
        return {}, counters

    def _obey(self, change: Change) -> None:
        meta = _instructions(change)
        if meta.get("fake.crash"):
            self._crash_once(change)
        if "fake.delay_ms" in meta:
            self._wait(int(meta["fake.delay_ms"]) / 1000.0, int(meta.get("fake.progress", 0)))
        if "fake.unreachable" in meta:
            raise DeviceUnreachable(meta["fake.unreachable"], meta.get("fake.fail_detail"))
        if "fake.steps" in meta:
            return  # the steps obey the rest, each at its own step
        if change.attempt <= int(meta.get("fake.unreachable_attempts", 0)):
            raise DeviceUnreachable(f"no answer from the device (attempt {change.attempt})")
        operation = meta.get("fake.fail_operation")
        if "fake.fail" in meta and operation in (None, change.operation):
            raise DriverError(meta["fake.fail"], meta.get("fake.fail_detail"))

    def delete(self, change: Change) -> InProgress | Steps | None:
        self._obey(change)
        return self._start(change) or self._steps(change, self._remove)

    def _remove(self, change: Change) -> None:
        super().delete(change)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._device_file(change.resource.id))

    def inventory(self) -> Mapping[str, Mapping[str, Any]]:
        """What the device directory holds; a resource told to drift is
        forgotten here once its time has come."""
        return {resource_id: entry["attributes"] for resource_id, entry in self._entries().items()}

    def _entries(self) -> dict[str, dict[str, Any]]:
        """What the device holds of each resource, by id."""
        held: dict[str, dict[str, Any]] = {}
        directory = self._device_dir()
        try:
            names = [n for n in os.listdir(directory) if n.endswith(".json")]
        except FileNotFoundError:
            return held
        now = time.time()
        for name in names:
            path = os.path.join(directory, name)
            try:
                with open(path) as f:
                    entry = json.load(f)
            except (OSError, ValueError):
                continue  # removed or half written meanwhile: the next audit sees it
            forget_at = entry.get("forget_at")
            if forget_at is not None and now >= forget_at:
                LOG.warning("fake.drift_after_s: forgetting %s as instructed", name[: -len(".json")])
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
                continue
            held[name[: -len(".json")]] = entry
        return held

    def _hold(self, change: Change) -> None:
        """Write what the device now holds of the resource."""
        directory = self._device_dir()
        os.makedirs(directory, exist_ok=True)
        meta = _instructions(change)
        entry: dict[str, Any] = {"attributes": dict(change.resource.attributes), "root_id": change.tree.id}
        if "fake.stats" in meta:
            entry["stats"] = _counters(meta["fake.stats"])
        seconds = meta.get("fake.drift_after_s")
        drifted = os.path.join(directory, f"{change.resource.id}.drifted")
        if seconds is not None and not os.path.exists(drifted):
            open(drifted, "w").close()
            entry["forget_at"] = time.time() + float(seconds)
        self._write_entry(entry, self._device_file(change.resource.id))

    @staticmethod
    def _write_entry(entry: Mapping[str, Any], path: str) -> None:
        # Two deliveries of one change may write at once: each its own file, then one rename.
        with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(path), suffix=".new", delete=False) as f:
            json.dump(entry, f, default=str)
        os.replace(f.name, path)

    def _device_file(self, resource_id: str) -> str:
        return os.path.join(self._device_dir(), f"{resource_id}.json")

    def _device_dir(self) -> str:
        configured = self.conf[driver_group(self.name)].device_dir
        return configured or os.path.join(os.path.expanduser(self.conf.state_path), "fake-device")

    def _wait(self, seconds: float, reports: int) -> None:
        """Sleep, reporting progress ``reports`` times along the way."""
        if reports <= 0:
            time.sleep(seconds)
            return
        for done in range(1, reports + 1):
            time.sleep(seconds / reports)
            self.callbacks.progress(f"fake progress {done} of {reports}")

    def _crash_once(self, change: Change, where: str = "") -> None:
        directory = self._marker_dir()
        marker = os.path.join(directory, f"{change.resource.id}.{where}" if where else change.resource.id)
        if os.path.exists(marker):
            return
        os.makedirs(directory, exist_ok=True)
        with open(marker, "w") as f:
            f.write(change.task_id)
        LOG.warning(
            "fake.crash: killing this process (pid %d) during task %s as instructed",
            os.getpid(),
            change.task_id,
        )
        os.kill(os.getpid(), signal.SIGKILL)

    def _marker_dir(self) -> str:
        configured = self.conf[driver_group(self.name)].crash_marker_dir
        return configured or os.path.join(os.path.expanduser(self.conf.state_path), "fake-driver")


def _instructions(change: Change) -> Mapping[str, Any]:
    return change.resource.attributes.get("metadata") or {}


def _counters(text: str) -> dict[str, float]:
    """``sessions=12,bytes_in=3400`` as counters."""
    return {k: float(v) for k, v in (pair.split("=", 1) for pair in text.split(","))}


#: the ``oslo.config.opts`` entry point of ``[driver:fake]``
list_opts = opts_entry_point(FakeDriver)
