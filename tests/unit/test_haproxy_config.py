"""What the haproxy driver writes to haproxy.cfg for a tree, HAProxy aside."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from oslo_config import cfg

from tether.common import config
from tether.common.states import ProvisioningStatus
from tether.drivers.base import Callbacks, Change, InvalidConfiguration, Resource, driver_group
from tether.drivers.haproxy import HaproxyDriver
from tether.drivers.haproxy.config import render

ACTIVE, ERROR = ProvisioningStatus.ACTIVE, ProvisioningStatus.ERROR


def _node(
    type_name: str,
    resource_id: str,
    attributes: dict[str, Any],
    parent_id: str | None = "lb",
    children: tuple[Resource, ...] = (),
    status: ProvisioningStatus | None = ACTIVE,
    applied: int | None = 1,
) -> Resource:
    return Resource(type_name, resource_id, "p", attributes, parent_id, children, status, applied)


def _listener(resource_id: str, port: int, **state: Any) -> Resource:
    return _node("listener", resource_id, {"protocol": "HTTP", "protocol_port": port}, **state)


def _pool(resource_id: str, *members: Resource, **state: Any) -> Resource:
    attributes = {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}
    return _node("pool", resource_id, attributes, children=members, **state)


def _member(resource_id: str, port: int, **state: Any) -> Resource:
    return _node("member", resource_id, {"address": "192.0.2.1", "protocol_port": port}, "pool-1", **state)


def _lb(*children: Resource) -> Resource:
    return _node("loadbalancer", "lb", {"provider": "haproxy", "vip_address": "192.0.2.10"}, None, children)


def test_a_listener_whose_create_failed_is_not_written_to_haproxy_cfg(tmp_path: pathlib.Path) -> None:
    tree = _lb(
        _listener("served", 80),
        _listener("rejected", 81, status=ERROR, applied=0),
        _pool("pool-1", _member("m-1", 8080)),
    )
    written = render(tree, str(tmp_path))
    assert "frontend served" in written and "bind 192.0.2.10:80" in written
    assert "rejected" not in written and ":81" not in written


def test_a_pool_whose_create_failed_is_left_out_with_its_members(tmp_path: pathlib.Path) -> None:
    tree = _lb(_listener("served", 80), _pool("pool-1", _member("m-1", 8080), status=ERROR, applied=0))
    written = render(tree, str(tmp_path))
    assert "pool-1" not in written and "m-1" not in written


@pytest.mark.parametrize(
    ("status", "applied"),
    [
        (ERROR, 2),  # a failed update: the device holds generation 2
        (ProvisioningStatus.PENDING_UPDATE, 0),  # an update after a failed create creates it
        (ProvisioningStatus.PENDING_CREATE, 0),
        (None, None),  # from a plugin that did not say
    ],
)
def test_a_listener_is_written_unless_its_create_failed(
    tmp_path: pathlib.Path, status: ProvisioningStatus | None, applied: int | None
) -> None:
    written = render(_lb(_listener("l-1", 80, status=status, applied=applied)), str(tmp_path))
    assert "frontend l-1" in written


def test_a_member_of_a_pool_whose_create_failed_is_refused_naming_the_pool(tmp_path: pathlib.Path) -> None:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf.register_opts(HaproxyDriver.list_opts(), group=driver_group("haproxy"))
    conf([], project="tether", default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    driver = HaproxyDriver(conf, Callbacks())
    member = _member("m-1", 8080, status=ProvisioningStatus.PENDING_CREATE, applied=0)
    tree = _lb(_pool("pool-1", member, status=ERROR, applied=0))
    with pytest.raises(InvalidConfiguration, match="belongs to pool pool-1, whose create failed"):
        driver.create(Change("t", "create", 1, 1, None, member, tree))
    assert not (tmp_path / "haproxy" / "lb").exists()
