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
    #: SINGLE: one agent's host serves it. ACTIVE_STANDBY: a second agent's host holds it too, ready to take
    #: the VIP at once when the first fails (host-placed providers whose driver supports it).
    topology: str = "SINGLE"
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
    #: The certificate a TERMINATED_HTTPS listener terminates TLS with: a reference the provider resolves (for
    #: haproxy, a PEM file of certificate, chain and key under the agent's [driver:haproxy] certificate_dir).
    default_tls_container_ref: str | None = None
    #: Milliseconds a client may stay silent.
    timeout_client_data: int | None = None
    #: Milliseconds a connection to a member may take to open.
    timeout_member_connect: int | None = None
    #: Milliseconds a member may stay silent.
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
    #: Keeps a client on one member: by its address (SOURCE_IP), by a cookie the load balancer inserts
    #: (HTTP_COOKIE) or by the application's own cookie (APP_COOKIE, named by cookie_name).
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
    #: HTTP and HTTPS monitors: the request's method (GET when not given).
    http_method: str | None = None
    #: HTTP and HTTPS monitors: the path requested (/ when not given).
    url_path: str | None = None
    #: HTTP and HTTPS monitors: the statuses of a healthy member, a code (200), a list (200,202) or a range
    #: (200-204), or several; 200 when not given.
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
    #: Where health checks go instead of address (they need a health monitor).
    monitor_address: str | None = None
    #: Where health checks go instead of protocol_port (they need a health monitor).
    monitor_port: int | None = None
    #: False takes the resource out of service without deleting it.
    admin_state_up: bool = True


#: every model of this module
MODELS: tuple[type[Model], ...] = (Loadbalancer, Listener, Pool, Healthmonitor, Member)
