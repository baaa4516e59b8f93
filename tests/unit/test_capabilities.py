"""What a driver declares it supports: the declaration, its wire form, its
judgement, and the drivers' own check at apply time."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from oslo_config import cfg

from tether.agent import driver_manager
from tether.common.capabilities import (
    AllowedValues,
    Capabilities,
    Constraint,
    MaxChildren,
    MaxValue,
    UnsupportedAttribute,
)
from tether.common.exceptions import ConfigError
from tether.drivers.base import Change, NotSupported, Resource
from tether.drivers.fixtures import RecordingCallbacks
from tether.reference_drivers.haproxy import HaproxyDriver
from tether.reference_drivers.noop import NoopDriver

PROTOCOLS = AllowedValues("listener", "protocol", {"HTTP", "HTTPS", "TCP"})
ACME: list[str | Constraint] = [
    "operating_status",
    PROTOCOLS,
    MaxValue("listener", "connection_limit", 50_000),
    MaxChildren("pool", "member", 2),
    UnsupportedAttribute("pool", "session_persistence"),
    AllowedValues("pool", "session_persistence.type", {"SOURCE_IP"}),
]


def _message(declared: Capabilities, type_name: str, attributes: dict[str, Any], **kwargs: Any) -> str:
    refusal = declared.judge(type_name, attributes, kwargs.pop("defaults", {}), **kwargs)
    assert refusal is not None
    return refusal.message("acme")


def test_feature_names_alone_constrain_nothing() -> None:
    declared = Capabilities.of(frozenset({"operating_status"}))
    assert "operating_status" in declared
    assert declared.constraints == ()
    assert declared.judge("listener", {"protocol": "UDP"}, {}) is None


def test_an_attribute_outside_the_allowed_values_is_refused_naming_what_is_supported() -> None:
    declared = Capabilities.of(ACME)
    refusal = declared.judge("listener", {"protocol": "UDP", "protocol_port": 53}, {})
    assert refusal is not None and refusal.path == "$.protocol"
    assert refusal.message("acme") == (
        "listener protocol UDP is not supported by provider acme (supported: HTTP, HTTPS, TCP); "
        "use one of those, or a provider that supports it."
    )
    assert declared.judge("listener", {"protocol": "TCP"}, {}) is None


def test_a_value_past_a_limit_is_refused_naming_the_limit() -> None:
    declared = Capabilities.of(ACME)
    assert _message(declared, "listener", {"protocol": "TCP", "connection_limit": 60_000}) == (
        "listener connection_limit 60000 is more than provider acme supports (at most 50000); "
        "use at most 50000."
    )
    assert declared.judge("listener", {"protocol": "TCP", "connection_limit": -1}, {}) is None


def test_a_child_too_many_is_refused_naming_the_parent_and_the_limit() -> None:
    declared = Capabilities.of(ACME)
    refusal = declared.judge("member", {}, {}, ("pool", "p-1"), lambda: 3)
    assert refusal is not None and refusal.path == "$.pool_id"
    assert refusal.message("acme") == (
        "pool p-1 would hold 3 members; provider acme supports at most 2 per pool. Put the member "
        "in another pool, or delete one of its members first."
    )
    assert declared.judge("member", {}, {}, ("pool", "p-1"), lambda: 2) is None


def test_the_children_are_counted_only_when_a_limit_applies() -> None:
    def count() -> int:
        raise AssertionError("counted for nothing")

    assert Capabilities.of(ACME).judge("healthmonitor", {}, {}, ("pool", "p-1"), count) is None


def test_an_unsupported_attribute_may_be_absent_null_or_its_default() -> None:
    declared = Capabilities.of([UnsupportedAttribute("listener", "connection_limit")])
    defaults = {"connection_limit": -1}
    for attributes in ({}, {"connection_limit": None}, {"connection_limit": -1}):
        assert declared.judge("listener", attributes, defaults) is None
    refusal = declared.judge("listener", {"connection_limit": 10}, defaults)
    assert refusal is not None and refusal.path == "$.connection_limit"
    assert refusal.message("haproxy") == (
        "listener connection_limit is not supported by provider haproxy; leave it out (or null), "
        "or use a provider that supports it."
    )


def test_a_member_of_an_object_attribute_is_named_with_a_dot() -> None:
    declared = Capabilities.of([AllowedValues("pool", "session_persistence.type", {"SOURCE_IP"})])
    refusal = declared.judge("pool", {"session_persistence": {"type": "APP_COOKIE"}}, {})
    assert refusal is not None and refusal.path == "$.session_persistence.type"
    assert declared.judge("pool", {"session_persistence": None}, {}) is None
    assert declared.judge("pool", {"session_persistence": {"type": "SOURCE_IP"}}, {}) is None


def test_true_is_not_one() -> None:
    declared = Capabilities.of([AllowedValues("member", "weight", {1})])
    assert declared.judge("member", {"weight": True}, {}) is not None
    assert declared.judge("member", {"weight": 1}, {}) is None


@pytest.mark.parametrize(
    ("declare", "problem"),
    [
        (lambda: [""], "a feature name is text"),
        (lambda: [42], "capabilities hold feature names and constraints"),
        (lambda: [AllowedValues("listener", "protocol", set())], "at least one"),
        (lambda: [AllowedValues("listener", "protocol", {1.5})], "strings, integers or booleans"),
        (lambda: [MaxChildren("pool", "member", -1)], "a count from 0"),
        (lambda: [MaxValue("listener", "connection_limit", True)], "the limit is a number"),
        (lambda: [UnsupportedAttribute("listener", " ")], "text of 1 to 255 characters"),
        (lambda: [PROTOCOLS, AllowedValues("listener", "protocol", {"TCP"})], "repeats a constraint"),
        (lambda: [PROTOCOLS, UnsupportedAttribute("listener", "protocol")], "unsupported and constrained"),
        (lambda: [MaxChildren("volume", "snapshot", 1)], "which the driver does not claim"),
    ],
)
def test_a_malformed_or_contradictory_declaration_is_refused_naming_it(
    declare: Callable[[], list[Any]], problem: str
) -> None:
    # A constraint checks itself when made, the declaration when gathered.
    with pytest.raises(ValueError, match=problem):
        Capabilities.of(declare(), resource_types={"listener", "pool"})


def test_a_declaration_travels_to_the_plugin_unchanged_in_a_stable_order() -> None:
    declared = Capabilities.of(ACME)
    wire = declared.to_wire()
    assert Capabilities.from_wire(wire) == declared
    assert Capabilities.of(reversed(ACME)).to_wire() == wire
    assert wire["constraints"][0] == {
        "kind": "max_value",
        "resource_type": "listener",
        "attribute": "connection_limit",
        "limit": 50_000,
    }
    assert {"kind": "allowed_values", "resource_type": "listener", "attribute": "protocol",
            "values": ["HTTP", "HTTPS", "TCP"]} in wire["constraints"]  # fmt: skip


def test_the_plugin_skips_constraint_kinds_of_a_newer_agent_and_refuses_malformed_ones() -> None:
    newer = {"features": [], "constraints": [{"kind": "pattern", "resource_type": "listener"}]}
    assert Capabilities.from_wire(newer) == Capabilities()
    with pytest.raises(ValueError, match="missing required field `limit`"):
        Capabilities.from_wire(
            {"constraints": [{"kind": "max_children", "resource_type": "pool", "child_type": "member"}]}
        )
    for malformed in ([], {"features": "x"}, {"extra": 1}):
        with pytest.raises(ValueError):
            Capabilities.from_wire(malformed)


def test_the_widest_of_several_declarations_is_what_any_of_them_supports() -> None:
    old = Capabilities.of([PROTOCOLS, MaxChildren("pool", "member", 2), UnsupportedAttribute("pool", "x")])
    new = Capabilities.of([AllowedValues("listener", "protocol", {"UDP"}), MaxChildren("pool", "member", 5)])
    widest = Capabilities.widest([old, new])
    assert set(widest.constraints) == {
        AllowedValues("listener", "protocol", {"HTTP", "HTTPS", "TCP", "UDP"}),
        MaxChildren("pool", "member", 5),
    }
    assert Capabilities.widest([old]) == old


def test_a_reason_ends_the_message_travels_and_is_left_off_the_wire_when_none_is_given() -> None:
    why = "HAProxy sends no ICMP."
    declared = Capabilities.of([AllowedValues("healthmonitor", "type", {"TCP"}, why)])
    assert _message(declared, "healthmonitor", {"type": "PING"}) == (
        "healthmonitor type PING is not supported by provider acme (supported: TCP); use one of those, or "
        "a provider that supports it. HAProxy sends no ICMP."
    )
    unsupported = Capabilities.of([UnsupportedAttribute("pool", "x", reason="Nothing reads it.")])
    assert _message(unsupported, "pool", {"x": 1}).endswith("a provider that supports it. Nothing reads it.")
    assert Capabilities.from_wire(declared.to_wire()) == declared
    assert declared.to_wire()["constraints"][0]["reason"] == why
    assert "reason" not in Capabilities.of([PROTOCOLS]).to_wire()["constraints"][0]
    assert Capabilities.widest([declared, declared]) == declared
    with pytest.raises(ValueError, match="a reason is a sentence of text"):
        AllowedValues("pool", "x", {1}, 2)  # type: ignore[arg-type]


def _change(resource: Resource, tree: Resource, operation: str = "create") -> Change:
    return Change(str(uuid.uuid4()), operation, 1, 1, None, resource, tree)


def test_haproxy_refuses_at_apply_what_it_declares_unsupported(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(HaproxyDriver.list_opts(), group="driver:haproxy")
    driver = HaproxyDriver(conf, RecordingCallbacks())
    pool_id = str(uuid.uuid4())
    monitors = tuple(
        Resource("healthmonitor", str(uuid.uuid4()), "p", {"type": "HTTP"}, pool_id) for _ in range(2)
    )
    pool = Resource("pool", pool_id, "p", {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}, "lb", monitors)
    lb = Resource("loadbalancer", "lb", "p", {"provider": "haproxy"}, None, (pool,))
    with pytest.raises(NotSupported, match=r"pool .* would hold 2 healthmonitors; provider haproxy"):
        driver.check_supported(_change(monitors[1], lb))
    # An update adds nothing: the number of children is judged at create only.
    driver.check_supported(_change(monitors[1], lb, "update"))
    with pytest.raises(NotSupported, match="pool admin_state_up false is not supported"):
        disabled = Resource("pool", pool_id, "p", {"protocol": "HTTP", "admin_state_up": False}, "lb")
        driver.check_supported(_change(disabled, lb))


def test_an_agent_refuses_to_start_a_driver_whose_capabilities_are_malformed(
    conf: cfg.ConfigOpts, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Contradictory(NoopDriver):
        capabilities = frozenset({PROTOCOLS, UnsupportedAttribute("listener", "protocol")})

    # Fault injection: stevedore finds this class under the name noop.
    monkeypatch.setattr(driver_manager, "_load", lambda name: (Contradictory, "test"))
    with pytest.raises(ConfigError, match=r"driver 'noop' .* declares malformed capabilities: listener"):
        driver_manager.load_drivers(conf, ["noop"], driver_manager.AgentCallbacks())
