"""The haproxy driver's side of an ``ACTIVE_STANDBY`` pair: which role this
host plays for a load balancer, who its peer is, and keepalived told so.

Beside ``haproxy.cfg`` in the load balancer's directory: ``role``
(``active`` or ``standby``), ``peer`` (the other host's address on
``vip_interface``, empty when there is none) and keepalived's files
(:mod:`tether.reference_drivers.haproxy.keepalived`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from typing import Any

from tether.drivers.base import InvalidConfiguration, Peer, Resource
from tether.drivers.lbaas_models import Loadbalancer
from tether.reference_drivers.haproxy import keepalived

LOG = logging.getLogger(__name__)


def keepalived_of(options: Any) -> keepalived.Keepalived | None:
    """keepalived for ACTIVE_STANDBY, when it is installed and ``vip_interface`` set."""
    if not options.vip_interface:
        return None
    found = keepalived.find(options.keepalived_binary)
    if found is None:
        LOG.warning(
            "[driver:haproxy] keepalived_binary %r is not installed on PATH or in %s: ACTIVE_STANDBY is "
            "refused; install Debian's keepalived package, or set keepalived_binary to its path",
            options.keepalived_binary,
            ", ".join(keepalived.SBIN),
        )
        return None
    return keepalived.Keepalived(
        found, options.vip_interface, options.vrrp_advert_interval, options.start_timeout
    )


def standing_by(directory: str) -> bool:
    """Is this host's copy of the load balancer in ``directory`` the standby?"""
    return _read(os.path.join(directory, "role")) == "standby"


class Pairing:
    """The roles of one agent's load balancers.

    :param locked: the driver's lock of a load balancer's directory.
    """

    def __init__(
        self,
        base: str,
        keeper: keepalived.Keepalived | None,
        locked: Callable[[str], contextlib.AbstractContextManager[None]],
    ) -> None:
        self.base = base
        self.keepalived = keeper
        self.locked = locked

    @property
    def address(self) -> str | None:
        """This host's address on ``vip_interface``, for its peers."""
        return self.keepalived.address if self.keepalived else None

    def pair(self, tree: Resource, role: str, peer: Peer | None = None) -> None:
        """After HAProxy holds ``tree``: have keepalived hold its VIP as
        ``role`` (with ``peer``, for a standby; an active keeps the one it
        was last told of). Nothing for a SINGLE load balancer."""
        lb = tree.typed(Loadbalancer)
        if lb.topology != "ACTIVE_STANDBY":
            return
        if self.keepalived is None or not lb.vip_address:
            raise InvalidConfiguration(
                f"load balancer {lb.id} is ACTIVE_STANDBY, which needs a vip_address, and keepalived and "
                "[driver:haproxy] vip_interface on the agent's host; create it with a vip_address, or "
                "install keepalived and set vip_interface"
            )
        clash = keepalived.clashing(self.base, lb.id)
        if clash is not None:
            raise InvalidConfiguration(
                f"load balancer {lb.id} would share VRRP virtual router id {keepalived.router_id(lb.id)} "
                f"with load balancer {clash} on this host; create it again (a new id) and delete this one"
            )
        directory = os.path.join(self.base, lb.id)
        if role == "standby":
            self._keep_peer(directory, peer)
        self._hold(directory, lb.id, lb.vip_address, role)

    def activate(self, lb_id: str, peer: Peer | None) -> None:
        """This host is now the active of ``lb_id``, paired with ``peer``."""
        directory = os.path.join(self.base, lb_id)
        # Kept even before its first task has run here: that task pairs it with this peer.
        os.makedirs(directory, exist_ok=True)
        self._keep_peer(directory, peer)
        try:
            with open(os.path.join(directory, "desired.json")) as f:
                vip = json.load(f)[lb_id].get("vip_address")
        except (OSError, ValueError, KeyError):
            return
        if self.keepalived is not None and vip:
            self._hold(directory, lb_id, vip, "active")

    def stop(self, directory: str) -> None:
        if self.keepalived is not None:
            self.keepalived.stop(directory)

    def _hold(self, directory: str, lb_id: str, vip: str, role: str) -> None:
        assert self.keepalived is not None
        with self.locked(directory):
            self.keepalived.apply(directory, lb_id, vip, role, _read(os.path.join(directory, "peer")) or None)
            _write(os.path.join(directory, "role"), role)

    def _keep_peer(self, directory: str, peer: Peer | None) -> None:
        _write(os.path.join(directory, "peer"), (peer.address or "") if peer else "")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, text: str) -> None:
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)
