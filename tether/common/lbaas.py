"""Load balancing as a service: the reference set of resource types.

``loadbalancer`` is the root and names the provider that realises it;
``listener`` and ``pool`` belong to a loadbalancer; ``member`` and
``healthmonitor`` belong to a pool. Names and values follow the Octavia API
that operators already know.
"""

from __future__ import annotations

from typing import Any

from tether.common.resource_types import ResourceType

_ADMIN_STATE_UP: dict[str, Any] = {
    "type": "boolean",
    "default": True,
    "description": "False takes the resource out of service without deleting it.",
}
_PORT: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 65535}
# The standard formats, which clients and API testers know how to produce.
_IP: dict[str, Any] = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}

LOADBALANCER = ResourceType(
    name="loadbalancer",
    description="A virtual IP address and everything that serves traffic behind it.",
    properties={
        "provider": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_-]{0,63}$",
            "description": "The driver that realises this load balancer, e.g. noop, haproxy.",
        },
        "vip_address": _IP | {"description": "The virtual IP address clients connect to."},
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("provider",),
    immutable=frozenset({"provider", "vip_address"}),
)

LISTENER = ResourceType(
    name="listener",
    parent="loadbalancer",
    description="A protocol and port on which the load balancer accepts connections.",
    properties={
        "protocol": {"enum": ["TCP", "UDP", "HTTP", "HTTPS", "TERMINATED_HTTPS"]},
        "protocol_port": _PORT,
        "connection_limit": {
            "type": "integer",
            "minimum": -1,
            "default": -1,
            "description": "Maximum concurrent connections; -1 for no limit.",
        },
        "default_pool_id": {"type": ["string", "null"], "description": "Pool that gets the traffic."},
        "timeout_client_data": {"type": "integer", "minimum": 0, "description": "Milliseconds."},
        "timeout_member_data": {"type": "integer", "minimum": 0, "description": "Milliseconds."},
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("protocol", "protocol_port"),
    immutable=frozenset({"protocol", "protocol_port"}),
    references={"default_pool_id": "pool"},
)

POOL = ResourceType(
    name="pool",
    parent="loadbalancer",
    description="A group of members that share a protocol and a balancing algorithm.",
    properties={
        "protocol": {"enum": ["TCP", "UDP", "HTTP", "HTTPS", "PROXY"]},
        "lb_algorithm": {"enum": ["ROUND_ROBIN", "LEAST_CONNECTIONS", "SOURCE_IP"]},
        "session_persistence": {
            "type": ["object", "null"],
            "properties": {
                "type": {"enum": ["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"]},
                "cookie_name": {"type": "string", "maxLength": 255},
            },
            "required": ["type"],
            "additionalProperties": False,
        },
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("protocol", "lb_algorithm"),
    immutable=frozenset({"protocol"}),
)

MEMBER = ResourceType(
    name="member",
    parent="pool",
    description="A backend server that receives traffic from its pool.",
    properties={
        "address": _IP | {"description": "The backend's IP address."},
        "protocol_port": _PORT,
        "weight": {"type": "integer", "minimum": 0, "maximum": 256, "default": 1},
        "backup": {"type": "boolean", "default": False},
        "monitor_address": _IP,
        "monitor_port": _PORT,
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("address", "protocol_port"),
    immutable=frozenset({"address", "protocol_port"}),
)

HEALTHMONITOR = ResourceType(
    name="healthmonitor",
    parent="pool",
    description="How the load balancer checks that its pool's members are healthy.",
    properties={
        "type": {"enum": ["PING", "TCP", "HTTP", "HTTPS", "TLS-HELLO", "UDP-CONNECT"]},
        "delay": {"type": "integer", "minimum": 1, "description": "Seconds between checks."},
        "timeout": {"type": "integer", "minimum": 1, "description": "Seconds a check may take."},
        "max_retries": {"type": "integer", "minimum": 1, "maximum": 10},
        "max_retries_down": {"type": "integer", "minimum": 1, "maximum": 10, "default": 3},
        "http_method": {"enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]},
        "url_path": {"type": "string", "pattern": "^/[^\\x00]*$", "maxLength": 2048},
        "expected_codes": {"type": "string", "pattern": "^[0-9]{3}([-,][0-9]{3})*$"},
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("type", "delay", "timeout", "max_retries"),
    immutable=frozenset({"type"}),
)
