"""The conformance kit's checks of a driver that answers with ``Steps``
(what resumption and undo rely on), mixed into
:class:`~tether.drivers.testing.DriverConformance`:

* the steps of one change keep their names on every call (a later attempt
  skips the steps recorded done by name), and each applied twice leaves the
  device as once;
* an operation resumed by a new call after a crash in any of its steps (that
  step applied again, the ones before skipped) ends as if run once;
* undoing the steps done before any step, in reverse order and each undo
  twice, leaves the device as it was: nothing for a create, the previous
  attributes for an update.

A driver that answers no change with ``Steps`` passes them all.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from tether.drivers.base import Change, Driver, Resource, Step, Steps
from tether.drivers.fixtures import UPDATES
from tether.drivers.fixtures import run as _run


class _StepKit(Protocol):
    """What the checks use of :class:`~tether.drivers.testing.DriverConformance`."""

    def _driver(self, tmp_path: pathlib.Path) -> Driver: ...
    def _tree(self) -> Resource: ...
    def _claimed(self, tree: Resource) -> list[Resource]: ...
    def _create_before(self, driver: Driver, tree: Resource, resource: Resource) -> None: ...
    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None: ...
    @staticmethod
    def _change(operation: str, resource: Resource, tree: Resource, generation: int = 1) -> Change: ...
    @staticmethod
    def _assert_holds(held: Mapping[str, Any], resource: Resource) -> None: ...
    def _step_counts(self, driver: Driver) -> list[int]: ...


class StepChecks:
    """The checks; see the module docstring."""

    def test_steps_are_named_alike_on_every_call_and_apply_twice_as_once(
        self: _StepKit, tmp_path: pathlib.Path
    ) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        for resource in self._claimed(tree):
            change = self._change("create", resource, tree)
            steps = _steps(driver, "create", change)
            if steps is None:
                continue  # no steps for this type
            again = _steps(driver, "create", dataclasses.replace(change, attempt=2))
            assert again is not None and _names(again) == _names(steps), (
                f"the steps of one change must keep their names across attempts: {_names(steps)} "
                f"then {_names(again or [])}"
            )
            for step in steps:
                step.apply()
                step.apply()
            held = self.read_device(driver, resource)
            assert held is not None, f"{resource.type} {resource.id} is not on the device after its steps"
            self._assert_holds(held, resource)

    def test_steps_resume_after_a_crash_in_any_step(self: _StepKit, tmp_path: pathlib.Path) -> None:
        driver = self._driver(tmp_path)
        for index, count in enumerate(self._step_counts(driver)):
            for crashed_in in range(count):
                tree = self._tree()
                resource = self._claimed(tree)[index]
                self._create_before(driver, tree, resource)
                change = self._change("create", resource, tree)
                steps = list(_steps(driver, "create", change) or [])
                for step in steps[: crashed_in + 1]:
                    step.apply()
                # The next attempt calls again, skips the steps recorded done
                # and applies the one under way when the agent died again.
                resumed = list(_steps(driver, "create", dataclasses.replace(change, attempt=2)) or [])
                for step in resumed[crashed_in:]:
                    step.apply()
                held = self.read_device(driver, resource)
                assert held is not None, (
                    f"{resource.type} {resource.id} is not on the device after resuming at step "
                    f"{crashed_in + 1} ({steps[crashed_in].name})"
                )
                self._assert_holds(held, resource)

    def test_undoing_the_steps_done_in_reverse_restores_the_device(
        self: _StepKit, tmp_path: pathlib.Path
    ) -> None:
        driver = self._driver(tmp_path)
        for index, count in enumerate(self._step_counts(driver)):
            for failed_at in range(1, count):
                fresh = self._tree()
                target = self._claimed(fresh)[index]
                self._create_before(driver, fresh, target)
                _undo_after(driver, self._change("create", target, fresh), failed_at)
                assert self.read_device(driver, target) is None, (
                    f"an undone create of {target.type} left it on the device "
                    f"(undone before step {failed_at + 1})"
                )
                _run(driver, "create", self._change("create", target, fresh))
                before = copy.deepcopy(self.read_device(driver, target))
                name, value = UPDATES[target.type]
                updated = dataclasses.replace(target, attributes=dict(target.attributes) | {name: value})
                _undo_after(driver, self._change("update", updated, fresh.replaced(updated), 2), failed_at)
                assert self.read_device(driver, target) == before, (
                    f"an undone update of {target.type} did not restore the device "
                    f"(undone before step {failed_at + 1})"
                )

    def _step_counts(self: _StepKit, driver: Driver) -> list[int]:
        """How many steps a create of each claimed type takes (0: none)."""
        tree = self._tree()
        return [
            len(_steps(driver, "create", self._change("create", r, tree)) or []) for r in self._claimed(tree)
        ]


def _undo_after(driver: Driver, change: Change, failed_at: int) -> None:
    """Apply the steps before ``failed_at``, then undo them as an agent does, each twice."""
    steps = list(_steps(driver, change.operation, change) or [])
    for step in steps[:failed_at]:
        step.apply()
    for step in reversed(steps[:failed_at]):
        if step.undo is not None:
            step.undo()
            step.undo()


def _steps(driver: Driver, operation: str, change: Change) -> Steps | None:
    answer = getattr(driver, operation)(change)
    return answer if isinstance(answer, Steps) else None


def _names(steps: Iterable[Step]) -> list[str]:
    return [step.name for step in steps]
