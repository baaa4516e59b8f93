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


def _persistence_is(kind: str) -> dict[str, Any]:
    """A pool whose session persistence is of type ``kind``."""
    return {
        "properties": {
            "session_persistence": {
                "type": "object",
                "properties": {"type": {"const": kind}},
                "required": ["type"],
            }
        },
        "required": ["session_persistence"],
    }


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
        "topology": {
            "enum": ["SINGLE", "ACTIVE_STANDBY"],
            "default": "SINGLE",
            "description": "SINGLE: one agent's host serves it. ACTIVE_STANDBY: a second agent's host "
            "holds it too, ready to take the VIP at once when the first fails (host-placed providers "
            "whose driver supports it).",
        },
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("provider",),
    immutable=frozenset({"provider", "vip_address", "topology"}),
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
        "default_tls_container_ref": {
            "type": ["string", "null"],
            "minLength": 1,
            "maxLength": 1024,
            # No control characters: a driver may write it into a device's configuration.
            "pattern": "^[^\\x00-\\x1f\\x7f]*$",
            "description": (
                "The certificate a TERMINATED_HTTPS listener terminates TLS with: a reference the "
                "provider resolves (for haproxy, a PEM file of certificate, chain and key under the "
                "agent's [driver:haproxy] certificate_dir)."
            ),
        },
        "timeout_client_data": {
            "type": "integer",
            "minimum": 0,
            "description": "Milliseconds a client may stay silent.",
        },
        "timeout_member_connect": {
            "type": "integer",
            "minimum": 0,
            "description": "Milliseconds a connection to a member may take to open.",
        },
        "timeout_member_data": {
            "type": "integer",
            "minimum": 0,
            "description": "Milliseconds a member may stay silent.",
        },
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("protocol", "protocol_port"),
    immutable=frozenset({"protocol", "protocol_port"}),
    rules=(
        {
            "if": {"properties": {"protocol": {"const": "TERMINATED_HTTPS"}}, "required": ["protocol"]},
            "then": {
                "required": ["default_tls_container_ref"],
                "properties": {"default_tls_container_ref": {"type": "string"}},
            },
            "description": (
                "a TERMINATED_HTTPS listener needs default_tls_container_ref, the certificate and key "
                "it terminates TLS with."
            ),
        },
        {
            "if": {"properties": {"protocol": {"const": "TERMINATED_HTTPS"}}, "required": ["protocol"]},
            "else": {"properties": {"default_tls_container_ref": {"type": "null"}}},
            "description": (
                "default_tls_container_ref is only for TERMINATED_HTTPS listeners (others pass TLS "
                "through or serve none); leave it out."
            ),
        },
    ),
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
            "description": (
                "Keeps a client on one member: by its address (SOURCE_IP), by a cookie the load "
                "balancer inserts (HTTP_COOKIE) or by the application's own cookie (APP_COOKIE, "
                "named by cookie_name)."
            ),
            "properties": {
                "type": {"enum": ["SOURCE_IP", "HTTP_COOKIE", "APP_COOKIE"]},
                # An HTTP token (RFC 6265): no space, separator or control character.
                "cookie_name": {
                    "type": "string",
                    "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
                    "maxLength": 255,
                },
            },
            "required": ["type"],
            "additionalProperties": False,
        },
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("protocol", "lb_algorithm"),
    immutable=frozenset({"protocol"}),
    rules=(
        {
            "if": _persistence_is("APP_COOKIE"),
            "then": {"properties": {"session_persistence": {"required": ["cookie_name"]}}},
            "description": (
                "APP_COOKIE session persistence needs cookie_name: the application's cookie that ties "
                "a client to a member."
            ),
        },
        {
            "if": _persistence_is("APP_COOKIE"),
            "else": {"properties": {"session_persistence": {"properties": {"cookie_name": False}}}},
            "description": (
                "cookie_name is only for APP_COOKIE session persistence (SOURCE_IP needs no cookie, "
                "HTTP_COOKIE inserts its own); leave it out."
            ),
        },
    ),
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
        "monitor_address": _IP
        | {"description": "Where health checks go instead of address (they need a health monitor)."},
        "monitor_port": _PORT
        | {"description": "Where health checks go instead of protocol_port (they need a health monitor)."},
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
        "http_method": {
            "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"],
            "description": "HTTP and HTTPS monitors: the request's method (GET when not given).",
        },
        "url_path": {
            "type": "string",
            # No space or control character: it is the request line's target.
            "pattern": "^/[\\x21-\\x7e]*$",
            "maxLength": 2048,
            "description": "HTTP and HTTPS monitors: the path requested (/ when not given).",
        },
        "expected_codes": {
            "type": "string",
            "pattern": "^[1-5][0-9]{2}(-[1-5][0-9]{2})?(,[1-5][0-9]{2}(-[1-5][0-9]{2})?)*$",
            "description": (
                "HTTP and HTTPS monitors: the statuses of a healthy member, a code (200), a list "
                "(200,202) or a range (200-204), or several; 200 when not given."
            ),
        },
        "admin_state_up": _ADMIN_STATE_UP,
    },
    required=("type", "delay", "timeout", "max_retries"),
    immutable=frozenset({"type"}),
    rules=(
        {
            "if": {"properties": {"type": {"enum": ["HTTP", "HTTPS"]}}, "required": ["type"]},
            "else": {
                "properties": {
                    "http_method": {"type": "null"},
                    "url_path": {"type": "null"},
                    "expected_codes": {"type": "null"},
                }
            },
            "description": (
                "http_method, url_path and expected_codes are only for HTTP and HTTPS health monitors; "
                "leave them out of a PING, TCP, TLS-HELLO or UDP-CONNECT monitor."
            ),
        },
    ),
)
