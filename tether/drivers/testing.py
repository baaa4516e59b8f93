"""The conformance kit: the tests every driver must pass, for vendors to run
in their own CI.

Subclass :class:`DriverConformance` in a module pytest collects, tell it how
to build your driver and how to read your device back, and every check runs
against it::

    from tether.drivers.testing import DriverConformance

    class TestAcmeDriver(DriverConformance):
        driver_class = AcmeDriver

        def configure(self, conf, tmp_path):
            conf.set_override("device_dir", str(tmp_path / "device"), group="driver:acme")

        def read_device(self, driver, resource):
            return read_my_appliance(resource.id)   # its attributes, or None when absent

What it checks, for every resource type the driver claims:

* create puts the resource on the device, update changes it, delete removes
  it, and a delete of something absent succeeds; a driver that declares
  ``deletes_tree`` removes a subtree with one cascade delete;
* a resource whose create failed (``ERROR``, never applied) stays off the
  device when a later change's tree holds it, and does not stop the rest of
  the tree; an update after a failed create (the first call the device sees
  for the resource) puts it on the device;
* idempotency: the same change applied twice leaves the device as once,
  also when the second delivery starts while the first is still running
  (an agent died mid-call and the broker handed the message on);
* errors: whatever the driver raises for the failures you list in
  :meth:`failure_cases` is a ``DriverError`` of the class you expect, with a
  message a person can act on, retried by the agent exactly when that class
  is; and each error class (the SDK's, your package's, those you expect)
  raised in every form of :mod:`tether.drivers.raising` is classified by
  its class, its operator message kept to the agent's log;
* declarations: placement, resource types and capabilities are well formed,
  and a driver that claims ``operating_status`` reports a valid one;
* steps, for a driver that returns :class:`~tether.drivers.base.Steps`:
  their names are the same on every call of the same change (a later
  attempt skips steps by name); each step applied twice leaves the device
  as once; an operation resumed by a new call after a crash in any step
  (that step applied again) ends as if run once; and undoing the steps done
  before any step, in reverse order and each twice, leaves the device as it
  was before the operation;
* the drift audit, for a driver whose :meth:`~tether.drivers.base.Driver.inventory`
  lists its device: what is applied is listed, with the attributes applied,
  and what is deleted is not.
* capabilities (:mod:`tether.drivers.capability_checks`): what the driver
  declares it supports is well formed and agrees with what it does.

The kit imports nothing of the plugin or the agent.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import pathlib
import threading
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from oslo_config import cfg

from tether.common import config
from tether.common.states import ProvisioningStatus
from tether.drivers import raising
from tether.drivers.base import (
    Callbacks,
    Change,
    Driver,
    DriverError,
    Resource,
    driver_group,
)
from tether.drivers.capability_checks import CapabilityChecks
from tether.drivers.fixtures import (
    UPDATES,
    RecordingCallbacks,
    make_change,
    sample_attributes,
    sample_tree,
)
from tether.drivers.fixtures import run as _run
from tether.drivers.step_checks import StepChecks


class DriverConformance(CapabilityChecks, StepChecks):
    """Base class of a driver's conformance tests; see the module docstring."""

    #: the driver under test
    driver_class: ClassVar[type[Driver]]

    # -- what a vendor provides ------------------------------------------

    def configure(self, conf: cfg.ConfigOpts, tmp_path: pathlib.Path) -> None:
        """Set the driver's options (``[driver:NAME]``) for a test."""

    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        """What the device holds for ``resource``: its attributes as the
        device knows them (at least those the kit changes), or None when absent."""
        raise NotImplementedError("a conformance test must say how to read the device back")

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
        """Changes that must fail, with the DriverError class each must raise."""
        return iter(())

    def sample(self, type_name: str) -> dict[str, Any]:
        """The desired attributes of a ``type_name`` the kit creates."""
        return sample_attributes(type_name)

    # -- the checks ------------------------------------------------------

    def test_the_driver_declares_what_it_does(self, tmp_path: pathlib.Path) -> None:
        cls = self.driver_class
        assert cls.placement in ("shared", "host"), f"placement must be shared or host, not {cls.placement!r}"
        assert cls.resource_types, "the driver must claim at least one resource type"
        assert not getattr(cls, "__abstractmethods__", None), (
            f"{cls.__name__} does not implement {sorted(cls.__abstractmethods__)}"
        )
        for opt in cls.list_opts():
            assert isinstance(opt, cfg.Opt) and opt.help, f"option {opt} needs help text"

    def test_create_puts_every_claimed_type_on_the_device(self, tmp_path: pathlib.Path) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        for resource in self._claimed(tree):
            _run(driver, "create", self._change("create", resource, tree))
            held = self.read_device(driver, resource)
            assert held is not None, f"{resource.type} {resource.id} is not on the device after create"
            self._assert_holds(held, resource)

    def test_update_changes_the_device(self, tmp_path: pathlib.Path) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        self._create_all(driver, tree)
        for resource in self._claimed(tree):
            name, value = UPDATES[resource.type]
            updated = Resource(
                resource.type,
                resource.id,
                resource.project_id,
                dict(resource.attributes) | {name: value},
                resource.parent_id,
            )
            new_tree = tree.replaced(updated)
            _run(driver, "update", self._change("update", updated, new_tree, generation=2))
            held = self.read_device(driver, updated)
            assert held is not None and held.get(name) == value, (
                f"{resource.type} {resource.id}: expected {name}={value!r} on the device, found {held}"
            )
            tree = new_tree

    def test_delete_removes_and_deleting_again_succeeds(self, tmp_path: pathlib.Path) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        self._create_all(driver, tree)
        for resource in reversed(list(self._claimed(tree))):
            change = self._change("delete", resource, tree, generation=3)
            _run(driver, "delete", change)
            assert self.read_device(driver, resource) is None, f"{resource.type} {resource.id} is still there"
            _run(driver, "delete", change)  # absent is success
            tree = tree.without(resource.id)

    def test_a_resource_whose_create_failed_stays_off_the_device(self, tmp_path: pathlib.Path) -> None:
        # A later change's tree still holds it (ERROR, never applied); the
        # rest of the tree is applied as if it were not there.
        driver = self._driver(tmp_path)
        for failed_type in sorted({r.type for r in self._claimed(self._tree()) if r.parent_id}):
            tree = self._tree()
            failed = next(r for r in tree.walk() if r.type == failed_type)
            failed = dataclasses.replace(
                failed, provisioning_status=ProvisioningStatus.ERROR, applied_generation=0
            )
            tree = tree.replaced(failed)
            below = {r.id for r in failed.walk()}
            for resource in self._claimed(tree):
                if resource.id not in below:
                    _run(driver, "create", self._change("create", resource, tree))
                    assert self.read_device(driver, resource) is not None, (
                        f"{resource.type} {resource.id} is not on the device after create, beside "
                        f"a {failed_type} whose create failed"
                    )
            assert self.read_device(driver, failed) is None, (
                f"a {failed_type} whose create failed (ERROR, never applied) was written to the device "
                "with a later change of its tree; leave it out (Resource.without_failed_creates())"
            )

    def test_an_update_after_a_failed_create_puts_the_resource_on_the_device(
        self, tmp_path: pathlib.Path
    ) -> None:
        # The user's update of a resource whose create failed is the first
        # call the device sees for it: update creates what is missing.
        driver = self._driver(tmp_path)
        for index in range(len(self._claimed(self._tree()))):
            tree = self._tree()
            target = self._claimed(tree)[index]
            self._create_before(driver, tree, target)
            name, value = UPDATES[target.type]
            updated = dataclasses.replace(
                target,
                attributes=dict(target.attributes) | {name: value},
                provisioning_status=ProvisioningStatus.PENDING_UPDATE,
                applied_generation=0,
            )
            _run(driver, "update", self._change("update", updated, tree.replaced(updated), generation=2))
            held = self.read_device(driver, updated)
            assert held is not None, (
                f"an update of {target.type} {target.id}, whose create had failed, did not put it on "
                "the device: update must create what is missing"
            )
            self._assert_holds(held, updated)

    def test_a_tree_deleting_driver_removes_a_subtree_in_one_call(self, tmp_path: pathlib.Path) -> None:
        if not self.driver_class.deletes_tree:
            return  # its cascade deletes are the deletes checked above, one per resource
        driver, tree = self._driver(tmp_path), self._tree()
        self._create_all(driver, tree)
        for pool_first in (True, False):  # the pool with what is under it, then the rest
            target = tree.children[1] if pool_first else tree
            change = dataclasses.replace(self._change("delete", target, tree, generation=3), cascade=True)
            _run(driver, "delete", change)
            _run(driver, "delete", change)  # absent is success
            left = [
                f"{r.type} {r.id}" for r in self._claimed(target) if self.read_device(driver, r) is not None
            ]
            assert not left, f"a cascade delete of {target.type} {target.id} left {', '.join(left)}"
            tree = tree.without(target.id)

    def test_the_same_change_twice_leaves_the_device_as_once(self, tmp_path: pathlib.Path) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        for resource in self._claimed(tree):
            change = self._change("create", resource, tree)
            _run(driver, "create", change)
            once = copy.deepcopy(self.read_device(driver, resource))
            _run(driver, "create", change)
            assert self.read_device(driver, resource) == once, (
                f"a repeated create of {resource.type} changed it"
            )

    def test_a_redelivery_during_the_first_call_converges(self, tmp_path: pathlib.Path) -> None:
        # An agent dies mid-call and the broker hands the message to another
        # agent: two calls of the same change overlap, on two driver instances.
        first, second, tree = self._driver(tmp_path), self._driver(tmp_path), self._tree()
        for resource in self._claimed(tree):
            change = self._change("create", resource, tree)
            errors: list[BaseException] = []

            def apply(driver: Driver, change: Change = change, errors: list[BaseException] = errors) -> None:
                try:
                    _run(driver, "create", change)
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            calls = [threading.Thread(target=apply, args=(d,)) for d in (first, second)]
            for call in calls:
                call.start()
            for call in calls:
                call.join(60)
            assert not errors, f"overlapping creates of {resource.type} failed: {errors}"
            held = self.read_device(first, resource)
            assert held is not None
            self._assert_holds(held, resource)

    def test_failures_are_classified_with_a_message_for_people(self, tmp_path: pathlib.Path) -> None:
        driver = self._driver(tmp_path)
        for change, expected in self.failure_cases(driver):
            try:
                _run(driver, change.operation, change)
            except Exception as exc:  # noqa: BLE001 - as the agent catches it
                wrong = raising.misreported_failure(exc, expected, self.driver_class.name)
                assert wrong is None, f"{change.operation} of {change.resource.type}: {wrong}"
            else:
                raise AssertionError(f"{change.operation} of {change.resource.type} should have failed")

    def test_each_error_is_classified_by_its_class_however_it_is_raised(self, tmp_path: pathlib.Path) -> None:
        expected = [cls for _, cls in self.failure_cases(self._driver(tmp_path))]
        classes = raising.error_classes(self.driver_class, expected)
        wrong = raising.misreported(classes, self.driver_class.name)
        assert not wrong, "the agent would report these otherwise than their class says:\n" + "\n".join(wrong)

    def test_operating_status_is_reported_when_claimed(self, tmp_path: pathlib.Path) -> None:
        if "operating_status" not in self.driver_class.capabilities:
            return
        callbacks = RecordingCallbacks()
        driver, tree = self._driver(tmp_path, callbacks), self._tree()
        resource = next(iter(self._claimed(tree)))
        _run(driver, "create", self._change("create", resource, tree))
        assert resource.id in callbacks.statuses, "the driver claims operating_status but reported none"

    def test_what_is_applied_is_listed_to_the_drift_audit(self, tmp_path: pathlib.Path) -> None:
        driver, tree = self._driver(tmp_path), self._tree()
        if driver.inventory() is None:
            return  # the driver cannot list its device: nothing is audited
        claimed = self._claimed(tree)
        self._create_all(driver, tree)
        held = driver.inventory()
        assert held is not None
        for resource in claimed:
            assert resource.id in held, f"{resource.type} {resource.id} is applied but not in inventory()"
            listed = json.loads(json.dumps(dict(held[resource.id]), default=str))
            wrong = {
                k: (v, listed[k]) for k, v in resource.attributes.items() if k in listed and listed[k] != v
            }
            assert not wrong, (
                f"inventory() shows {resource.type} {resource.id} otherwise (desired, listed): {wrong}"
            )
        for resource in reversed(claimed):
            _run(driver, "delete", self._change("delete", resource, tree, generation=3))
            tree = tree.without(resource.id) if resource is not tree else tree
        left = set(driver.inventory() or {}) & {r.id for r in claimed}
        assert not left, f"inventory() still lists what was deleted: {sorted(left)}"

    # -- helpers ---------------------------------------------------------

    def _create_before(self, driver: Driver, tree: Resource, resource: Resource) -> None:
        """Create what comes before ``resource`` in ``tree`` (its parents among them)."""
        for earlier in self._claimed(tree):
            if earlier.id == resource.id:
                return
            _run(driver, "create", self._change("create", earlier, tree))

    def _driver(self, tmp_path: pathlib.Path, callbacks: Callbacks | None = None) -> Driver:
        conf = cfg.ConfigOpts()
        config.register_opts(conf)
        conf.register_opts(self.driver_class.list_opts(), group=driver_group(self.driver_class.name))
        conf([], project="tether", default_config_files=[])
        conf.set_override("state_path", str(tmp_path / "state"))
        self.configure(conf, tmp_path)
        return self.driver_class(conf, callbacks or RecordingCallbacks())

    def _tree(self) -> Resource:
        return sample_tree(self.sample, self.driver_class.name)

    def _claimed(self, tree: Resource) -> list[Resource]:
        return [r for r in tree.walk() if r.type in self.driver_class.resource_types]

    def _create_all(self, driver: Driver, tree: Resource) -> None:
        for resource in self._claimed(tree):
            _run(driver, "create", self._change("create", resource, tree))

    @staticmethod
    def _change(operation: str, resource: Resource, tree: Resource, generation: int = 1) -> Change:
        return make_change(operation, resource, tree, generation)

    @staticmethod
    def _assert_holds(held: Mapping[str, Any], resource: Resource) -> None:
        wrong = {k: (v, held.get(k)) for k, v in resource.attributes.items() if k in held and held[k] != v}
        assert not wrong, f"{resource.type} {resource.id} differs on the device (desired, held): {wrong}"
