"""The ``haproxy`` driver: one real HAProxy process per load balancer, on the
agent's host (``placement = "host"``).

For each load balancer it renders ``haproxy.cfg`` from the desired state of
the whole tree (listeners → frontends, pools → backends, members → servers,
health monitors → checks), checks it with ``haproxy -c``, then starts HAProxy
or reloads it with ``-sf`` (the old process stops listening and finishes its
connections: nothing established is dropped). Everything lives under
``<state_path>/haproxy/<loadbalancer id>/``; a delete stops the process and
removes the directory. A cascade delete is one call (``deletes_tree``): the
configuration is rendered once without the subtree, or removed with it.
Operating status and counters come from the stats socket and travel with the
agent's state reports.

A load balancer of topology ``ACTIVE_STANDBY`` runs on two hosts, with
keepalived moving its VIP between them (:mod:`tether.reference_drivers.haproxy.keepalived`)
instead of the VIP plumbing: tasks apply it on the active host; the agent
keeps the standby host's copy in step through :meth:`HaproxyDriver.sync_standby`.

Options (``[driver:haproxy]``): ``binary``, ``start_timeout``,
``certificate_dir`` (where TERMINATED_HTTPS listeners' certificates are:
see :mod:`tether.reference_drivers.haproxy.certificates`), and those of the VIP on the host's
interface (:mod:`tether.reference_drivers.haproxy.vip`); ``keepalived_binary``,
``vrrp_advert_interval`` (ACTIVE_STANDBY).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any

from oslo_config import cfg

from tether.common.capabilities import AllowedValues, Capabilities
from tether.common.states import OperatingStatus
from tether.drivers.base import (
    Change,
    DeviceUnreachable,
    Driver,
    InProgress,
    InvalidConfiguration,
    Peer,
    Resource,
    driver_group,
)
from tether.drivers.lbaas_models import Loadbalancer
from tether.reference_drivers.haproxy import certificates, keepalived, pairing
from tether.reference_drivers.haproxy.capabilities import DECLARED, current
from tether.reference_drivers.haproxy.executables import find_executable
from tether.reference_drivers.haproxy.haproxy_cfg import render, stats_socket, usable
from tether.reference_drivers.haproxy.stats import read_stats
from tether.reference_drivers.haproxy.vip import OPTS as VIP_OPTS
from tether.reference_drivers.haproxy.vip import VipPlumbing

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.StrOpt("binary", default="haproxy", help="The HAProxy executable."),
    cfg.FloatOpt("start_timeout", default=10.0, min=1, help="Seconds HAProxy may take to start or reload."),
    cfg.StrOpt(
        "certificate_dir",
        help="The directory of the PEM files (certificate, chain and unencrypted key) that "
        "TERMINATED_HTTPS listeners name in default_tls_container_ref, relative to it; the agent "
        "must read them. Unset, TERMINATED_HTTPS listeners are refused.",
    ),
]


def find_binary(binary: str) -> str:
    """The HAProxy executable ``binary`` names (:func:`find_executable`)."""
    return find_executable(binary, "haproxy", "binary")


class HaproxyDriver(Driver):
    """Load balancers as HAProxy processes on the agent's host."""

    name = "haproxy"
    resource_types = frozenset({"loadbalancer", "listener", "pool", "member", "healthmonitor"})
    placement = "host"
    #: What HAProxy cannot do is refused at accept (capabilities.py).
    capabilities = DECLARED
    # One configuration holds the tree: a subtree goes with one rewrite, not one per resource.
    deletes_tree = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        options = self.conf[driver_group(self.name)]
        self.binary = find_binary(options.binary)
        self.start_timeout = options.start_timeout
        self.certificate_dir: str | None = options.certificate_dir
        if not self.certificate_dir:
            LOG.info("TERMINATED_HTTPS listeners are refused: [driver:haproxy] certificate_dir is not set")
        elif not os.path.isdir(self.certificate_dir):
            LOG.warning("[driver:haproxy] certificate_dir %s is not a directory (yet)", self.certificate_dir)
        self.base = os.path.join(os.path.expanduser(self.conf.state_path), "haproxy")
        self.vips = VipPlumbing.configured(options, self.base, self.conf.host)
        self.pairing = pairing.Pairing(self.base, pairing.keepalived_of(options), self._locked)

    @classmethod
    def list_opts(cls) -> list[cfg.Opt]:
        return [*OPTS, *VIP_OPTS, *keepalived.OPTS]

    def current_capabilities(self) -> Capabilities:
        declared = current(self.resource_types, self.certificate_dir)
        # ACTIVE_STANDBY only where keepalived can move the VIP (pairing.py).
        topologies = {"SINGLE", "ACTIVE_STANDBY"} if self.pairing.keepalived else {"SINGLE"}
        reason = "ACTIVE_STANDBY needs keepalived and [driver:haproxy] vip_interface on the agents' hosts."
        topology = AllowedValues("loadbalancer", "topology", topologies, reason)
        return Capabilities.of([*declared.features, *declared.constraints, topology], self.resource_types)

    # -- the driver API ----------------------------------------------------

    def create(self, change: Change) -> InProgress | None:
        self.check_supported(change)
        self._check(change)
        self._apply(change.tree)
        self.pairing.pair(change.tree, "active")
        return None

    def update(self, change: Change) -> InProgress | None:
        self.check_supported(change)
        self._check(change)
        self._apply(change.tree)
        self.pairing.pair(change.tree, "active")
        return None

    def delete(self, change: Change) -> InProgress | None:
        if change.resource.type == "loadbalancer":
            self._remove(change.tree.id)
        else:
            self._apply(change.tree.without(change.resource.id))
            self.pairing.pair(change.tree, "active")
        return None

    def converge(self, keep: Collection[str], written_before: float) -> None:
        for lb_id in self._local():
            config = os.path.join(self.base, lb_id, "haproxy.cfg")
            if lb_id not in keep and _mtime(config) < written_before:
                LOG.warning("load balancer %s is no longer bound to this agent; removing its HAProxy", lb_id)
                self._remove(lb_id)

    def status(
        self, roots: Collection[str] | None = None
    ) -> tuple[Mapping[str, OperatingStatus], Mapping[str, Mapping[str, float]]]:
        statuses: dict[str, OperatingStatus] = {}
        counters: dict[str, dict[str, float]] = {}
        for lb_id in self._local():
            if roots is not None and lb_id not in roots:
                continue  # bound elsewhere now: converge removes it
            rows = self._show_stat(lb_id)
            if rows is None:
                continue
            read_stats(lb_id, rows, statuses, counters)
            if roots is not None:  # bound here by the plugin's latest word, not only on disk
                self.vips.announce_again(lb_id)
        return statuses, counters

    def inventory(self) -> Mapping[str, Mapping[str, Any]]:
        """The load balancers this host runs: every resource of a tree whose
        configuration is in place and whose HAProxy is running (or that has
        no listener to serve), its attributes as they were written. A load
        balancer whose process died or whose directory was removed is not
        listed, so the audit finds its whole tree missing; so is one whose
        VIP was removed from the host. A standby copy of an ACTIVE_STANDBY
        one is not audited: it is not placed here."""
        held: dict[str, Mapping[str, Any]] = {}
        for lb_id in self._local():
            directory = os.path.join(self.base, lb_id)
            try:
                # Not while a change rewrites the tree or reloads its HAProxy.
                with self._locked(directory):
                    with open(os.path.join(directory, "haproxy.cfg")) as f:
                        config = f.read()
                    with open(os.path.join(directory, "desired.json")) as f:
                        written: dict[str, Any] = json.load(f)
                    running = "\nfrontend " not in config or bool(_pids(directory))
                    running = running and self.vips.holds(lb_id)
                    standing_by = pairing.standing_by(directory)
            except (OSError, ValueError):
                continue  # removed meanwhile: the next audit sees it
            if running and not standing_by:
                held.update(written)
        return held

    # -- active-standby (pairing.py) -------------------------------------------

    def sync_standby(self, tree: Resource, peer: Peer | None) -> None:
        self._apply(tree, report=False)
        self.pairing.pair(tree, "standby", peer)

    def sync_active(self, root_id: str, peer: Peer | None) -> None:
        self.pairing.activate(root_id, peer)

    def peer_address(self) -> str | None:
        return self.pairing.address

    # -- the device ----------------------------------------------------------

    def _check(self, change: Change) -> None:
        resource = change.resource
        # What belongs to a resource HAProxy never got cannot be served alone.
        failed = next((r for r in change.tree.ancestors(resource.id) if r.create_failed), None)
        if failed is not None:
            raise InvalidConfiguration(
                f"{resource.type} {resource.id} belongs to {failed.type} {failed.id}, whose create "
                f"failed; update that {failed.type} (an update creates it), then this {resource.type}."
            )

    def _apply(self, tree: Resource, report: bool = True) -> None:
        tree = tree.without_failed_creates()  # as render() writes it
        lb = tree.typed(Loadbalancer)
        directory = os.path.join(self.base, tree.id)
        os.makedirs(directory, exist_ok=True)
        with self._locked(directory):
            config = os.path.join(directory, "haproxy.cfg")
            candidate = config + ".new"
            certificates.install(lb, directory, self.certificate_dir)
            with open(candidate, "w") as f:
                f.write(render(tree, directory))
            checked = self._run("-c", "-f", candidate)
            if checked.returncode != 0:
                raise InvalidConfiguration(
                    f"HAProxy refused the configuration of load balancer {tree.id}: {_alert(checked.stderr)}",
                    operator_message=checked.stderr,
                )
            # Before HAProxy binds it; keepalived holds a paired one's (pairing.py).
            self.vips.hold(tree.id, None if lb.topology == "ACTIVE_STANDBY" else lb.vip_address)
            os.replace(candidate, config)
            with open(os.path.join(directory, "desired.json.new"), "w") as f:
                json.dump(_flatten(tree), f)
            os.replace(os.path.join(directory, "desired.json.new"), os.path.join(directory, "desired.json"))
            listening = any(usable(listener) for listener in lb.listeners)
            pids = _pids(directory)
            if not listening:
                _stop(pids)
                return
            args = ["-f", config, "-p", os.path.join(directory, "haproxy.pid"), "-D"]
            if pids:
                args += ["-sf", *map(str, pids)]
            started = self._run(*args)
            if started.returncode != 0:
                raise DeviceUnreachable(
                    f"HAProxy did not start for load balancer {tree.id}: {_alert(started.stderr)}",
                    operator_message=started.stderr,
                )
        if not report:
            return  # a standby copy: the active reports
        # Serving now; members' health follows from the stats socket with the state reports.
        self.callbacks.operating_status(tree.id, OperatingStatus.ONLINE)
        for listener in lb.listeners:
            if usable(listener):
                up = listener.admin_state_up
                self.callbacks.operating_status(
                    listener.id, OperatingStatus.ONLINE if up else OperatingStatus.OFFLINE
                )

    def _remove(self, lb_id: str) -> None:
        directory = os.path.join(self.base, lb_id)
        if not os.path.isdir(directory):
            return
        with self._locked(directory):
            self.pairing.stop(directory)  # first: the VIP goes to the peer while HAProxy stops
            _stop(_pids(directory))
            self.vips.release(lb_id)
        with contextlib.suppress(OSError):
            os.unlink(stats_socket(directory))
        shutil.rmtree(directory, ignore_errors=True)

    def _local(self) -> list[str]:
        try:
            return [d for d in os.listdir(self.base) if os.path.isdir(os.path.join(self.base, d))]
        except FileNotFoundError:
            return []

    def _show_stat(self, lb_id: str) -> list[dict[str, str]] | None:
        address = stats_socket(os.path.join(self.base, lb_id))
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(address)
                sock.sendall(b"show stat\n")
                data = b"".join(iter(lambda: sock.recv(65536), b""))
        except OSError:
            return None
        text = data.decode(errors="replace").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.binary, *args], capture_output=True, text=True, timeout=self.start_timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeviceUnreachable(f"running {self.binary} failed: {exc}") from exc

    @contextlib.contextmanager
    def _locked(self, directory: str) -> Iterator[None]:
        # Two deliveries of one change may overlap (an agent died mid-call);
        # they take turns on the load balancer's directory.
        with open(os.path.join(directory, ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _flatten(tree: Resource) -> dict[str, dict[str, Any]]:
    return {r.id: dict(r.attributes) for r in tree.walk()}


def _alert(stderr: str) -> str:
    alerts = [line.split("]", 1)[-1].strip() for line in stderr.splitlines() if "ALERT" in line]
    return "; ".join(alerts[:3]) or stderr.strip()[-300:] or "no detail"


def _pids(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "haproxy.pid")) as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []
    alive = []
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)
            alive.append(pid)
    return alive


def _stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGUSR1)  # soft stop: finish the connections it has
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = [p for p in pids if _alive(p)]
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0
