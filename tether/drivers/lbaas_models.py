"""Typed models of the resource types of :mod:`tether.common.lbaas`, for drivers
(see :mod:`tether.drivers.models`).

Generated from the types' schemas by
``python -m tether.drivers.model_source tether.common.lbaas``; do not edit:
a test fails when this module and the schemas differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from tether.drivers.models import Model, children


@dataclasses.dataclass(frozen=True, kw_only=True)
class Loadbalancer(Model):
    """A virtual IP address and everything that serves traffic behind it."""

    resource_type: ClassVar[str] = "loadbalancer"

    #: Human-readable name.
    name: str | None = None
    description: str | None = None
    #: Free-form labels: short string keys and values.
    metadata: Mapping[str, str] | None = None
    #: The driver that realises this load balancer, e.g. noop, haproxy.
    provider: str
    #: The virtual IP address clients connect to.
    vip_address: str | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True
    listeners: tuple[Listener, ...] = children("listener")
    pools: tuple[Pool, ...] = children("pool")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Listener(Model):
    """A protocol and port on which the load balancer accepts connections."""

    resource_type: ClassVar[str] = "listener"

    #: Human-readable name.
    name: str | None = None
    description: str | None = None
    #: Free-form labels: short string keys and values.
    metadata: Mapping[str, str] | None = None
    protocol: str
    protocol_port: int
    #: Maximum concurrent connections; -1 for no limit.
    connection_limit: int = -1
    #: Pool that gets the traffic.
    default_pool_id: str | None = None
    #: Milliseconds.
    timeout_client_data: int | None = None
    #: Milliseconds.
    timeout_member_data: int | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pool(Model):
    """A group of members that share a protocol and a balancing algorithm."""

    resource_type: ClassVar[str] = "pool"

    #: Human-readable name.
    name: str | None = None
    description: str | None = None
    #: Free-form labels: short string keys and values.
    metadata: Mapping[str, str] | None = None
    protocol: str
    lb_algorithm: str
    session_persistence: Mapping[str, Any] | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True
    healthmonitors: tuple[Healthmonitor, ...] = children("healthmonitor")
    members: tuple[Member, ...] = children("member")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Healthmonitor(Model):
    """How the load balancer checks that its pool's members are healthy."""

    resource_type: ClassVar[str] = "healthmonitor"

    #: Human-readable name.
    name: str | None = None
    description: str | None = None
    #: Free-form labels: short string keys and values.
    metadata: Mapping[str, str] | None = None
    type: str
    #: Seconds between checks.
    delay: int
    #: Seconds a check may take.
    timeout: int
    max_retries: int
    max_retries_down: int = 3
    http_method: str | None = None
    url_path: str | None = None
    expected_codes: str | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class Member(Model):
    """A backend server that receives traffic from its pool."""

    resource_type: ClassVar[str] = "member"

    #: Human-readable name.
    name: str | None = None
    description: str | None = None
    #: Free-form labels: short string keys and values.
    metadata: Mapping[str, str] | None = None
    #: The backend's IP address.
    address: str
    protocol_port: int
    weight: int = 1
    backup: bool = False
    monitor_address: str | None = None
    monitor_port: int | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True


#: every model of this module
MODELS: tuple[type[Model], ...] = (Loadbalancer, Listener, Pool, Healthmonitor, Member)
