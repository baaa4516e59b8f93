"""What a driver supports, declared as data, so that the plugin refuses at
accept a change that no live driver of its provider can carry out.

A driver lists in its ``capabilities`` free-form feature names (e.g.
``operating_status``) and constraints, each about one resource type::

    AllowedValues(type, attribute, values)   the attribute, when set, is one of values
    MaxValue(type, attribute, limit)         the attribute, when set, is a number up to limit
    MaxChildren(type, child_type, limit)     one resource of type holds at most limit child_types
    UnsupportedAttribute(type, attribute)    the attribute is absent, null or its type's default

``AllowedValues`` and ``UnsupportedAttribute`` take a ``reason``: a sentence
for the API user that ends the refusal's message (``reason="HAProxy sends no
ICMP."``); a plugin older than the field ignores it.

An attribute may name a member of an object attribute with a dot
(``session_persistence.type``). Whatever no constraint names is supported
in full: a driver that declares feature names only supports everything.

Agents send each driver's declaration with their state reports in the form
:meth:`Capabilities.to_wire` gives; the plugin reads it back with
:meth:`Capabilities.from_wire`, which skips constraint kinds it does not know
(an agent newer than its plugin), and judges a change with
:meth:`Capabilities.judge`. Drivers call the same judgement at apply time
(``Driver.check_supported``), for changes accepted before any agent reported.
This module is shared by both sides: it imports nothing of either.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Annotated, Any

import msgspec
from msgspec import structs

#: A resource type, attribute or feature name.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
Value = str | int | bool
#: What one declaration may hold at most, so a report stays small.
MAX_CONSTRAINTS = 1000
MAX_VALUES = 1000

_MISSING = object()


class _Constraint(msgspec.Struct, frozen=True, tag_field="kind", omit_defaults=True):
    resource_type: Name

    @property
    def key(self) -> tuple[str, str]:
        """What the constraint is about: (resource type, attribute or child type)."""
        raise NotImplementedError

    def _check_reason(self) -> None:
        if not isinstance(getattr(self, "reason", ""), str):
            raise ValueError(f"{self.resource_type}: a reason is a sentence of text, not {self!r}")

    def _check_names(self, *names: str) -> None:
        for name in (self.resource_type, *names):
            if not isinstance(name, str) or not name.strip() or len(name) > 255:
                raise ValueError(
                    f"a resource type or attribute name is text of 1 to 255 characters, not {name!r}"
                )


class AllowedValues(_Constraint, frozen=True, tag="allowed_values"):
    """``attribute`` of ``resource_type``, when set, is one of ``values``."""

    attribute: Name
    #: any collection when declared; held as a frozenset
    values: Annotated[AbstractSet[Value], msgspec.Meta(min_length=1, max_length=MAX_VALUES)]
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""

    def __post_init__(self) -> None:
        self._check_names(self.attribute)
        self._check_reason()
        values = frozenset(self.values)
        if not values or not all(isinstance(v, str | int) for v in values):
            raise ValueError(
                f"{self.resource_type} {self.attribute}: the values are strings, integers or "
                "booleans, at least one"
            )
        structs.force_setattr(self, "values", values)

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.attribute

    def allows(self, value: Any) -> bool:
        # True == 1 in Python, not in JSON.
        return any(v == value and isinstance(v, bool) == isinstance(value, bool) for v in self.values)


class MaxValue(_Constraint, frozen=True, tag="max_value"):
    """``attribute`` of ``resource_type``, when set, is a number up to ``limit``."""

    attribute: Name
    limit: int | float

    def __post_init__(self) -> None:
        self._check_names(self.attribute)
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int | float)
            or self.limit != self.limit  # NaN, which no value exceeds
        ):
            raise ValueError(
                f"{self.resource_type} {self.attribute}: the limit is a number, not {self.limit!r}"
            )

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.attribute


class MaxChildren(_Constraint, frozen=True, tag="max_children"):
    """One ``resource_type`` holds at most ``limit`` children of ``child_type``."""

    child_type: Name
    limit: Annotated[int, msgspec.Meta(ge=0)]

    def __post_init__(self) -> None:
        self._check_names(self.child_type)
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 0:
            raise ValueError(
                f"{self.resource_type} {self.child_type}s: the limit is a count from 0, not {self.limit!r}"
            )

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, f"{self.child_type} children"


class UnsupportedAttribute(_Constraint, frozen=True, tag="unsupported_attribute"):
    """``attribute`` of ``resource_type`` must be absent, null or its type's default."""

    attribute: Name
    reason: Annotated[str, msgspec.Meta(max_length=1000)] = ""

    def __post_init__(self) -> None:
        self._check_names(self.attribute)
        self._check_reason()

    @property
    def key(self) -> tuple[str, str]:
        return self.resource_type, self.attribute


Constraint = AllowedValues | MaxValue | MaxChildren | UnsupportedAttribute
_KINDS = {c.__struct_config__.tag: c for c in (AllowedValues, MaxValue, MaxChildren, UnsupportedAttribute)}


@dataclasses.dataclass(frozen=True)
class Refusal:
    """Why a declaration refuses a change, worded for the API user.

    :ivar path: where in the request body, as ``$.attribute``.
    """

    constraint: Constraint
    path: str
    value: Any = None
    #: for MaxChildren: the parent's id and how many children it would hold
    parent_id: str | None = None
    count: int = 0

    def message(self, provider: str) -> str:
        reason = getattr(self.constraint, "reason", "")
        return self._message(provider) + (f" {reason}" if reason else "")

    def _message(self, provider: str) -> str:
        c = self.constraint
        if isinstance(c, AllowedValues):
            supported = ", ".join(_show(v) for v in _sorted(c.values))
            return (
                f"{c.resource_type} {c.attribute} {_show(self.value)} is not supported by provider "
                f"{provider} (supported: {supported}); use one of those, or a provider that supports it."
            )
        if isinstance(c, MaxValue):
            return (
                f"{c.resource_type} {c.attribute} {_show(self.value)} is more than provider {provider} "
                f"supports (at most {_show(c.limit)}); use at most {_show(c.limit)}."
            )
        if isinstance(c, MaxChildren):
            return (
                f"{c.resource_type} {self.parent_id} would hold {self.count} {c.child_type}s; provider "
                f"{provider} supports at most {c.limit} per {c.resource_type}. Put the {c.child_type} "
                f"in another {c.resource_type}, or delete one of its {c.child_type}s first."
            )
        return (
            f"{c.resource_type} {c.attribute} is not supported by provider {provider}; leave it out "
            "(or null), or use a provider that supports it."
        )


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """One driver's declaration: feature names and constraints, checked.

    Build it with :meth:`of` from what a driver lists.
    """

    features: frozenset[str] = frozenset()
    constraints: tuple[Constraint, ...] = ()

    @classmethod
    def of(
        cls, declared: Iterable[str | Constraint], resource_types: Iterable[str] | None = None
    ) -> Capabilities:
        """The declaration ``declared`` lists.

        :param resource_types: the types the driver claims; a constraint
            about any other is a mistake.
        :raises ValueError: naming what is malformed or contradictory.
        """
        features: set[str] = set()
        by_key: dict[tuple[str, str, str], Constraint] = {}
        kinds: dict[tuple[str, str], str] = {}
        claimed = None if resource_types is None else frozenset(resource_types)
        for item in declared:
            if isinstance(item, str):
                if not item.strip() or len(item) > 255:
                    raise ValueError(f"a feature name is text of 1 to 255 characters, not {item!r}")
                features.add(item)
                continue
            if not isinstance(item, AllowedValues | MaxValue | MaxChildren | UnsupportedAttribute):
                raise ValueError(
                    f"capabilities hold feature names and constraints (AllowedValues, MaxValue, "
                    f"MaxChildren, UnsupportedAttribute), not {item!r}"
                )
            if claimed is not None and item.resource_type not in claimed:
                raise ValueError(
                    f"{item!r} is about {item.resource_type}, which the driver does not claim "
                    f"(resource_types: {', '.join(sorted(claimed))})"
                )
            kind = item.__struct_config__.tag
            assert isinstance(kind, str)
            if (*item.key, kind) in by_key:
                raise ValueError(f"{item!r} repeats a constraint of {' '.join(item.key)}; give one")
            others = {kinds.get(item.key), kind} - {None}
            if "unsupported_attribute" in others and len(others) > 1:
                raise ValueError(f"{' '.join(item.key)} is declared unsupported and constrained at once")
            by_key[(*item.key, kind)] = item
            kinds[item.key] = kind
        if len(by_key) > MAX_CONSTRAINTS:
            raise ValueError(f"a declaration holds at most {MAX_CONSTRAINTS} constraints, not {len(by_key)}")
        return cls(frozenset(features), tuple(by_key[k] for k in sorted(by_key)))

    def __contains__(self, feature: object) -> bool:
        return feature in self.features

    def to_wire(self) -> dict[str, Any]:
        """As agents send it: plain JSON, in a stable order (the plugin stores it as sent)."""
        constraints = []
        for c in self.constraints:
            item = msgspec.to_builtins(c)
            if isinstance(c, AllowedValues):
                item["values"] = _sorted(c.values)
            constraints.append(item)
        return {"features": sorted(self.features), "constraints": constraints}

    @classmethod
    def from_wire(cls, data: Any) -> Capabilities:
        """A declaration as an agent sent it; constraints of a kind this
        release does not know are left out (they come from a newer agent).

        :raises ValueError: naming what is malformed.
        """
        if not isinstance(data, dict) or not set(data) <= {"features", "constraints"}:
            raise ValueError("a declaration is an object of features and constraints")
        features, items = data.get("features") or [], data.get("constraints") or []
        if (
            not isinstance(features, list)
            or not isinstance(items, list)
            or max(len(features), len(items)) > MAX_CONSTRAINTS
        ):
            raise ValueError(f"features and constraints are lists of at most {MAX_CONSTRAINTS} items")
        known: list[str | Constraint] = list(features)
        for item in items:
            if isinstance(item, dict) and item.get("kind") not in _KINDS:
                continue
            try:
                known.append(msgspec.convert(item, Constraint))
            except msgspec.ValidationError as exc:
                raise ValueError(f"constraint {_show(item)}: {exc}") from exc
        return cls.of(known)

    def judge(
        self,
        resource_type: str,
        attributes: Mapping[str, Any],
        defaults: Mapping[str, Any],
        parent: tuple[str, str] | None = None,
        siblings: Callable[[], int] = lambda: 0,
    ) -> Refusal | None:
        """Why this declaration refuses a ``resource_type`` with these
        attributes, or None when it takes it.

        :param defaults: the type's default attributes (a default is always
            taken, supported or not: every resource carries it).
        :param parent: the (type, id) of the resource's parent, for limits
            on the number of children.
        :param siblings: how many resources of ``resource_type`` the parent
            holds with this one; asked only when a limit applies.
        """
        for c in self.constraints:
            if c.resource_type != resource_type or isinstance(c, MaxChildren):
                continue
            value = _lookup(attributes, c.attribute)
            if value is _MISSING or value is None:
                continue
            path = f"$.{c.attribute}"
            if isinstance(c, AllowedValues):
                if not c.allows(value):
                    return Refusal(c, path, value)
            elif isinstance(c, MaxValue):
                number = isinstance(value, int | float) and not isinstance(value, bool)
                if number and value > c.limit:
                    return Refusal(c, path, value)
            elif _lookup(defaults, c.attribute) != value:
                return Refusal(c, path, value)
        if parent is None:
            return None
        for c in self.constraints:
            if isinstance(c, MaxChildren) and (c.resource_type, c.child_type) == (parent[0], resource_type):
                count = siblings()
                if count > c.limit:
                    return Refusal(c, f"$.{parent[0]}_id", parent_id=parent[1], count=count)
        return None

    @classmethod
    def widest(cls, declarations: Sequence[Capabilities]) -> Capabilities:
        """What at least one of ``declarations`` supports, constraint by
        constraint: the union of allowed values, the highest limits; what
        any of them leaves unconstrained is unconstrained."""
        if not declarations:
            return cls()
        features = set.intersection(*(set(d.features) for d in declarations))
        merged: list[str | Constraint] = [*sorted(features)]
        keys = set.intersection(*({c.key for c in d.constraints} for d in declarations))
        for key in sorted(keys):
            found = [c for d in declarations for c in d.constraints if c.key == key]
            merged.extend(_widen(found, len(declarations)))
        return cls.of(merged)


def _widen(found: list[Constraint], declarations: int) -> list[Constraint]:
    """The widest constraints of one key, given each declaration's: a
    declaration that leaves the attribute unsupported takes only its absence,
    which every other constraint takes too."""
    unsupported = [c for c in found if isinstance(c, UnsupportedAttribute)]
    if len(unsupported) == declarations:
        return [unsupported[0]]
    widened: list[Constraint] = []
    allowed = [c for c in found if isinstance(c, AllowedValues)]
    if allowed and len(allowed) + len(unsupported) == declarations:
        values = frozenset[Value]().union(*(c.values for c in allowed))
        widened.append(
            AllowedValues(allowed[0].resource_type, allowed[0].attribute, values, allowed[0].reason)
        )
    maxima = [c for c in found if isinstance(c, MaxValue)]
    if maxima and len(maxima) + len(unsupported) == declarations:
        widened.append(max(maxima, key=lambda c: c.limit))
    counts = [c for c in found if isinstance(c, MaxChildren)]
    if len(counts) == declarations:
        widened.append(max(counts, key=lambda c: c.limit))
    return widened


def _lookup(attributes: Mapping[str, Any], attribute: str) -> Any:
    value: Any = attributes
    for part in attribute.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _sorted(values: Iterable[Value]) -> list[Value]:
    return sorted(values, key=lambda v: (type(v).__name__, v))


def _show(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value, default=str)
    return shown if len(shown) <= 80 else f"{shown[:79]}…"
