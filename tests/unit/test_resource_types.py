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
