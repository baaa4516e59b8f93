from __future__ import annotations

from typing import Any

import pytest
from oslo_config import cfg
from stevedore import driver as stevedore_driver
from stevedore import extension

from tether.agent import driver_manager
from tether.common.exceptions import ConfigError
from tether.drivers.base import Change, Driver


class HalfDriver(Driver):
    name = "half"

    def create(self, change: Change) -> None:
        pass


def test_an_incomplete_driver_fails_at_load_naming_the_missing_methods(
    conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = stevedore_driver.DriverManager

    def fake_manager(namespace: str, name: str, **kwargs: Any) -> Any:
        if name == "half":
            return real.make_test_instance(
                extension.Extension("half", None, HalfDriver, None),  # type: ignore[arg-type]
                namespace=namespace,
            )
        return real(namespace, name, **kwargs)

    monkeypatch.setattr(stevedore_driver, "DriverManager", fake_manager)
    with pytest.raises(ConfigError, match="does not implement delete, update"):
        driver_manager.load_drivers(conf, ["half"], driver_manager.AgentCallbacks())


def test_the_shipped_drivers_load_through_stevedore(conf: cfg.ConfigOpts) -> None:
    drivers = driver_manager.load_drivers(conf, ["noop", "fake"], driver_manager.AgentCallbacks())
    assert sorted(drivers) == ["fake", "noop"]
    assert drivers["fake"].placement == "shared"
