"""What the haproxy driver supports, declared so that the plugin refuses
the rest at accept (:mod:`tether.common.capabilities`).

Everything haproxy.cfg renders is supported (config.py, checks.py, tls.py);
a constraint names only what HAProxy cannot do, and says why. What depends
on other resources of the tree (cookie persistence in a TCP pool, listeners
that disagree on their pool's timeouts) no declaration can judge: the
rendering refuses it with InvalidConfiguration.
"""

from __future__ import annotations

from collections.abc import Collection

from tether.common.capabilities import AllowedValues, Capabilities, Constraint, MaxChildren
from tether.reference_drivers.haproxy import checks

_NO_UDP = "HAProxy proxies TCP only, not UDP."

DECLARED: frozenset[str | Constraint] = frozenset(
    {
        "operating_status",
        "stats",
        AllowedValues("listener", "protocol", {"HTTP", "HTTPS", "TCP", "TERMINATED_HTTPS"}, _NO_UDP),
        AllowedValues("pool", "protocol", {"HTTP", "HTTPS", "TCP", "PROXY"}, _NO_UDP),
        # A disabled backend would still report its servers up.
        AllowedValues(
            "pool",
            "admin_state_up",
            {True},
            "Take a pool's members out of service instead (their admin_state_up).",
        ),
        AllowedValues(
            "healthmonitor",
            "type",
            checks.TYPES,
            "HAProxy sends no ICMP (PING) and no UDP (UDP-CONNECT); a TCP check tests the member's "
            "port instead.",
        ),
        # The first enabled monitor of a pool is its check.
        MaxChildren("pool", "healthmonitor", 1),
    }
)

# Without a certificate directory there is nothing to terminate TLS with.
_WITHOUT_CERTIFICATES = AllowedValues(
    "listener",
    "protocol",
    {"HTTP", "HTTPS", "TCP"},
    _NO_UDP + " TERMINATED_HTTPS needs a certificate directory its agents lack "
    "([driver:haproxy] certificate_dir).",
)


def current(resource_types: Collection[str], certificate_dir: str | None) -> Capabilities:
    """What a driver with this ``certificate_dir`` (None: none) supports."""
    declared = Capabilities.of(DECLARED, resource_types)
    if certificate_dir:
        return declared
    narrowed = _WITHOUT_CERTIFICATES
    return Capabilities.of(
        [*declared.features, *(narrowed if c.key == narrowed.key else c for c in declared.constraints)],
        resource_types,
    )
