"""The folders are the architecture: plugin/ and agent/ never import each
other, plugin/ never imports drivers/ (it learns what each driver declares
from the agents' state reports), drivers/ (the vendor SDK) imports only
common/ and drivers/, and reference_drivers/ is written on the SDK alone."""

from __future__ import annotations

import ast
import importlib
import json
import pathlib
import pkgutil
import subprocess
import sys

import pytest

from tether.common import exceptions

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "tether"

FORBIDDEN = {
    "plugin": ("tether.agent", "tether.cmd", "tether.drivers", "tether.reference_drivers"),
    "agent": ("tether.plugin", "tether.cmd", "tether.reference_drivers"),
    "drivers": ("tether.plugin", "tether.agent", "tether.cmd", "tether.reference_drivers"),
    # Written on the SDK as a vendor's driver would be.
    "reference_drivers": ("tether.plugin", "tether.agent", "tether.cmd"),
    "common": ("tether.plugin", "tether.agent", "tether.drivers", "tether.reference_drivers", "tether.cmd"),
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


_PLUGIN_ALONE = """
import json, sys
from fastapi.testclient import TestClient
from oslo_config import cfg
from tether.common import config, rpc
from tether.plugin import opts
from tether.plugin.service import Plugin

conf = cfg.CONF
config.register_opts(conf)
opts.register_opts(conf)
conf([], project="tether", default_config_files=[])
rpc.register_opts(conf)
conf.set_override("transport_url", "memory://")
conf.set_override("state_path", sys.argv[1])
conf.set_override("providers", ["nowhere", "noop"], group="plugin")
plugin = Plugin(conf, migrate=True)
with TestClient(plugin.app) as client:
    answer = client.post("/v1/loadbalancers", json={"name": "a", "provider": "nowhere"})
drivers = ("tether.drivers", "tether.reference_drivers")
loaded = [m for m in sys.modules if m.startswith(drivers)]
print(json.dumps({"status": answer.status_code, "body": answer.json(), "loaded": loaded}))
"""


def test_a_plugin_accepts_for_a_provider_whose_driver_is_installed_nowhere_and_loads_no_driver(
    tmp_path: pathlib.Path,
) -> None:
    """The plugin learns placement and resource types from agents' reports:
    it starts and accepts for a provider no package on its host provides,
    and no driver module, reference or vendor, is ever imported."""
    ran = subprocess.run(
        [sys.executable, "-c", _PLUGIN_ALONE, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout.strip().splitlines()[-1])
    assert seen["loaded"] == []
    assert seen["status"] == 202, seen["body"]
    # Nothing declared yet: accepted unchecked, and the task says so.
    assert "no agent of provider nowhere has reported" in " ".join(seen["body"]["task"]["notes"])


def test_the_exception_tree_draws_every_error_of_tether_under_its_base() -> None:
    bases = {
        node.name: node.bases[0].id
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.ClassDef) and node.bases and isinstance(node.bases[0], ast.Name)
    }

    def is_tether_error(name: str) -> bool:
        return name == "TetherError" or (name in bases and is_tether_error(bases[name]))

    # Each level of the drawing is four characters to the right of its parent's.
    lines = (exceptions.__doc__ or "").splitlines()
    root = next(line for line in lines if line.strip() == "TetherError")
    drawn: dict[str, str] = {}
    stack = ["TetherError"]
    for line in lines[lines.index(root) + 1 :]:
        if "── " not in line:
            continue
        depth = (line.index("── ") - root.index("T") - 1) // 4 + 1
        del stack[depth:]
        name = line.split("── ", 1)[1].split()[0]
        drawn[name] = stack[-1]
        stack.append(name)
    errors = {name: base for name, base in bases.items() if name != "TetherError" and is_tether_error(name)}
    assert drawn == errors


def test_every_exception_tether_defines_is_a_tether_error() -> None:
    for module in pkgutil.walk_packages([str(PACKAGE)], "tether."):
        if ".migrations" not in module.name:  # Alembic's scripts run only under Alembic
            importlib.import_module(module.name)
    defined = [
        cls
        for cls in _subclasses(BaseException)
        if cls.__module__.startswith("tether.") and cls is not exceptions.TetherError
    ]
    assert len(defined) > 30
    assert [
        f"{c.__module__}.{c.__qualname__}" for c in defined if not issubclass(c, exceptions.TetherError)
    ] == []


def _subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub, *_subclasses(sub)}
    return found
