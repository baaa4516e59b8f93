"""The folders are the architecture: plugin/ and agent/ never import each
other, plugin/ never imports drivers/ (it reads what a driver class declares
off the class stevedore loads), and drivers/ (the vendor SDK) imports only
common/ and drivers/."""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "tether"

FORBIDDEN = {
    "plugin": ("tether.agent", "tether.cmd", "tether.drivers"),
    "agent": ("tether.plugin", "tether.cmd"),
    "drivers": ("tether.plugin", "tether.agent", "tether.cmd"),
    "common": ("tether.plugin", "tether.agent", "tether.drivers", "tether.cmd"),
}


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("component", sorted(FORBIDDEN))
def test_component_imports_stay_inside_their_boundary(component: str) -> None:
    crossings = [
        f"{path.relative_to(PACKAGE.parent)} imports {name}"
        for path in sorted((PACKAGE / component).rglob("*.py"))
        for name in _imports(path)
        if name.startswith(FORBIDDEN[component])
    ]
    assert crossings == []
