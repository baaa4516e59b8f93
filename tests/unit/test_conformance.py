"""The conformance kit, run against the drivers tether ships."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tether.drivers.base import Change, DeviceUnreachable, Driver, DriverError, Resource, Step, Steps
from tether.drivers.fake import FakeDriver
from tether.drivers.noop import NoopDriver
from tether.drivers.testing import DriverConformance


class _Noopish(DriverConformance):
    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        held = driver.applied.get(resource.id)  # type: ignore[attr-defined]
        return None if held is None else held[1]


class TestNoopConformance(_Noopish):
    driver_class = NoopDriver


class TestFakeConformance(_Noopish):
    driver_class = FakeDriver

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
        for metadata, expected in (
            ({"fake.fail": "rack 7 is full"}, DriverError),
            ({"fake.unreachable": "no route"}, DeviceUnreachable),
        ):
            lb = Resource("loadbalancer", str(uuid.uuid4()), "p", {"provider": "fake", "metadata": metadata})
            yield Change(str(uuid.uuid4()), "create", 1, 1, None, lb, lb), expected


class TestFakeLongOperationConformance(_Noopish):
    """The fake driver running every change as a long device operation."""

    driver_class = FakeDriver

    def sample(self, type_name: str) -> dict[str, Any]:
        return super().sample(type_name) | {"metadata": {"fake.operation_s": "0.2"}}


class TestFakeStepsConformance(_Noopish):
    """The fake driver running every change in steps."""

    driver_class = FakeDriver

    def sample(self, type_name: str) -> dict[str, Any]:
        return super().sample(type_name) | {"metadata": {"fake.steps": "3"}}


class _SloppySteps(NoopDriver):
    """Steps as a driver should not write them, each flaw switched on by a test."""

    name = "sloppy"
    renames = False
    forgets_undo = False

    def create(self, change: Change) -> Steps:
        return self._steps(change)

    def update(self, change: Change) -> Steps:
        return self._steps(change)

    def _steps(self, change: Change) -> Steps:
        before = self.applied.get(change.resource.id)
        suffix = f" (attempt {change.attempt})" if self.renames else ""

        def apply() -> None:
            self._apply(change)

        def undo() -> None:
            if self.forgets_undo:
                return
            if before is None:
                self.applied.pop(change.resource.id, None)
            else:
                self.applied[change.resource.id] = before

        return Steps([Step(f"write{suffix}", apply, undo), Step(f"check{suffix}", lambda: None)])


@pytest.mark.parametrize(
    ("flaw", "check", "expected"),
    [
        ("renames", "test_steps_are_named_alike_on_every_call_and_apply_twice_as_once", "keep their names"),
        (
            "forgets_undo",
            "test_undoing_the_steps_done_in_reverse_restores_the_device",
            "left it on the device",
        ),
    ],
)
def test_the_kit_fails_steps_that_cannot_be_resumed_or_undone(
    flaw: str, check: str, expected: str, tmp_path: pathlib.Path
) -> None:
    driver_class = type("Flawed", (_SloppySteps,), {flaw: True})
    kit = type("Kit", (_Noopish,), {"driver_class": driver_class})()
    with pytest.raises(AssertionError, match=expected):
        getattr(kit, check)(tmp_path)
    # The same checks pass once the flaw is gone.
    sound = type("Kit", (_Noopish,), {"driver_class": _SloppySteps})()
    getattr(sound, check)(tmp_path)


class _BlindInventory(NoopDriver):
    """Says it can list its device, and lists nothing."""

    name = "blind"

    def inventory(self) -> Mapping[str, Mapping[str, Any]]:
        return {}


def test_the_kit_fails_an_inventory_that_misses_what_is_applied(tmp_path: pathlib.Path) -> None:
    kit = type("Kit", (_Noopish,), {"driver_class": _BlindInventory})()
    with pytest.raises(AssertionError, match="is applied but not in inventory"):
        kit.test_what_is_applied_is_listed_to_the_drift_audit(tmp_path)


class _TreeDeleter(NoopDriver):
    """Deletes a subtree in one call, or only its top when ``forgets_children``."""

    name = "trees"
    deletes_tree = True
    forgets_children = False

    def delete(self, change: Change) -> None:
        doomed = [change.resource] if self.forgets_children else list(change.resource.walk())
        for resource in doomed:
            self.applied.pop(resource.id, None)


def test_the_kit_fails_a_tree_deleting_driver_that_leaves_children_behind(tmp_path: pathlib.Path) -> None:
    flawed = type("Flawed", (_TreeDeleter,), {"forgets_children": True})
    kit = type("Kit", (_Noopish,), {"driver_class": flawed})()
    with pytest.raises(AssertionError, match=r"a cascade delete of pool \S+ left member"):
        kit.test_a_tree_deleting_driver_removes_a_subtree_in_one_call(tmp_path)
    sound = type("Kit", (_Noopish,), {"driver_class": _TreeDeleter})()
    sound.test_a_tree_deleting_driver_removes_a_subtree_in_one_call(tmp_path)
