"""VIPs without conflicts.

* A listener reserves its load balancer's VIP address with its transport and
  port (``vip 10.0.0.5 tcp 80``): a second listener on them, in any load
  balancer of any project, is refused with 409. HAProxy binds with
  SO_REUSEPORT, so two would both come up and split the traffic.
* A load balancer created without ``vip_address`` is given the lowest free
  address of ``[loadbalancer] vip_range`` and reserves it alone
  (``vip-address 10.0.0.7``), as does one that asks for an address in the
  range. Its reservations go with it when it is deleted.
* With no range configured such a load balancer keeps ``vip_address`` null
  and its listeners bind every address of their host (``vip * tcp 80``): one
  load balancer per port, which keeps a demo or a single host without a
  network plan working, and never two on one wildcard port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from tether.common.exceptions import Conflict
from tether.plugin.db.models import ResourceRecord
from tether.plugin.lbaas.vip_range import Address, VipRange
from tether.plugin.tasks.accept_checks import Acceptance, AcceptCheck

GROUP = "loadbalancer"

OPTS: list[cfg.Opt] = [
    cfg.ListOpt(
        "vip_range",
        default=[],
        help="Addresses given to load balancers created without a vip_address: networks "
        "(10.0.0.0/24; an IPv4 network's own and broadcast addresses are left out) or ranges "
        "(10.0.0.10-10.0.0.50), comma-separated, given out lowest first, each to one load balancer "
        "until it is deleted. Empty: such a load balancer has no VIP address and its listeners bind "
        "every address of their host, so only one of them may use each port.",
    ),
]

ADDRESS_PREFIX = "vip-address "
ENDPOINT_PREFIX = "vip "


def endpoint_key(vip: str | None, protocol: str, port: int) -> str:
    """The reservation of a listener (the format migration 0014 wrote out)."""
    transport = "udp" if protocol == "UDP" else "tcp"
    return f"{ENDPOINT_PREFIX}{_address_text(vip)} {transport} {port}"


def address_key(address: Address) -> str:
    return f"{ADDRESS_PREFIX}{address}"


class LoadBalancerVips(AcceptCheck):
    """Gives out VIP addresses from ``[loadbalancer] vip_range``."""

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        self.range = VipRange.parse(conf.loadbalancer.vip_range)

    @classmethod
    def list_opts(cls) -> list[tuple[str, list[cfg.Opt]]]:
        return [(GROUP, OPTS)]

    def checks_create_of_root(self, attributes: Mapping[str, Any]) -> bool:
        vip = attributes.get("vip_address")
        return bool(self.range) and (vip is None or ipaddress.ip_address(vip) in self.range)

    def create(self, acceptance: Acceptance) -> None:
        if not self.range:
            return
        vip = acceptance.resource.attributes.get("vip_address")
        if vip is None:
            acceptance.assign("vip_address", str(self._allocate(acceptance)))
            return
        address = ipaddress.ip_address(vip)
        if address in self.range:
            acceptance.reserve(
                address_key(address),
                f"{address} is already the vip_address of another load balancer; leave vip_address out "
                "to be given a free address, or choose another.",
            )

    def _allocate(self, acceptance: Acceptance) -> Address:
        taken = {
            ipaddress.ip_address(key[len(ADDRESS_PREFIX) :]) for key in acceptance.reserved(ADDRESS_PREFIX)
        }
        for address in self.range.free(taken):
            if _served(acceptance, address):
                continue
            # A concurrent accept on another plugin replica may take it first: try the next.
            if acceptance.try_reserve(address_key(address)):
                return address
        raise Conflict(
            f"No address is left to give out: all {self.range.size()} of [loadbalancer] vip_range "
            f"({self.range.text}) are load balancers' VIPs. Give a vip_address outside it, delete a "
            "load balancer you no longer need, or ask the operator to widen the range."
        )


class ListenerEndpoints(AcceptCheck):
    """One listener per VIP address, transport and port."""

    def create(self, acceptance: Acceptance) -> None:
        assert acceptance.parent is not None  # a listener always has its load balancer
        attributes = acceptance.resource.attributes
        vip = acceptance.parent.attributes.get("vip_address")
        key = endpoint_key(vip, attributes["protocol"], attributes["protocol_port"])
        if not acceptance.try_reserve(key):
            same_tree = _same_tree(acceptance, acceptance.holder(key))
            raise Conflict(_in_use(vip, attributes["protocol_port"], same_tree))


def _served(acceptance: Acceptance, address: Address) -> bool:
    """Whether listeners serve ``address`` though no load balancer holds it
    (one named it before the range was configured): it is not free either."""
    return bool(acceptance.reserved(f"{ENDPOINT_PREFIX}{address} "))


def _same_tree(acceptance: Acceptance, holder: str | None) -> bool:
    if holder is None:
        return False
    row = acceptance.session.get(ResourceRecord, holder)
    return row is not None and row.root_id == acceptance.resource.root_id


def _in_use(vip: str | None, port: int, same_tree: bool) -> str:
    by = "another listener of this load balancer" if same_tree else "another load balancer"
    if _address_text(vip) == "*":
        return (
            f"Port {port} of every address (a load balancer without a vip_address binds them all) is "
            f"already in use by {by}; choose another protocol_port, or create the load balancer with "
            "a vip_address (an operator may set [loadbalancer] vip_range to have one given out)."
        )
    address = ipaddress.ip_address(vip or "")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{shown}:{port} is already in use by {by}; choose another vip_address or protocol_port."


def _address_text(vip: str | None) -> str:
    if not vip:
        return "*"
    address = ipaddress.ip_address(vip)
    return "*" if address.is_unspecified else str(address)
