"""Writing a module of typed resource models to check in, for drivers whose
authors want their IDE and mypy to know the models (see
:mod:`tether.drivers.models`)::

    python -m tether.drivers.model_source acme_service.types > acme_driver/models.py

It models every :class:`~tether.common.resource_types.ResourceType` the
named modules declare at their top level (a child's parent among them).
Run it again when the types change; a test comparing its output with the
checked-in module keeps the two together, as tether's own test does for
:mod:`tether.drivers.lbaas_models`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import textwrap
from collections.abc import Sequence

from tether.common.resource_types import Registry, ResourceType
from tether.drivers.model_fields import FieldSpec, ModelSpec, model_spec

_WIDTH = 110


def registry_of(modules: Sequence[str]) -> Registry:
    """A registry of the resource types ``modules`` declare."""
    types: dict[str, ResourceType] = {}
    for module in modules:
        for value in vars(importlib.import_module(module)).values():
            if isinstance(value, ResourceType):
                types[value.name] = value
    return Registry(types)


def source(modules: Sequence[str]) -> str:
    """The text of a module of the models of the types ``modules`` declare."""
    registry = registry_of(modules)
    order = _parents_first(registry)
    named = ", ".join(f":mod:`{m}`" for m in modules)
    lines = [
        f'"""Typed models of the resource types of {named}, for drivers',
        "(see :mod:`tether.drivers.models`).",
        "",
        "Generated from the types' schemas by",
        f"``python -m tether.drivers.model_source {' '.join(modules)}``; do not edit:",
        "a test fails when this module and the schemas differ.",
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "import dataclasses",
    ]
    models = [_model(model_spec(registry, name)) for name in order]
    body = "\n".join(line for model in models for line in model)
    if "Mapping[" in body:
        lines.append("from collections.abc import Mapping")
    lines.append(
        "from typing import Any, ClassVar" if re.search(r"\bAny\b", body) else "from typing import ClassVar"
    )
    lines += [
        "",
        "from tether.drivers.models import Model, children"
        if "children(" in body
        else "from tether.drivers.models import Model",
    ]
    for model in models:
        lines += ["", "", *model]
    classes = ", ".join(model_spec(registry, name).class_name for name in order)
    classes = f"({classes},)" if len(order) == 1 else f"({classes})"
    lines += ["", "", "#: every model of this module", f"MODELS: tuple[type[Model], ...] = {classes}", ""]
    return "\n".join(lines)


def _parents_first(registry: Registry) -> list[str]:
    def below(name: str) -> list[str]:
        kids = sorted(t.name for t in registry.children_of(name))
        return [name, *(n for kid in kids for n in below(kid))]

    return [n for root in sorted(n for n in registry if registry[n].is_root) for n in below(root)]


def _model(spec: ModelSpec) -> list[str]:
    lines = ["@dataclasses.dataclass(frozen=True, kw_only=True)", f"class {spec.class_name}(Model):"]
    lines += _docstring(spec.description or f"A {spec.resource_type}.")
    lines += ["", f'    resource_type: ClassVar[str] = "{spec.resource_type}"', ""]
    for field in spec.fields:
        if field.description:
            lines += textwrap.wrap(
                field.description, _WIDTH, initial_indent="    #: ", subsequent_indent="    #: "
            )
        lines.append(f"    {field.name}: {field.annotation}{_value(field)}")
    return lines


def _docstring(text: str) -> list[str]:
    if len(text) + 10 <= _WIDTH:
        return [f'    """{text}"""']
    return [
        '    """',
        *textwrap.wrap(text, _WIDTH - 4, initial_indent="    ", subsequent_indent="    "),
        '    """',
    ]


def _value(field: FieldSpec) -> str:
    if field.children is not None:
        return f' = children("{field.children}")'
    arguments = []
    default = _literal(field.default)
    if isinstance(field.default, dict):
        arguments.append(f"default_factory=lambda: {default}")
    elif not field.required:
        arguments.append(f"default={default}")
    if field.attribute != field.name:
        arguments.append(f'metadata={{"attribute": "{field.attribute}"}}')
    if arguments == [f"default={default}"]:
        return f" = {default}"
    return f" = dataclasses.field({', '.join(arguments)})" if arguments else ""


def _literal(value: object) -> str:
    """``value`` as Python source, strings in double quotes as the formatter writes them."""
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tether.drivers.model_source",
        description="Write a module of typed models of the resource types some modules declare.",
    )
    parser.add_argument("modules", nargs="+", help="modules declaring ResourceType objects")
    args = parser.parse_args(argv)
    sys.stdout.write(source(args.modules))
    return 0


if __name__ == "__main__":
    sys.exit(main())
