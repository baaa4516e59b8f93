"""What a resource type's schema makes of its model: the fields, their
names and their Python types, as source text that both the classes made at
run time (:mod:`tether.drivers.models`) and a written module
(:mod:`tether.drivers.model_source`) declare. The rules are in
:mod:`tether.drivers.models`'s docstring.
"""

from __future__ import annotations

import dataclasses
import keyword
import re
from collections.abc import Mapping
from typing import Any

from tether.common.resource_types import COMMON_PROPERTIES, Registry

#: The fields every model has (:class:`tether.drivers.models.Model`'s).
BASE_FIELDS = frozenset(
    {"id", "project_id", "parent_id", "provisioning_status", "applied_generation", "resource"}
)
#: Names no attribute's field may take (see :mod:`tether.drivers.models`).
RESERVED = BASE_FIELDS | {
    "resource_type",
    "on_device",
    "create_failed",
    "children",
    # what a generated module's class bodies name: a field of the same name
    # with a default would shadow it there
    "dataclasses",
    "Mapping",
    "Any",
    "ClassVar",
    "Model",
    "str",
    "int",
    "float",
    "bool",
    "tuple",
}

_PYTHON_TYPES = {"string": "str", "integer": "int", "boolean": "bool", "number": "float"}


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One field of a model, as a type's schema makes it."""

    name: str
    #: its type as source text, the very text a generated module declares
    annotation: str
    #: the attribute it holds, or None for a tuple of children
    attribute: str | None = None
    #: the type of the children it holds
    children: str | None = None
    required: bool = False
    default: Any = None
    description: str = dataclasses.field(default="", compare=False)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model class, as a type's schema makes it."""

    class_name: str
    resource_type: str
    description: str = dataclasses.field(compare=False)
    fields: tuple[FieldSpec, ...] = ()


def class_name(type_name: str) -> str:
    name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", type_name) if part)
    return name if name[:1].isalpha() else f"T{name}"


def model_spec(registry: Registry, type_name: str) -> ModelSpec:
    """What the model of ``type_name`` holds, by the rules of the module's docstring."""
    rtype = registry[type_name]
    taken = set(RESERVED) | {class_name(name) for name in registry}
    fields: list[FieldSpec] = []
    for attribute, schema in {**COMMON_PROPERTIES, **rtype.properties}.items():
        name = _free(_identifier(attribute), taken)
        fields.append(_attribute_field(name, attribute, schema, attribute in rtype.required))
    for child in sorted(registry.children_of(type_name), key=lambda t: t.name):
        name = _free(_identifier(child.collection), taken)
        annotation = f"tuple[{class_name(child.name)}, ...]"
        fields.append(FieldSpec(name, annotation, children=child.name, default=()))
    return ModelSpec(class_name(type_name), type_name, rtype.description, tuple(fields))


def _identifier(attribute: str) -> str:
    name = re.sub(r"\W", "_", attribute, flags=re.ASCII).lstrip("_")
    return name if name[:1].isalpha() else f"f_{name}"


def _free(name: str, taken: set[str]) -> str:
    while keyword.iskeyword(name) or name in taken:
        name += "_"
    taken.add(name)
    return name


def _attribute_field(name: str, attribute: str, schema: Mapping[str, Any], required: bool) -> FieldSpec:
    python_type, nullable = _python_type(schema)
    description = str(schema.get("description", ""))
    if required:
        annotation = _optional(python_type) if nullable else python_type
        return FieldSpec(name, annotation, attribute, required=True, description=description)
    default = frozen(schema.get("default"))
    if "default" in schema and default is not None and not nullable:
        return FieldSpec(name, python_type, attribute, default=default, description=description)
    return FieldSpec(name, _optional(python_type), attribute, default=default, description=description)


def _python_type(schema: Any) -> tuple[str, bool]:
    """The type of a schema's values as source text, and whether null is one."""
    if not isinstance(schema, Mapping):
        return "Any", False
    declared = schema.get("type")
    if declared is None:
        values = schema.get("enum", [schema["const"]] if "const" in schema else None)
        if not isinstance(values, list) or not values:
            return "Any", False
        declared = list(dict.fromkeys(_json_type(v) for v in values))
    names = [declared] if isinstance(declared, str) else list(declared)
    parts = list(dict.fromkeys(_one_type(n, schema) for n in names if n != "null"))
    if not parts or "Any" in parts:
        return "Any", "null" in names
    return " | ".join(parts), "null" in names


def _one_type(json_type: Any, schema: Mapping[str, Any]) -> str:
    if json_type == "array":
        item, nullable = _python_type(schema.get("items"))
        return f"tuple[{_optional(item) if nullable else item}, ...]"
    if json_type == "object":
        value, nullable = _python_type(schema.get("additionalProperties"))
        return f"Mapping[str, {_optional(value) if nullable else value}]"
    return _PYTHON_TYPES.get(json_type, "Any")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "string"


def _optional(annotation: str) -> str:
    return annotation if annotation == "Any" else f"{annotation} | None"


def frozen(value: Any) -> Any:
    """A JSON value with its arrays made tuples."""
    return tuple(frozen(v) for v in value) if isinstance(value, list) else value
