from __future__ import annotations

import pytest

from tether.common.exceptions import ConfigError, InvalidInput
from tether.common.resource_types import Registry, ResourceType


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def test_registry_finds_the_load_balancing_types_through_entry_points(registry: Registry) -> None:
    assert {"loadbalancer", "listener", "pool", "member", "healthmonitor"} <= set(registry)
    assert registry["member"].parent == "pool"
    assert registry["loadbalancer"].is_root
    assert registry.by_collection("healthmonitors") is registry["healthmonitor"]


def test_a_loadbalancer_needs_nothing_but_a_provider(registry: Registry) -> None:
    registry.validate(registry["loadbalancer"], {"provider": "noop"})


def test_validation_error_names_the_json_path_and_the_reason(registry: Registry) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.validate(registry["member"], {"pool_id": "p", "address": "10.0.0.1", "protocol_port": 0})
    assert info.value.kwargs["path"] == "$.protocol_port"
    assert "less than the minimum of 1" in info.value.msg


def test_an_address_that_is_not_an_ip_is_refused(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match=r"\$\.vip_address"):
        registry.validate(registry["loadbalancer"], {"provider": "noop", "vip_address": "10.0.0"})


def test_unknown_attributes_are_refused_by_name(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="'colour' was unexpected"):
        registry.validate(registry["loadbalancer"], {"provider": "noop", "colour": "blue"})


def test_metadata_takes_short_string_keys_and_values_only(registry: Registry) -> None:
    lb = registry["loadbalancer"]
    registry.validate(lb, {"provider": "noop", "metadata": {"team": "web"}})
    with pytest.raises(InvalidInput, match=r"\$\.metadata\.n"):
        registry.validate(lb, {"provider": "noop", "metadata": {"n": 1}})
    with pytest.raises(InvalidInput, match="metadata"):
        registry.validate(lb, {"provider": "noop", "metadata": {"k": "v" * 256}})


def test_a_child_type_requires_its_parent_id(registry: Registry) -> None:
    with pytest.raises(InvalidInput, match="'loadbalancer_id' is a required property"):
        registry.validate(registry["listener"], {"protocol": "HTTP", "protocol_port": 80})


def test_a_type_whose_parent_is_not_installed_is_refused() -> None:
    orphan = ResourceType(name="widget", parent="gadget", properties={})
    with pytest.raises(ConfigError, match="names parent 'gadget'"):
        Registry({"widget": orphan})


def test_a_root_type_must_carry_a_provider() -> None:
    with pytest.raises(ConfigError, match="must declare a 'provider'"):
        Registry({"widget": ResourceType(name="widget", properties={})})


def test_a_format_jsonschema_has_no_check_for_is_ignored_by_both_validators() -> None:
    widget = ResourceType(
        name="widget",
        properties={"provider": {"type": "string"}, "tag": {"type": "string", "format": "no-such-format"}},
    )
    registry = Registry({"widget": widget})
    registry.validate(widget, {"provider": "noop", "tag": "anything"})
    assert registry._passes(widget, {"provider": "noop", "tag": "anything"})


@pytest.mark.parametrize(
    ("type_name", "body", "path", "message"),
    [
        (
            "listener",
            {"protocol": "TERMINATED_HTTPS", "protocol_port": 443},
            "$.default_tls_container_ref",
            "a TERMINATED_HTTPS listener needs default_tls_container_ref",
        ),
        (
            "listener",
            {"protocol": "HTTP", "protocol_port": 80, "default_tls_container_ref": "lb.pem"},
            "$.default_tls_container_ref",
            "default_tls_container_ref is only for TERMINATED_HTTPS listeners",
        ),
        (
            "pool",
            {
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "APP_COOKIE"},
            },
            "$.session_persistence.cookie_name",
            "APP_COOKIE session persistence needs cookie_name",
        ),
        (
            "pool",
            {
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "HTTP_COOKIE", "cookie_name": "SRV"},
            },
            "$.session_persistence",
            "cookie_name is only for APP_COOKIE session persistence",
        ),
        (
            "healthmonitor",
            {"type": "TCP", "delay": 1, "timeout": 1, "max_retries": 1, "url_path": "/"},
            "$.url_path",
            "http_method, url_path and expected_codes are only for HTTP and HTTPS health monitors",
        ),
    ],
)
def test_a_body_that_breaks_a_rule_between_attributes_is_refused_with_the_rules_words(
    registry: Registry, type_name: str, body: dict[str, object], path: str, message: str
) -> None:
    rtype = registry[type_name]
    assert rtype.parent_key is not None
    with pytest.raises(InvalidInput) as info:
        registry.validate(rtype, {rtype.parent_key: "parent", **body})
    assert info.value.kwargs["path"] == path
    assert info.value.msg.startswith(f"Invalid {type_name} at {path}: {message}")


@pytest.mark.parametrize(
    ("type_name", "body"),
    [
        (
            "listener",
            {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": "a.pem"},
        ),
        ("listener", {"protocol": "HTTPS", "protocol_port": 443, "default_tls_container_ref": None}),
        (
            "pool",
            {
                "protocol": "HTTP",
                "lb_algorithm": "ROUND_ROBIN",
                "session_persistence": {"type": "APP_COOKIE", "cookie_name": "JSESSIONID"},
            },
        ),
        ("pool", {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN", "session_persistence": None}),
        (
            "healthmonitor",
            {"type": "HTTPS", "delay": 1, "timeout": 1, "max_retries": 1, "expected_codes": "200-204,301"},
        ),
    ],
)
def test_a_body_that_keeps_the_rules_passes(
    registry: Registry, type_name: str, body: dict[str, object]
) -> None:
    rtype = registry[type_name]
    assert rtype.parent_key is not None
    registry.validate(rtype, {rtype.parent_key: "parent", **body})
