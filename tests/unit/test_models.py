"""Typed resource models, made from the registered types' schemas."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import sys
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from tether.common import lbaas
from tether.common.resource_types import Registry, ResourceType
from tether.common.states import ProvisioningStatus
from tether.drivers import lbaas_models, model_fields, model_source, models
from tether.drivers.base import Resource
from tether.drivers.lbaas_models import Listener, Loadbalancer, Member, Pool

ROOT = pathlib.Path(__file__).resolve().parents[2]

# A service of tether's own: its types are declared here, so that
# model_source can write their module from this one.
VOLUME = ResourceType(
    name="volume",
    description="A block device.",
    properties={
        "provider": {"type": "string"},
        "size_gb": {"type": "integer", "minimum": 1},
        "encrypted": {"type": "boolean", "default": False},
        "ratio": {"type": "number"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        "owner": {"type": ["string", "null"], "default": None},
        "tier": {"enum": ["gold", "silver", 3]},
        "anything": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        "class": {"type": "string"},
        "max-iops": {"type": "integer", "default": 100},
        "2fa": {"type": "boolean"},
        "id": {"type": "string"},
        "snapshots": {"type": "integer"},
    },
    required=("provider", "size_gb"),
)
SNAPSHOT = ResourceType(
    name="snapshot", parent="volume", properties={"from": {"type": "string"}}, required=("from",)
)


@pytest.fixture
def storage() -> models.ResourceModels:
    return models.ResourceModels(Registry({"volume": VOLUME, "snapshot": SNAPSHOT}))


def _volume(**attributes: Any) -> Resource:
    snapshot = Resource("snapshot", "s-1", "p", {"from": "today"}, "v-1", (), ProvisioningStatus.ACTIVE, 1)
    everything = {"provider": "cinder", "size_gb": 10, "tags": ["a", "b"], "class": "fast", "max-iops": 500}
    return Resource(
        "volume", "v-1", "p", everything | attributes, None, (snapshot,), ProvisioningStatus.PENDING_UPDATE, 2
    )


def test_a_new_services_types_get_a_typed_field_per_schema_property(storage: models.ResourceModels) -> None:
    volume = storage.model_class("volume")
    hints = typing.get_type_hints(volume)
    fields = {f.name: f for f in dataclasses.fields(volume)}
    assert {name: hints[name] for name in ("size_gb", "encrypted", "ratio", "tags", "labels")} == {
        "size_gb": int,
        "encrypted": bool,
        "ratio": float | None,
        "tags": tuple[str, ...] | None,
        "labels": Mapping[str, int] | None,
    }
    assert (hints["owner"], hints["tier"], hints["anything"]) == (str | None, str | int | None, Any)
    assert (hints["provider"], hints["provisioning_status"]) == (str, ProvisioningStatus | None)
    assert (fields["encrypted"].default, fields["max_iops"].default, fields["owner"].default) == (
        False,
        100,
        None,
    )
    assert fields["size_gb"].default is dataclasses.MISSING
    # The naming rules: keywords, reserved names, characters and digits.
    assert {"class_", "max_iops", "f_2fa", "id_", "snapshots_"} <= fields.keys()
    # Children after the attributes: an attribute took "snapshots".
    assert hints["snapshots_"] == tuple[storage.model_class("snapshot"), ...]


def test_no_attribute_takes_the_name_of_a_field_every_model_has() -> None:
    assert {f.name for f in dataclasses.fields(models.Model)} == model_fields.BASE_FIELDS
    assert {"on_device", "create_failed", "resource_type"} <= model_fields.RESERVED


def test_a_model_holds_the_resources_values_status_and_typed_children(
    storage: models.ResourceModels,
) -> None:
    model: Any = storage.model_of(_volume())
    assert (model.id, model.parent_id, model.size_gb, model.encrypted, model.tags) == (
        "v-1",
        None,
        10,
        False,
        ("a", "b"),
    )
    assert (model.class_, model.max_iops, model.owner) == ("fast", 500, None)
    assert (model.provisioning_status, model.applied_generation, model.on_device) == (
        ProvisioningStatus.PENDING_UPDATE,
        2,
        True,
    )
    (snapshot,) = model.snapshots_
    assert (type(snapshot).__name__, snapshot.from_, snapshot.parent_id) == ("Snapshot", "today", "v-1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        model.size_gb = 20
    # Back to attributes by their own names, as the resource holds them.
    assert models.attributes_of(model) == _volume().attributes | {"encrypted": False}


def test_a_model_leaves_out_what_its_schema_does_not_name_but_keeps_its_resource(
    storage: models.ResourceModels,
) -> None:
    newer = _volume(added_later="x")
    newer = dataclasses.replace(newer, children=(*newer.children, Resource("backup", "b-1", "p", {}, "v-1")))
    model: Any = storage.model_of(newer)
    assert not hasattr(model, "added_later") and len(model.snapshots_) == 1
    assert model.resource is newer and model.resource.attributes["added_later"] == "x"


def test_a_resource_that_cannot_be_made_a_model_says_why(storage: models.ResourceModels) -> None:
    lacking = _volume()
    lacking = dataclasses.replace(lacking, attributes={"provider": "cinder"})
    with pytest.raises(ValueError, match="volume v-1 lacks size_gb, which Volume requires"):
        storage.model_of(lacking)
    with pytest.raises(LookupError, match="'widget'"):
        storage.model_of(Resource("widget", "w", "p", {}))
    with pytest.raises(TypeError, match="volume v-1 is not a listener"):
        _volume().typed(Listener)


def test_a_driver_reads_the_tree_typed_with_each_resources_status() -> None:
    rejected = Resource("listener", "l-2", "p", {"protocol": "HTTP", "protocol_port": 81}, "lb")
    rejected = dataclasses.replace(
        rejected, provisioning_status=ProvisioningStatus.ERROR, applied_generation=0
    )
    member = Resource("member", "m-1", "p", {"address": "192.0.2.1", "protocol_port": 80}, "pool")
    pool = Resource("pool", "pool", "p", {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}, "lb", (member,))
    tree = Resource("loadbalancer", "lb", "p", {"provider": "noop"}, None, (rejected, pool))

    lb = tree.typed(Loadbalancer)
    assert [(listener.id, listener.create_failed) for listener in lb.listeners] == [("l-2", True)]
    assert lb.pools[0].members == (
        Member(id="m-1", project_id="p", parent_id="pool", address="192.0.2.1", protocol_port=80),
    )
    assert tree.model == lb and isinstance(tree.model, Loadbalancer)
    assert isinstance(tree.find("pool").model, Pool)


def test_the_installed_load_balancing_types_get_the_checked_in_models() -> None:
    installed = models.installed()
    for cls in lbaas_models.MODELS:
        assert installed.model_class(cls.resource_type) is cls


def test_the_checked_in_lbaas_models_are_what_the_schemas_make() -> None:
    written = model_source.source(["tether.common.lbaas"])
    committed = (ROOT / "tether" / "drivers" / "lbaas_models.py").read_text()
    assert written == committed, (
        "tether/drivers/lbaas_models.py is stale: run `python -m tether.drivers.model_source "
        "tether.common.lbaas > tether/drivers/lbaas_models.py` and commit the result"
    )


def test_checked_in_models_that_differ_from_the_schemas_give_way_to_made_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    changed = dataclasses.replace(lbaas.LISTENER, properties={**lbaas.LISTENER.properties, "backlog": {}})
    registry = Registry(
        {t.name: t for t in (lbaas.LOADBALANCER, changed, lbaas.POOL, lbaas.MEMBER, lbaas.HEALTHMONITOR)}
    )
    with caplog.at_level(logging.WARNING):
        made = models.ResourceModels(registry, lbaas_models.MODELS)
    assert "checked-in models of listener differ" in caplog.text
    assert made.model_class("listener") is not Listener and made.model_class("pool") is not Pool
    assert "backlog" in {f.name for f in dataclasses.fields(made.model_class("listener"))}


@pytest.fixture
def written_module() -> Iterator[types.ModuleType]:
    module = types.ModuleType("storage_models")
    sys.modules[module.__name__] = module
    try:
        exec(compile(model_source.source([__name__]), "storage_models.py", "exec"), vars(module))
        yield module
    finally:
        del sys.modules[module.__name__]


def test_a_written_module_holds_what_the_runtime_models_hold(
    written_module: types.ModuleType, storage: models.ResourceModels
) -> None:
    for cls in written_module.MODELS:
        assert models.described(cls) == storage.specs[cls.resource_type]
    assert (
        models.ResourceModels(
            Registry({"volume": VOLUME, "snapshot": SNAPSHOT}), written_module.MODELS
        ).model_class("volume")
        is written_module.Volume
    )
    model = _volume().typed(written_module.Volume)
    assert model.snapshots_[0].from_ == "today" and repr(model) == repr(storage.model_of(_volume()))
