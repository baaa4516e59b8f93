"""Test hosts on a private network, made of Linux network namespaces.

A :class:`Network` is what a rack of agent hosts looks like from the broker's
machine, built with iproute2 only:

* a Linux bridge in the root namespace (the switch) with an address of a
  private /24 (the broker's and the plugin's side: the "gateway");
* per host, a network namespace holding one end of a veth pair (``eth0``,
  with its own address on the /24 and a default route via the gateway,
  loopback up) and the other end plugged into the bridge.

Processes run "on" a host through ``ip netns exec`` (:meth:`Host.command`,
:meth:`Host.run`, :meth:`Host.popen`): they see only that host's interfaces,
so whatever they reach of the broker they reach across the bridge, and
:meth:`Host.cut` takes exactly that host off the network.

Everything is named after the test session's pid (``tether-net-<pid>-…``
namespaces, ``tb<pid>…`` bridges, ``tv<pid>…`` veths), so two sessions on one
machine never clash, and is removed by :meth:`Network.close`, by an
``atexit`` hook when a session dies of an exception or Ctrl-C, and, for a
session that was SIGKILLed, by the next session, which sweeps away what
belongs to pids no longer running.

Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN): without it
:meth:`Network.create` raises :class:`NetnsError` saying so, and the tests
fail rather than skip.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import json
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

IP = shutil.which("ip") or "/usr/sbin/ip"
#: Where the /24s of test networks come from: 10.231.0.0/24 … 10.231.255.0/24.
SUPERNET = ipaddress.ip_network("10.231.0.0/16")
_NETNS_PREFIX = "tether-net-"
_NETNS_DIR = Path("/run/netns")

_network_numbers = itertools.count(1)


class NetnsError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _ip_json(*args: str) -> list[dict[str, Any]]:
    output = _ip("-j", *args).stdout.strip()
    return list(json.loads(output)) if output else []


def _pid_running(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


class Host:
    """One test host: a network namespace behind one port of the bridge."""

    def __init__(self, network: Network, index: int, address: str) -> None:
        self.network = network
        self.index = index
        #: the network namespace (``ip netns`` name); also a fine host name
        self.name = f"{network.prefix}-h{index}"
        #: the host's address on the test network
        self.address = address
        #: the bridge's end of the host's veth pair, in the root namespace
        self.port = f"{network.link_prefix}h{index}"
        #: the host's end, inside its namespace
        self.interface = "eth0"

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run on this host. ``ip netns exec`` enters the
        namespace and then execs ``argv``, so the process it starts is the
        program itself: its pid and signals are the program's."""
        return [IP, "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """:func:`subprocess.run` on this host."""
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """:class:`subprocess.Popen` on this host."""
        return subprocess.Popen(self.command(argv), **kwargs)

    def cut(self) -> None:
        """Unplug the host's cable: its bridge port goes down.

        Why the port and not a firewall rule or the host's own interface:
        with the bridge's end of the veth down, the kernel silently discards
        every frame between this host and everyone else, in both directions,
        and tells no one. No RST, no ICMP unreachable, no error on a socket:
        established TCP connections stay ESTABLISHED at both ends and keep
        retransmitting into the void, exactly as with a pulled cable or a
        dead switch port. So the only way the broker, the agent and the plugin
        notice is what production relies on: missed AMQP heartbeats and
        missed state reports. Taking ``eth0`` down *inside* the namespace
        instead would delete the host's routes and hand its sockets an
        immediate ENETUNREACH, and a netfilter REJECT would answer with
        resets: both are failures that announce themselves, which a real
        network partition does not. (A netfilter DROP would be as silent,
        but needs iptables or nft, which a test machine need not have.)
        """
        _ip("link", "set", self.port, "down")

    def restore(self) -> None:
        """Plug the cable back in: the same addresses, the same connections
        (those that either end has not given up on meanwhile)."""
        _ip("link", "set", self.port, "up")

    def addresses(self) -> set[str]:
        """The addresses of the host's ``eth0``."""
        links = _ip_json("-n", self.name, "address", "show", "dev", self.interface)
        return {a["local"] for link in links for a in link.get("addr_info", [])}

    @property
    def mac(self) -> str:
        """The link-layer address of the host's ``eth0``."""
        return str(_ip_json("-n", self.name, "link", "show", "dev", self.interface)[0]["address"])

    def neighbour(self, address: str) -> str | None:
        """The link-layer address this host's ARP cache holds for ``address``."""
        entries = _ip_json("-n", self.name, "neigh", "show", address, "dev", self.interface)
        return next((str(e["lladdr"]) for e in entries if e.get("lladdr")), None)

    @property
    def linked(self) -> bool:
        """Is the host's bridge port up?"""
        links = _ip_json("link", "show", "dev", self.port)
        return bool(links) and "UP" in links[0].get("flags", [])

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address}>"


class Network:
    """A bridge with ``hosts`` namespaced hosts behind it (see the module doc).

    Use as a context manager, or call :meth:`create` and :meth:`close`.
    """

    def __init__(self, hosts: int) -> None:
        if not 1 <= hosts <= 99:
            raise ValueError("a test network has 1 to 99 hosts")
        number = next(_network_numbers)
        pid = os.getpid()
        #: prefix of the namespaces' names
        self.prefix = f"{_NETNS_PREFIX}{pid}-{number}"
        # Interface names hold at most 15 characters: "tv" + pid (7 digits at
        # most) + "n" + number + "h" + host index.
        self.link_prefix = f"tv{pid}n{number}"
        #: the bridge, in the root namespace
        self.bridge = f"tb{pid}n{number}"
        self.host_count = hosts
        #: the test network's /24, chosen by :meth:`create`
        self.subnet: ipaddress.IPv4Network | None = None
        #: the bridge's address: where hosts reach the root namespace
        self.gateway = ""
        self.hosts: list[Host] = []
        self._created = False

    # -- lifecycle -------------------------------------------------------

    def create(self) -> None:
        """Build the bridge and the hosts; on any failure, remove what was built.

        :raises NetnsError: when this machine cannot build them (not root, no
            CAP_NET_ADMIN, no iproute2), naming why.
        """
        if not os.access(IP, os.X_OK):
            raise NetnsError(f"{IP} is missing: install iproute2 to build test hosts")
        if os.geteuid() != 0:
            raise NetnsError(
                "test hosts are network namespaces, which only root can create "
                f"(this session runs as uid {os.geteuid()}): run the functional tests as root"
            )
        sweep_leftovers()
        atexit.register(self.close)
        self._created = True
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            self.subnet = self._claim_subnet()
            addresses = list(self.subnet.hosts())
            self.gateway = str(addresses[0])
            _ip("link", "set", self.bridge, "up")
            for index in range(1, self.host_count + 1):
                host = Host(self, index, str(addresses[index]))
                self.hosts.append(host)
                self._build(host)
        except BaseException as exc:
            self.close()
            if isinstance(exc, NetnsError) and "Operation not permitted" in str(exc):
                raise NetnsError(
                    f"cannot build test hosts: {exc}; network namespaces need CAP_SYS_ADMIN "
                    "and CAP_NET_ADMIN (run as root, outside a restricted container)"
                ) from exc
            raise

    def close(self) -> None:
        """Remove the namespaces (which takes their veth pairs with them) and
        the bridge. Safe to call twice, and after a failed :meth:`create`."""
        if not self._created:
            return
        errors = []
        for host in self.hosts:
            if (_NETNS_DIR / host.name).exists():
                result = _ip("netns", "delete", host.name, check=False)
                if result.returncode != 0:
                    errors.append(result.stderr.strip())
            # Normally gone with its namespace; not if the peer never moved in.
            _ip("link", "delete", host.port, check=False)
        # A host whose creation failed half-way is not in self.hosts yet.
        for path in _NETNS_DIR.glob(f"{self.prefix}-h*"):
            _ip("netns", "delete", path.name, check=False)
        _ip("link", "delete", self.bridge, check=False)
        self._created = False
        atexit.unregister(self.close)
        if errors:
            raise NetnsError(f"could not remove every namespace of {self.prefix}: {errors}")

    def __enter__(self) -> Self:
        self.create()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------

    def _build(self, host: Host) -> None:
        _ip("netns", "add", host.name)
        # The namespace's end is created inside it, so its name (eth0) never
        # meets the root namespace's own interfaces.
        _ip("link", "add", host.port, "type", "veth", "peer", "name", host.interface, "netns", host.name)
        _ip("link", "set", host.port, "master", self.bridge)
        _ip("link", "set", host.port, "up")
        assert self.subnet is not None
        inside = ("-n", host.name)
        _ip(*inside, "link", "set", "lo", "up")
        _ip(*inside, "address", "add", f"{host.address}/{self.subnet.prefixlen}", "dev", host.interface)
        _ip(*inside, "link", "set", host.interface, "up")
        _ip(*inside, "route", "add", "default", "via", self.gateway)

    def _claim_subnet(self) -> ipaddress.IPv4Network:
        """The first free /24 of :data:`SUPERNET`, starting at one derived from
        the pid so that concurrent sessions rarely try the same one; a /24
        is free when no route or address of the root namespace overlaps it.
        The bridge takes its first address, and the check is repeated after:
        a session that raced us to it leaves, and we try the next."""
        candidates = list(SUPERNET.subnets(new_prefix=24))
        start = os.getpid() % len(candidates)
        for subnet in candidates[start:] + candidates[:start]:
            if self._overlaps(subnet, mine=False):
                continue
            gateway = next(subnet.hosts())
            _ip("address", "add", f"{gateway}/{subnet.prefixlen}", "dev", self.bridge)
            if not self._overlaps(subnet, mine=True):
                return subnet
            _ip("address", "delete", f"{gateway}/{subnet.prefixlen}", "dev", self.bridge, check=False)
        raise NetnsError(f"no /24 of {SUPERNET} is free of routes on this machine")

    def _overlaps(self, subnet: ipaddress.IPv4Network, mine: bool) -> bool:
        """Does any route of the root namespace overlap ``subnet``? With
        ``mine``, the bridge's own route is left out."""
        for route in _ip_json("-4", "route", "show", "table", "all"):
            dst = route.get("dst", "")
            if dst in ("", "default") or (mine and route.get("dev") == self.bridge):
                continue
            try:
                network = ipaddress.ip_network(dst, strict=False)
            except ValueError:
                continue
            # Only proper networks: a local /32 of some address elsewhere
            # in 10/8 says nothing about our /24 unless it lies inside it.
            if network.overlaps(subnet) and network.prefixlen > 0:
                return True
        return False


def sweep_leftovers() -> list[str]:
    """Remove the namespaces and links of test sessions that died without
    cleaning up (SIGKILLed): those named after a pid that no longer runs.
    What belongs to a running session, this one included, stays. The names
    removed."""
    removed = []
    pattern = re.compile(rf"^{re.escape(_NETNS_PREFIX)}(\d+)-")
    if _NETNS_DIR.is_dir():
        for path in _NETNS_DIR.iterdir():
            found = pattern.match(path.name)
            stale = found is not None and not _pid_running(int(found.group(1)))
            if stale and _ip("netns", "delete", path.name, check=False).returncode == 0:
                removed.append(path.name)
    link_pattern = re.compile(r"^t[bv](\d+)n\d+(h\d+)?$")
    for link in _ip_json("link", "show"):
        name = link.get("ifname", "")
        found = link_pattern.match(name)
        stale = found is not None and not _pid_running(int(found.group(1)))
        if stale and _ip("link", "delete", name, check=False).returncode == 0:
            removed.append(name)
    return removed
