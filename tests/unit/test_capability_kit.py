"""The conformance kit's checks of declared capabilities fail the drivers
whose declarations are malformed or disagree with what they do."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tether.common.capabilities import AllowedValues, MaxChildren, UnsupportedAttribute
from tether.drivers.base import Change, Driver, DriverError, NotSupported, Resource
from tether.drivers.testing import DriverConformance
from tether.reference_drivers.noop import NoopDriver

NO_UDP = AllowedValues("listener", "protocol", {"TCP", "HTTP", "HTTPS", "TERMINATED_HTTPS"})


class _Kit(DriverConformance):
    def read_device(self, driver: Driver, resource: Resource) -> Mapping[str, Any] | None:
        held = driver.applied.get(resource.id)  # type: ignore[attr-defined]
        return None if held is None else held[1]

    def failure_cases(self, driver: Driver) -> Iterator[tuple[Change, type[DriverError]]]:
        udp = Resource("listener", str(uuid.uuid4()), "p", {"protocol": "UDP", "protocol_port": 53}, "lb")
        lb = Resource("loadbalancer", "lb", "p", {"provider": "noop"}, None, (udp,))
        yield Change(str(uuid.uuid4()), "create", 1, 1, None, udp, lb), NotSupported


class _Refusing(NoopDriver):
    """Refuses UDP and more than one health monitor per pool, as it declares."""

    capabilities = frozenset({"operating_status", NO_UDP, MaxChildren("pool", "healthmonitor", 1)})

    def create(self, change: Change) -> None:
        self.check_supported(change)
        super().create(change)


class _Careless(NoopDriver):
    """Refuses UDP, and applies whatever else it declares unsupported."""

    capabilities = frozenset({"operating_status", NO_UDP})

    def create(self, change: Change) -> None:
        if change.resource.attributes.get("protocol") == "UDP":
            raise NotSupported("no UDP")
        super().create(change)


class _Undeclared(_Careless):
    """Refuses UDP without declaring it: the plugin would accept it."""

    capabilities = frozenset({"operating_status"})


def _kit(driver_class: type[Driver]) -> _Kit:
    return type("Kit", (_Kit,), {"driver_class": driver_class})()


def test_a_driver_whose_declarations_agree_with_what_it_does_passes(tmp_path: pathlib.Path) -> None:
    kit = _kit(_Refusing)
    kit.test_the_declared_capabilities_are_well_formed(tmp_path)
    kit.test_the_declarations_refuse_what_the_driver_cannot_do(tmp_path)
    kit.test_the_driver_refuses_what_its_declarations_refuse(tmp_path)


def test_the_kit_fails_a_not_supported_the_declarations_do_not_predict(tmp_path: pathlib.Path) -> None:
    with pytest.raises(AssertionError, match="raises NotSupported, but the declared capabilities take it"):
        _kit(_Undeclared).test_the_declarations_refuse_what_the_driver_cannot_do(tmp_path)


def test_the_kit_fails_a_driver_that_applies_what_it_declares_unsupported(tmp_path: pathlib.Path) -> None:
    class TooMany(_Careless):
        capabilities = frozenset({"operating_status", MaxChildren("pool", "healthmonitor", 1)})

    with pytest.raises(AssertionError, match="the driver applied a healthmonitor it declares unsupported"):
        _kit(TooMany).test_the_driver_refuses_what_its_declarations_refuse(tmp_path)

    class Disabled(_Careless):
        capabilities = frozenset({"operating_status", AllowedValues("pool", "admin_state_up", {True})})

    with pytest.raises(AssertionError, match="'admin_state_up': False"):
        _kit(Disabled).test_the_driver_refuses_what_its_declarations_refuse(tmp_path)


@pytest.mark.parametrize(
    ("constraint", "problem"),
    [
        (UnsupportedAttribute("listener", "sni"), "listener has no attribute sni"),
        (AllowedValues("listener", "protocol", {"QUIC"}), r"the API never accepts \['QUIC'\]"),
        (MaxChildren("listener", "member", 1), "member is no child type of listener"),
    ],
)
def test_the_kit_fails_a_declaration_the_resource_types_contradict(
    constraint: Any, problem: str, tmp_path: pathlib.Path
) -> None:
    class Confused(NoopDriver):
        capabilities = frozenset({constraint})

    with pytest.raises(AssertionError, match=problem):
        _kit(Confused).test_the_declared_capabilities_are_well_formed(tmp_path)
