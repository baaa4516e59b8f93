"""The conformance kit's checks of what a driver declares it supports
(:mod:`tether.common.capabilities`), mixed into
:class:`~tether.drivers.testing.DriverConformance`:

* the declaration is well formed: every constraint names a resource type the
  driver claims, an attribute that type declares, values its schema allows,
  a child type that belongs to it; and it travels to the plugin unchanged;
* it agrees with the driver: every failure case that raises ``NotSupported``
  is refused by the declaration too (or the plugin would accept a change the
  driver then fails), no failure case it refuses expects a retryable error,
  and what it refuses, where the kit can make such a change from the type's
  schema (a value outside the allowed ones, one past a limit, a child too
  many, a set unsupported attribute), the driver refuses too rather than
  apply it: the plugin accepts changes unchecked until an agent reported.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

from tether.common.capabilities import (
    AllowedValues,
    Capabilities,
    Constraint,
    MaxChildren,
    MaxValue,
    UnsupportedAttribute,
)
from tether.common.resource_types import COMMON_PROPERTIES, Registry
from tether.drivers.base import Change, Driver, DriverError, NotSupported, Resource


class _CapabilityKit(Protocol):
    """What the checks use of :class:`~tether.drivers.testing.DriverConformance`."""

    driver_class: ClassVar[type[Driver]]

    def _driver(self, tmp_path: pathlib.Path) -> Driver: ...

    def _tree(self) -> Resource: ...

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]: ...

    def sample(self, type_name: str) -> dict[str, Any]: ...


class CapabilityChecks:
    """The checks; see the module docstring."""

    def test_the_declared_capabilities_are_well_formed(self: _CapabilityKit, tmp_path: pathlib.Path) -> None:
        cls = self.driver_class
        try:
            Capabilities.of(cls.capabilities, cls.resource_types)
            declared = self._driver(tmp_path).current_capabilities()
        except ValueError as exc:
            raise AssertionError(f"{cls.__name__} declares malformed capabilities: {exc}") from exc
        assert Capabilities.from_wire(declared.to_wire()) == declared, "the declaration changes on the wire"
        types = _types()
        for constraint in declared.constraints:
            assert constraint.resource_type in cls.resource_types, f"{constraint!r}: a type not claimed"
            if constraint.resource_type not in types:
                continue  # a type of a package not installed here
            if isinstance(constraint, MaxChildren):
                child = types.get(constraint.child_type)
                assert child is not None and child.parent == constraint.resource_type, (
                    f"{constraint!r}: {constraint.child_type} is no child type of {constraint.resource_type}"
                )
                continue
            schema = _schema(constraint.resource_type, constraint.attribute)
            assert schema is not None, (
                f"{constraint!r}: {constraint.resource_type} has no attribute {constraint.attribute}"
            )
            if isinstance(constraint, AllowedValues) and "enum" in schema:
                unknown = set(constraint.values) - set(schema["enum"])
                assert not unknown, f"{constraint!r}: the API never accepts {sorted(map(str, unknown))}"

    def test_the_declarations_refuse_what_the_driver_cannot_do(
        self: _CapabilityKit, tmp_path: pathlib.Path
    ) -> None:
        driver = self._driver(tmp_path)
        declared = driver.current_capabilities()
        for number, (change, expected) in enumerate(self.failure_cases(driver), 1):
            try:
                Driver.check_supported(driver, change)
                refused = None
            except NotSupported as exc:
                refused = exc.user_message
            what = f"failure case {number} ({change.operation} {change.resource.type})"
            if issubclass(expected, NotSupported):
                assert refused is not None, (
                    f"{what} raises NotSupported, but the declared capabilities take it: the plugin "
                    f"would accept the change and its task fail. Declare what is unsupported: {declared}"
                )
            if refused is not None:
                assert not expected.retryable, (
                    f"{what} is refused by the declarations ({refused}) but expects the retryable "
                    f"{expected.__name__}"
                )

    def test_the_driver_refuses_what_its_declarations_refuse(
        self: _CapabilityKit, tmp_path: pathlib.Path
    ) -> None:
        driver = self._driver(tmp_path)
        for constraint in driver.current_capabilities().constraints:
            for change in _breaking(self._tree(), self.sample, constraint):
                try:
                    getattr(driver, change.operation)(change)
                except DriverError as exc:
                    assert not exc.retryable, (
                        f"{constraint!r}: the driver answered a change it declares unsupported with the "
                        f"retryable {exc.type}; raise NotSupported (Driver.check_supported does)"
                    )
                else:
                    raise AssertionError(
                        f"{constraint!r}: the driver applied a {change.resource.type} it declares "
                        f"unsupported ({dict(change.resource.attributes)}); call "
                        "self.check_supported(change) before applying"
                    )


def _breaking(
    tree: Resource, sample: Callable[[str], dict[str, Any]], constraint: Constraint
) -> Iterator[Change]:
    """Creates of a resource of ``tree`` (fresh) that ``constraint`` refuses,
    those the kit can make from the type's schema."""
    if isinstance(constraint, MaxChildren):
        parent = next((r for r in tree.walk() if r.type == constraint.resource_type), None)
        if parent is None or constraint.child_type not in _types():
            return
        child = constraint.child_type
        held = sum(1 for c in parent.children if c.type == child)
        extra = tuple(
            Resource(child, str(uuid.uuid4()), parent.project_id, sample(child), parent.id)
            for _ in range(max(1, constraint.limit + 1 - held))
        )
        yield _create(extra[-1], _adding(tree, parent.id, extra))
        return
    target = next((r for r in tree.walk() if r.type == constraint.resource_type), None)
    schema = _schema(constraint.resource_type, constraint.attribute)
    if target is None or schema is None or "." in constraint.attribute:
        return
    for value in _refused_values(constraint, schema):
        changed = dataclasses.replace(
            target, attributes=dict(target.attributes) | {constraint.attribute: value}
        )
        yield _create(changed, tree.replaced(changed))


def _adding(tree: Resource, parent_id: str, children: tuple[Resource, ...]) -> Resource:
    """``tree`` with ``children`` added to the resource ``parent_id``."""
    if tree.id == parent_id:
        return dataclasses.replace(tree, children=tree.children + children)
    return dataclasses.replace(tree, children=tuple(_adding(c, parent_id, children) for c in tree.children))


def _refused_values(constraint: Constraint, schema: dict[str, Any]) -> list[Any]:
    candidates: list[Any] = list(schema.get("enum", ()))
    if schema.get("type") == "boolean":
        candidates = [True, False]
    if isinstance(constraint, AllowedValues):
        return [v for v in candidates if not constraint.allows(v)]
    if isinstance(constraint, MaxValue):
        over = int(constraint.limit) + 1
        fits = schema.get("type") == "integer" and over <= schema.get("maximum", over)
        return [over] if fits else []
    if isinstance(constraint, UnsupportedAttribute):
        if schema.get("type") == "integer":
            candidates = [schema.get("minimum", 1)]
        return [v for v in candidates if v != schema.get("default")][:1]
    return []


def _create(resource: Resource, tree: Resource) -> Change:
    return Change(str(uuid.uuid4()), "create", 1, 1, None, resource, tree)


@functools.cache
def _types() -> Registry:
    return Registry.load()


def _schema(type_name: str, attribute: str) -> dict[str, Any] | None:
    """The JSON Schema of an attribute (a dotted one: of the member of an object)."""
    rtype = _types().get(type_name)
    if rtype is None:
        return None
    schema: Any = {"properties": COMMON_PROPERTIES | dict(rtype.properties)}
    for part in attribute.split("."):
        schema = (schema.get("properties") or {}).get(part) if isinstance(schema, dict) else None
    return schema if isinstance(schema, dict) else None
