"""The conformance kit, run against the drivers tether ships."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tether.common.exceptions import TetherError
from tether.drivers.base import (
    Change,
    DeviceUnreachable,
    Driver,
    DriverError,
    InvalidConfiguration,
    Resource,
    Step,
    Steps,
)
from tether.drivers.testing import DriverConformance
from tether.reference_drivers.fake import FakeDriver
from tether.reference_drivers.noop import NoopDriver


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


class _LeakyVendor(NoopDriver):
    """Fails every create with whatever a test gives it."""

    name = "leaky"
    raises: Exception = OSError(113, "No route to host")

    def create(self, change: Change) -> None:
        raise self.raises


def _leaky_kit(**attributes: Any) -> DriverConformance:
    # A package of its own, so the kit finds this vendor's error classes and no test's.
    driver_class = type("LeakyDriver", (_LeakyVendor,), {"__module__": "leaky_vendor.driver", **attributes})

    class Kit(_Noopish):
        def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
            lb = Resource("loadbalancer", str(uuid.uuid4()), "p", {"provider": "leaky"})
            yield Change(str(uuid.uuid4()), "create", 1, 1, None, lb, lb), DeviceUnreachable

    Kit.driver_class = driver_class
    return Kit()


def test_the_kit_fails_a_vendor_exception_that_escapes_as_a_driver_bug(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        AssertionError, match=r"raised OSError .* reports as DriverBug: raise DeviceUnreachable"
    ):
        _leaky_kit().test_failures_are_classified_with_a_message_for_people(tmp_path)
    # Translated where it enters, it passes.
    _leaky_kit(
        raises=DeviceUnreachable("no route to the appliance")
    ).test_failures_are_classified_with_a_message_for_people(tmp_path)


def test_the_kit_fails_a_failure_the_agent_would_not_retry_as_its_class_says(tmp_path: pathlib.Path) -> None:
    class Flaky(DeviceUnreachable):
        retryable = False

    kit = _leaky_kit(raises=Flaky("no route"))
    with pytest.raises(
        AssertionError, match="Flaky would be failed at once, but DeviceUnreachable is retried"
    ):
        kit.test_failures_are_classified_with_a_message_for_people(tmp_path)


def test_the_kit_fails_a_vendors_own_error_class_that_shows_users_the_operator_message(
    tmp_path: pathlib.Path,
) -> None:
    class ChattyError(InvalidConfiguration):
        """Tells users what only operators should read."""

        @property  # type: ignore[override]
        def user_message(self) -> str:
            return f"{self.msg} ({self.operator_message})"

        @user_message.setter
        def user_message(self, value: str) -> None:
            pass

    ChattyError.__module__ = "leaky_vendor.errors"
    kit = _leaky_kit(raises=DeviceUnreachable("no route"))
    with pytest.raises(AssertionError) as failed:
        kit.test_each_error_is_classified_by_its_class_however_it_is_raised(tmp_path)
    wrong = str(failed.value)
    assert "raise ChattyError(user_message, operator_message): the operator message reaches the API" in wrong
    assert "raise ChattyError(user_fault_string=..., operator_fault_string=...): the API would show" in wrong
    # The SDK's own classes, raised alike, pass.
    assert all(line.startswith("raise ChattyError") for line in wrong.splitlines()[1:])
    # Outside the vendor's package, it is not the vendor's: the kit passes.
    ChattyError.__module__ = "elsewhere"
    kit.test_each_error_is_classified_by_its_class_however_it_is_raised(tmp_path)


def test_the_kit_fails_an_sdk_constructor_that_drops_octavia_libs_messages(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def before_the_aliases(
        self: DriverError, user_message: Any = None, operator_message: Any = None, **kwargs: Any
    ) -> None:
        TetherError.__init__(self, user_message, **kwargs)
        self.user_message = self.msg
        self.operator_message = operator_message or self.msg

    monkeypatch.setattr(DriverError, "__init__", before_the_aliases)
    with pytest.raises(AssertionError, match=r"raise DeviceBusy\(user_fault_string=.*\): the API would show"):
        _leaky_kit().test_each_error_is_classified_by_its_class_however_it_is_raised(tmp_path)


class _WholeTree(NoopDriver):
    """Writes every resource of the tree it is given, as a driver that
    renders a whole configuration does; ``heeds_status`` leaves out what
    failed to be created."""

    name = "whole-tree"
    heeds_status = True

    def _apply(self, change: Change) -> None:
        tree = change.tree.without_failed_creates() if self.heeds_status else change.tree
        for resource in tree.walk():
            self.applied[resource.id] = (change.generation, dict(resource.attributes))


class _CreateOnly(NoopDriver):
    """Updates only what the device already holds."""

    name = "create-only"

    def update(self, change: Change) -> None:
        if change.resource.id in self.applied:
            self._apply(change)


@pytest.mark.parametrize(
    ("driver_class", "check", "expected"),
    [
        (
            type("Blind", (_WholeTree,), {"heeds_status": False}),
            "test_a_resource_whose_create_failed_stays_off_the_device",
            "whose create failed .ERROR, never applied. was written to the device",
        ),
        (
            _CreateOnly,
            "test_an_update_after_a_failed_create_puts_the_resource_on_the_device",
            "update must create what is missing",
        ),
    ],
)
def test_the_kit_fails_a_driver_that_mishandles_a_failed_create(
    driver_class: type[Driver], check: str, expected: str, tmp_path: pathlib.Path
) -> None:
    kit = type("Kit", (_Noopish,), {"driver_class": driver_class})()
    with pytest.raises(AssertionError, match=expected):
        getattr(kit, check)(tmp_path)
    # A driver that writes the tree but heeds the status passes.
    sound = type("Kit", (_Noopish,), {"driver_class": _WholeTree})()
    getattr(sound, check)(tmp_path)


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
