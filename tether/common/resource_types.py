"""Resource types: what the API accepts, declared as data.

A service built on tether declares its resource types as
:class:`ResourceType` objects and publishes them in the entry-point namespace
``tether.resource_types``; tether finds them at start with stevedore. The
load-balancing set in :mod:`tether.common.lbaas` is the reference::

    [options.entry_points]
    tether.resource_types =
        widget = acme_service.types:WIDGET

Every type also accepts ``name``, ``description`` and ``metadata`` (an object
of short string keys and values), added by the registry.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jsonschema
import jsonschema_rs
from stevedore import extension

from tether.common.exceptions import ConfigError, InvalidInput

NAMESPACE = "tether.resource_types"

METADATA_MAX_ITEMS = 64
METADATA_KEY_MAX = 255
METADATA_VALUE_MAX = 255

COMMON_PROPERTIES: dict[str, Any] = {
    "name": {"type": "string", "maxLength": 255, "description": "Human-readable name."},
    "description": {"type": "string", "maxLength": 1024},
    "metadata": {
        "type": "object",
        "description": "Free-form labels: short string keys and values.",
        "maxProperties": METADATA_MAX_ITEMS,
        "propertyNames": {"minLength": 1, "maxLength": METADATA_KEY_MAX},
        "additionalProperties": {"type": "string", "maxLength": METADATA_VALUE_MAX},
    },
}

FORMAT_CHECKER = jsonschema.FormatChecker()

# JSON Schema counts 80.0 as an integer; drivers should never see a float port.
_Validator = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


_NO_NUL = "^[^\\x00]*$"


def _forbid_nul(schema: Any) -> None:
    """Say in the schema what the API enforces anyway: no string holds NUL
    (PostgreSQL cannot store it). A string that has a pattern keeps it; the
    pattern's author excludes NUL."""
    if isinstance(schema, dict):
        types = schema.get("type")
        stringy = types == "string" or (isinstance(types, list) and "string" in types)
        if (stringy or "maxLength" in schema) and "pattern" not in schema and "enum" not in schema:
            schema["pattern"] = _NO_NUL
        for value in schema.values():
            _forbid_nul(value)
    elif isinstance(schema, list):
        for item in schema:
            _forbid_nul(item)


def _explain(error: jsonschema.ValidationError) -> str:
    # "not valid under any of the given schemas" says nothing when the
    # alternatives are formats (an IPv4 or an IPv6 address): name them.
    if error.validator == "anyOf" and all(e.validator == "format" for e in error.context or ()):
        formats = " or ".join(str(e.validator_value) for e in error.context or ())
        return f"{error.instance!r} is not a valid {formats} value"
    return str(error.message)


def _rule_path(error: jsonschema.ValidationError) -> str:
    """Where a body breaks a rule: the attribute a rule requires and the
    body lacks, or the value it refuses."""
    required = error.validator_value
    if error.validator == "required" and isinstance(error.instance, dict) and isinstance(required, list):
        missing = next((k for k in required if k not in error.instance), None)
        if isinstance(missing, str):
            return f"{error.json_path}.{missing}"
    return error.json_path


@FORMAT_CHECKER.checks("ip-address", raises=ValueError)
def _is_ip_address(value: object) -> bool:
    if isinstance(value, str):
        ipaddress.ip_address(value)
    return True


@dataclasses.dataclass(frozen=True)
class ResourceType:
    """The declaration of one resource type.

    :param name: singular, lower case; the collection is ``/v1/<name>s``.
    :param properties: JSON Schema of each attribute, by attribute name.
    :param required: attributes a create must carry.
    :param parent: the type this one belongs to, or ``None`` for a root; a
        root carries ``provider`` (the driver that applies its whole tree).
        A child names its parent as ``<parent>_id``.
    :param immutable: attributes that cannot change after create.
    :param description: one sentence for the API reference.
    :param rules: JSON Schemas the whole body meets besides each attribute's
        own (one attribute that needs or excludes another), each with a
        ``description`` that says what it asks of the API user: the message
        of a body that breaks it. They go into the schema as ``allOf``.
    :param references: attributes that hold the id of another resource of
        the same tree, by attribute name: the type they name (e.g.
        ``{"default_pool_id": "pool"}``). The plugin refuses a create or an
        update naming an id that is no such resource of the same tree (400),
        and a delete that would leave one dangling (409, naming the referrer).
        A ``null`` reference names nothing.
    """

    name: str
    properties: Mapping[str, Any]
    required: tuple[str, ...] = ()
    parent: str | None = None
    immutable: frozenset[str] = frozenset()
    description: str = ""
    rules: tuple[Mapping[str, Any], ...] = ()
    references: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def collection(self) -> str:
        return f"{self.name}s"

    @property
    def is_root(self) -> bool:
        return self.parent is None

    @property
    def parent_key(self) -> str | None:
        return f"{self.parent}_id" if self.parent else None

    @property
    def schema(self) -> dict[str, Any]:
        """The JSON Schema of a create body."""
        properties = dict(copy.deepcopy(COMMON_PROPERTIES))
        properties.update(copy.deepcopy(dict(self.properties)))
        required = list(self.required)
        if self.parent_key:
            properties[self.parent_key] = {
                "type": "string",
                "maxLength": 255,
                "description": f"The {self.parent} this {self.name} belongs to.",
            }
            required.insert(0, self.parent_key)
        schema = {
            "type": "object",
            "title": self.name,
            "description": self.description,
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }
        if self.rules:
            schema["allOf"] = [copy.deepcopy(dict(rule)) for rule in self.rules]
        _forbid_nul(schema)
        return schema

    def check_immutable(self, current: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
        """:raises InvalidInput: naming what ``changes`` would change of the immutable attributes."""
        changed = sorted(k for k in changes if k in self.immutable and changes[k] != current.get(k))
        if changed:
            raise InvalidInput(
                f"{', '.join(changed)} of a {self.name} cannot change after create "
                f"(immutable: {', '.join(sorted(self.immutable))}); create a new {self.name} instead.",
                path=f"$.{changed[0]}",
            )

    def defaults(self) -> dict[str, Any]:
        return {k: copy.deepcopy(v["default"]) for k, v in self.properties.items() if "default" in v}


class Registry(Mapping[str, ResourceType]):
    """The resource types this process knows, by name."""

    def __init__(self, types: Mapping[str, ResourceType]) -> None:
        self._types = dict(types)
        self._validators = {
            name: _Validator(t.schema, format_checker=FORMAT_CHECKER) for name, t in self._types.items()
        }
        # The same schemas compiled, to pass a valid body at once: it is what
        # clients send at a rate, and jsonschema took 20-80 µs per body.
        self._compiled = {name: _compiled(t.schema) for name, t in self._types.items()}
        self._check()

    @classmethod
    def load(cls) -> Registry:
        """Find every type published under ``tether.resource_types``."""
        manager: extension.ExtensionManager[Any] = extension.ExtensionManager(
            NAMESPACE, invoke_on_load=False, on_load_failure_callback=_load_failed
        )
        types: dict[str, ResourceType] = {}
        for ext in manager:
            rtype = ext.plugin
            if not isinstance(rtype, ResourceType) or rtype.name != ext.name:
                raise ConfigError(
                    reason=f"entry point {ext.name!r} in {NAMESPACE} must name a "
                    f"ResourceType called {ext.name!r}, found {rtype!r}"
                )
            types[ext.name] = rtype
        return cls(types)

    def __getitem__(self, name: str) -> ResourceType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def by_collection(self, collection: str) -> ResourceType | None:
        for rtype in self._types.values():
            if rtype.collection == collection:
                return rtype
        return None

    def children_of(self, name: str) -> list[ResourceType]:
        return [t for t in self._types.values() if t.parent == name]

    def validate(self, rtype: ResourceType, body: Any) -> None:
        """Check a full body against the type's schema.

        :raises InvalidInput: with the JSON path and the reason.
        """
        if not isinstance(body, dict):
            raise InvalidInput(reason=f"the body must be a JSON object of {rtype.name} attributes")
        if self._passes(rtype, body):
            return
        try:
            error = jsonschema.exceptions.best_match(self._validators[rtype.name].iter_errors(body))
        except RecursionError as exc:
            raise InvalidInput(f"The {rtype.name} body is nested too deeply.") from exc
        if error is not None and list(error.schema_path)[:1] == ["allOf"] and rtype.rules:
            rule = rtype.rules[int(error.schema_path[1])]
            path = _rule_path(error)
            raise InvalidInput(f"Invalid {rtype.name} at {path}: {rule['description']}", path=path)
        if error is not None:
            raise InvalidInput(
                f"Invalid {rtype.name} at {error.json_path}: {_explain(error)}",
                path=error.json_path,
            )

    def _passes(self, rtype: ResourceType, body: dict[str, Any]) -> bool:
        """Whether the compiled schema takes ``body``; a refusal, and
        anything it cannot judge as jsonschema does, is left to jsonschema,
        which words it. A float never passes here: for tether 80.0 is not an
        integer, for JSON Schema it is. The two are held to the same answers
        by a differential test."""
        if _holds_float(body):
            return False
        try:
            return bool(self._compiled[rtype.name].is_valid(body))
        except Exception:  # noqa: BLE001 - e.g. a lone surrogate or a huge integer it cannot convert
            return False

    def _check(self) -> None:
        for rtype in self._types.values():
            if rtype.parent is not None and rtype.parent not in self._types:
                raise ConfigError(
                    reason=f"resource type {rtype.name!r} names parent {rtype.parent!r}, "
                    "which no installed package declares"
                )
            if rtype.is_root and "provider" not in rtype.properties:
                raise ConfigError(
                    reason=f"root resource type {rtype.name!r} must declare a 'provider' attribute"
                )
            for attribute, target in rtype.references.items():
                if attribute not in rtype.properties or target not in self._types:
                    raise ConfigError(
                        reason=f"resource type {rtype.name!r} declares reference {attribute!r} to "
                        f"{target!r}: the attribute must be one of its properties and the type installed"
                    )
            seen = {rtype.name}
            parent = rtype.parent
            while parent is not None:
                if parent in seen:
                    raise ConfigError(reason=f"resource type {rtype.name!r} is its own ancestor")
                seen.add(parent)
                parent = self._types[parent].parent


@functools.cache
def _installed_defaults() -> dict[str, dict[str, Any]]:
    manager: extension.ExtensionManager[Any] = extension.ExtensionManager(NAMESPACE, invoke_on_load=False)
    return {ext.name: ext.plugin.defaults() for ext in manager if isinstance(ext.plugin, ResourceType)}


def defaults(type_name: str) -> dict[str, Any]:
    """The default attributes of an installed type (none for an unknown
    one), for drivers: they get every attribute with its default applied,
    and hold no registry of their own."""
    return copy.deepcopy(_installed_defaults().get(type_name, {}))


def _compiled(schema: dict[str, Any]) -> Any:
    """``schema`` compiled by jsonschema-rs, its formats judged by the very
    checks jsonschema uses; a format jsonschema has no check for passes
    both (were jsonschema-rs to check one, it would only be stricter, and a
    refusal goes to jsonschema)."""
    formats: dict[str, Callable[..., bool]] = {
        name: functools.partial(FORMAT_CHECKER.conforms, format=name) for name in FORMAT_CHECKER.checkers
    }
    return jsonschema_rs.Draft202012Validator(
        schema, formats=formats, validate_formats=True, ignore_unknown_formats=True
    )


def _holds_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_holds_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_float(v) for v in value)
    return False


def _load_failed(manager: Any, entrypoint: Any, exc: BaseException) -> None:
    raise ConfigError(reason=f"cannot load resource type {entrypoint}: {exc}") from exc
