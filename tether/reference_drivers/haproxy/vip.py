"""The VIP on the agent's host: the address a load balancer's listeners
bind, added where the load balancer arrives and removed where it leaves, so
that it moves between hosts with the load balancer.

With ``[driver:haproxy] vip_interface`` set, every apply of a load balancer
makes sure, before HAProxy binds it, that its ``vip_address`` is an address
of that interface (``ip addr add <vip>/<vip_prefixlen> dev <vip_interface>``
when it is not: one already there is fine) and announces it with gratuitous
ARP (``arping -U``, Debian's iputils-arping) so that the neighbours send its
traffic here at once rather than to the host it left. When the load balancer
leaves this host (deleted, or rebound to another agent and removed by
``converge``), its address is removed, unless another load balancer here
still binds it. What was added is recorded in the load balancer's directory
(``vip.json``): what is removed is exactly that, whatever the options say by
then.

Without ``vip_interface`` (single-host or loopback mode) nothing is added or
announced: the VIP must already be an address of the host, as 127.0.0.1 is.
An unspecified VIP (none, ``0.0.0.0``) is bound on every address of the host
and plumbs nothing.

Why add the address rather than let HAProxy bind one the host lacks
(``net.ipv4.ip_nonlocal_bind``): the kernel answers ARP for, and delivers
packets to, only its own addresses, so a host must hold the VIP to serve it
anyway; a non-local bind would only hide a VIP that is missing, and it is a
switch for every process of the host.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import ipaddress
import json
import logging
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

from oslo_config import cfg

from tether.drivers.base import DeviceUnreachable, DriverError, InvalidConfiguration
from tether.reference_drivers.haproxy.executables import find_executable

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "vip_interface",
        help="The interface of this host that load balancers' VIPs are added to, and announced on "
        "with gratuitous ARP, when they arrive, and removed from when they leave; unset, a VIP must "
        "already be an address of the host (one host, or loopback).",
    ),
    cfg.IntOpt(
        "vip_prefixlen",
        default=32,
        min=1,
        max=32,
        help="The prefix length an IPv4 VIP is added with (IPv6 ones: 128); a /32 adds no route "
        "and leaves the host's own addresses and routes as they are.",
    ),
    cfg.IntOpt(
        "vip_announcements",
        default=3,
        min=0,
        max=60,
        help="Gratuitous ARPs sent, one a second in the background, each time a load balancer with "
        "a VIP is applied; 0 sends none.",
    ),
    cfg.StrOpt("arping", default="arping", help="The arping executable (Debian's iputils-arping)."),
]

#: The record of what was added for a load balancer, in its directory.
RECORD = "vip.json"
_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Vip:
    """An address on an interface of this host."""

    address: str
    prefixlen: int
    interface: str

    @property
    def cidr(self) -> str:
        return f"{self.address}/{self.prefixlen}"

    @property
    def ipv6(self) -> bool:
        return ":" in self.address


class VipPlumbing:
    """Adds, announces and removes the VIPs of the load balancers under
    ``base`` (one directory each) on ``interface``; with no interface,
    removes only what records say was added."""

    def __init__(
        self,
        base: str,
        host: str,
        interface: str | None,
        prefixlen: int = 32,
        announcements: int = 3,
        arping: str = "arping",
    ) -> None:
        self.base = base
        self.host = host
        self.interface = interface
        self.prefixlen = prefixlen
        self.announcements = announcements
        self.arping = arping
        self._ip: str | None = None
        self._announcing: dict[Vip, threading.Thread] = {}
        self._announcing_lock = threading.Lock()

    @classmethod
    def configured(cls, options: Any, base: str, host: str) -> VipPlumbing:
        """From the ``[driver:haproxy]`` options, checked as the agent starts.

        :raises InvalidConfiguration: ``vip_interface`` is not an interface
            of this host, or a program it needs is not installed.
        """
        interface = options.vip_interface or None
        plumbing = cls(base, host, interface, options.vip_prefixlen, options.vip_announcements)
        if interface is not None:
            try:
                socket.if_nametoindex(interface)
            except OSError:
                names = ", ".join(sorted(name for _, name in socket.if_nameindex()))
                raise InvalidConfiguration(
                    f"[driver:haproxy] vip_interface {interface!r} is not an interface of host {host} "
                    f"(it has: {names}); set it to the interface on the VIPs' network, or unset it "
                    "when the VIPs are addresses the host already has."
                ) from None
            plumbing._ip = find_executable("ip", "iproute2", None)
            if plumbing.announcements:
                plumbing.arping = find_executable(options.arping, "iputils-arping", "arping")
        return plumbing

    # -- what the driver calls ------------------------------------------------

    def hold(self, lb_id: str, vip_address: str | None) -> threading.Thread | None:
        """Make ``vip_address`` an address of this host for load balancer
        ``lb_id`` and announce it; drop what its record held before when it
        differs. Returns the announcement, which goes on in the background.

        :raises InvalidConfiguration: the interface is gone, or the agent
            lacks CAP_NET_ADMIN.
        :raises DeviceUnreachable: ``ip`` failed otherwise.
        """
        wanted = self._wanted(vip_address)
        with self._host_lock():
            held = self._read(lb_id)
            if held is not None and held != wanted:
                self._drop(lb_id, held)
            if wanted is None:
                return None
            self._write(lb_id, wanted)
            self._add(wanted)
        return self._announce(wanted)

    def release(self, lb_id: str) -> None:
        """Remove the address that load balancer ``lb_id`` holds on this host,
        unless another load balancer here holds it too.

        :raises InvalidConfiguration: the agent lacks CAP_NET_ADMIN.
        :raises DeviceUnreachable: ``ip`` failed otherwise.
        """
        with self._host_lock():
            held = self._read(lb_id)
            if held is not None:
                self._drop(lb_id, held)

    def announce_again(self, lb_id: str) -> threading.Thread | None:
        """Announce the address load balancer ``lb_id`` holds here once more.

        Called at every status poll, as keepalived refreshes a master's
        gratuitous ARP: a host coming back from a partition still holds the
        VIPs it had until its agent hears they moved, and may answer for
        them meanwhile; the neighbours it misled are set right within one
        poll, not at the next change.
        """
        vip = self._read(lb_id)
        return None if vip is None else self._announce(vip)

    def holds(self, lb_id: str) -> bool:
        """Does the host still have the address load balancer ``lb_id`` was
        given? One removed by hand makes the drift audit find the tree
        missing, and its repair adds it back."""
        vip = self._read(lb_id)
        try:
            return vip is None or self._present(vip, "remove")
        except DriverError:
            return True  # cannot tell; the next audit asks again

    # -- the addresses ----------------------------------------------------------

    def _wanted(self, vip_address: str | None) -> Vip | None:
        if self.interface is None or not vip_address:
            return None
        try:
            address = ipaddress.ip_address(vip_address)
        except ValueError:
            raise InvalidConfiguration(f"vip_address {vip_address!r} is not an IP address.") from None
        if address.is_unspecified:
            return None
        prefixlen = 128 if address.version == 6 else self.prefixlen
        return Vip(str(address), prefixlen, self.interface)

    def _add(self, vip: Vip) -> None:
        if self._present(vip, "add"):
            return
        args = ["addr", "add", vip.cidr, "dev", vip.interface]
        # Bindable at once: duplicate address detection would hold it tentative.
        args += ["nodad"] if vip.ipv6 else []
        result = self._run_ip(args)
        if result.returncode != 0 and not self._present(vip, "add"):  # not a racing add
            raise self._failure("add", vip, args, result.stderr)
        LOG.info("VIP %s added to %s", vip.cidr, vip.interface)

    def _drop(self, lb_id: str, vip: Vip) -> None:
        """Remove ``vip`` unless another load balancer's record holds it,
        then ``lb_id``'s record."""
        others = [d for d in self._directories() if d != lb_id and self._read(d) == vip]
        if others:
            LOG.info("VIP %s stays on %s: load balancer %s binds it too", vip.cidr, vip.interface, others[0])
        elif self._present(vip, "remove"):
            args = ["addr", "del", vip.cidr, "dev", vip.interface]
            result = self._run_ip(args)
            if result.returncode != 0 and self._present(vip, "remove"):
                raise self._failure("remove", vip, args, result.stderr)
            LOG.info("VIP %s removed from %s", vip.cidr, vip.interface)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.base, lb_id, RECORD))

    def _present(self, vip: Vip, doing: str) -> bool:
        """Is ``vip`` an address of its interface? An interface that is gone
        holds nothing, which is all a removal wants."""
        args = ["-j", "addr", "show", "dev", vip.interface]
        result = self._run_ip(args)
        if result.returncode != 0:
            if doing == "remove" and _no_device(result.stderr):
                return False
            raise self._failure(doing, vip, args, result.stderr)
        links: list[dict[str, Any]] = json.loads(result.stdout or "[]")
        return any(
            ipaddress.ip_address(a.get("local", "::")) == ipaddress.ip_address(vip.address)
            and a.get("prefixlen") == vip.prefixlen
            for link in links
            for a in link.get("addr_info", [])
        )

    def _failure(self, doing: str, vip: Vip, args: list[str], stderr: str) -> DriverError:
        command = "ip " + " ".join(args)
        what = f"VIP {vip.address} could not be {'added to' if doing == 'add' else 'removed from'} "
        what += f"interface {vip.interface} of host {self.host}"
        if _no_device(stderr):
            return InvalidConfiguration(
                f"{what}: the host has no interface {vip.interface} ([driver:haproxy] vip_interface); "
                "set vip_interface to one it has and restart the agent.",
                operator_message=f"{command}: {stderr.strip()}",
            )
        if "not permitted" in stderr:
            return InvalidConfiguration(
                f"{what}: the agent lacks the capability CAP_NET_ADMIN; run tether-agent as root or "
                "grant it CAP_NET_ADMIN (systemd: AmbientCapabilities=CAP_NET_ADMIN), then update "
                "the load balancer.",
                operator_message=f"{command}: {stderr.strip()}",
            )
        return DeviceUnreachable(f"{what}: {command} failed: {stderr.strip() or 'no detail'}")

    # -- announcing ---------------------------------------------------------------

    def _announce(self, vip: Vip) -> threading.Thread | None:
        """Gratuitous ARP for ``vip``, in the background: the call does not wait
        the seconds between announcements, and an announcement already going
        on for it is not repeated. Every apply announces, not only the first,
        and so does every status poll (:meth:`announce_again`): a neighbour
        that learned another host meanwhile (a partition that healed, a load
        balancer that moved back before its copy here was removed) is
        corrected within a poll."""
        if vip.ipv6 or not self.announcements:
            return None  # no ARP in IPv6; unsolicited neighbour advertisements are not sent
        with self._announcing_lock:
            self._announcing = {v: t for v, t in self._announcing.items() if t.is_alive()}
            running = self._announcing.get(vip)
            if running is not None:
                return running
            thread = threading.Thread(
                target=self._arping, args=(vip,), name=f"arping {vip.address}", daemon=True
            )
            self._announcing[vip] = thread
            thread.start()
            return thread

    def _arping(self, vip: Vip) -> None:
        count = str(self.announcements)
        args = [self.arping, "-q", "-U", "-c", count, "-I", vip.interface, vip.address]
        try:
            result = subprocess.run(
                args, capture_output=True, text=True, timeout=self.announcements + _TIMEOUT, check=False
            )
            failed = result.stderr.strip() if result.returncode != 0 else ""
        except (OSError, subprocess.TimeoutExpired) as exc:
            failed = str(exc)
        if failed:
            LOG.warning(
                "gratuitous ARP for VIP %s on %s failed (%s): %s; neighbours reach this host only "
                "once their ARP entries expire (arping needs CAP_NET_RAW, which Debian's "
                "iputils-arping grants as a file capability)",
                vip.address,
                vip.interface,
                " ".join(args),
                failed,
            )

    # -- records and locking ----------------------------------------------------------

    def _read(self, lb_id: str) -> Vip | None:
        try:
            with open(os.path.join(self.base, lb_id, RECORD)) as f:
                return Vip(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None

    def _write(self, lb_id: str, vip: Vip) -> None:
        # Before the address is added: a crash in between leaves a record of
        # an address that may not be there, whose removal is harmless.
        path = os.path.join(self.base, lb_id, RECORD)
        with open(path + ".new", "w") as f:
            json.dump(dataclasses.asdict(vip), f)
        os.replace(path + ".new", path)

    def _directories(self) -> list[str]:
        try:
            return [d for d in os.listdir(self.base) if os.path.isdir(os.path.join(self.base, d))]
        except FileNotFoundError:
            return []

    def _run_ip(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        if self._ip is None:
            self._ip = find_executable("ip", "iproute2", None)
        try:
            return subprocess.run(
                [self._ip, *args], capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeviceUnreachable(
                f"running {self._ip} {' '.join(args)} failed on host {self.host}: {exc}"
            ) from exc

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        # Load balancers sharing a VIP take turns: one must not remove it
        # while another is adding it.
        os.makedirs(self.base, exist_ok=True)
        with open(os.path.join(self.base, ".vip.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _no_device(stderr: str) -> bool:
    return "Cannot find device" in stderr or "does not exist" in stderr
