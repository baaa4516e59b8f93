"""The VIP on the agent's host (tether.reference_drivers.haproxy.vip): the commands it
runs, idempotency and the errors people read, against stand-ins for ``ip``
and ``arping`` on PATH that keep a host's addresses in a file and answer as
iproute2 6.1 and iputils 20221126 do. The real commands, across namespaced
hosts with traffic and ARP caches, are tests/functional/test_vip.py's."""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import textwrap
import types
from typing import Any

import pytest

from tests.unit import test_haproxy_conformance as conformance
from tests.unit.conftest import wait_for
from tether.drivers.base import Change, DeviceUnreachable, InvalidConfiguration, Resource
from tether.reference_drivers.haproxy import HaproxyDriver
from tether.reference_drivers.haproxy.vip import VipPlumbing

# An interface every host has, so that the check at start passes; the stand-in
# for ip keeps its own addresses for it.
INTERFACE = "lo"

FAKE_IP = """\
import json, sys
STATE, LOG = {state!r}, {log!r}
args = sys.argv[1:]
with open(LOG, "a") as f:
    f.write(" ".join(args) + "\\n")
state = json.load(open(STATE))
def fail(message, code):
    sys.stderr.write(message + "\\n")
    sys.exit(code)
if args[0] == "-j":
    dev = args[4]
    if dev not in state["interfaces"]:
        fail(f'Device "{{dev}}" does not exist.', 1)
    info = [{{"family": "inet6" if ":" in a else "inet", "local": a, "prefixlen": p, "label": dev}}
            for a, p in state["interfaces"][dev]]
    print(json.dumps([{{"ifname": dev, "addr_info": info}}]))
    sys.exit(0)
verb, cidr, dev = args[1], args[2], args[4]
if dev not in state["interfaces"]:
    fail(f'Cannot find device "{{dev}}"', 1)
if state.get("denied"):
    fail("RTNETLINK answers: Operation not permitted", 2)
address, prefixlen = cidr.split("/")
entry, held = [address, int(prefixlen)], state["interfaces"][dev]
if verb == "add":
    if entry in held:
        fail("Error: ipv4: Address already assigned.", 2)
    held.append(entry)
else:
    if entry not in held:
        fail("Error: ipv4: Address not found.", 2)
    held.remove(entry)
json.dump(state, open(STATE, "w"))
"""

FAKE_ARPING = """\
import json, sys
STATE, LOG = {state!r}, {log!r}
with open(LOG, "a") as f:
    f.write(" ".join(sys.argv[1:]) + "\\n")
if json.load(open(STATE)).get("no_raw"):
    sys.stderr.write("arping: socket: Operation not permitted\\n")
    sys.exit(2)
"""


class FakeHost:
    """The stand-ins' shared state: the host's addresses and what was run."""

    def __init__(self, directory: pathlib.Path) -> None:
        self.bin = directory / "bin"
        self.bin.mkdir()
        self.state = directory / "host.json"
        self.ip_log = directory / "ip.log"
        self.arping_log = directory / "arping.log"
        self.write({"interfaces": {INTERFACE: [["127.0.0.1", 8]]}})
        for name, source, log in (("ip", FAKE_IP, self.ip_log), ("arping", FAKE_ARPING, self.arping_log)):
            script = self.bin / name
            body = source.format(state=str(self.state), log=str(log))
            script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
            script.chmod(0o755)
            log.write_text("")

    def write(self, state: dict[str, Any]) -> None:
        self.state.write_text(json.dumps(state))

    def read(self) -> dict[str, Any]:
        return dict(json.loads(self.state.read_text()))

    def set(self, **flags: Any) -> None:
        self.write(self.read() | flags)

    def addresses(self, interface: str = INTERFACE) -> list[tuple[str, int]]:
        return [(a, p) for a, p in self.read()["interfaces"].get(interface, [])]

    def changes(self) -> list[str]:
        """The ip commands that change something (not the look-ups)."""
        return [line for line in self.ip_log.read_text().splitlines() if not line.startswith("-j")]

    def announcements(self) -> list[str]:
        return self.arping_log.read_text().splitlines()


@pytest.fixture
def host(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    fake = FakeHost(tmp_path)
    monkeypatch.setenv("PATH", f"{fake.bin}:/usr/bin:/bin")
    return fake


def _options(interface: str | None = INTERFACE, **overrides: Any) -> types.SimpleNamespace:
    defaults = {"vip_prefixlen": 32, "vip_announcements": 3, "arping": "arping"}
    return types.SimpleNamespace(vip_interface=interface, **(defaults | overrides))


def _plumbing(tmp_path: pathlib.Path, **overrides: Any) -> VipPlumbing:
    base = tmp_path / "haproxy"
    for lb_id in ("lb-1", "lb-2"):
        (base / lb_id).mkdir(parents=True, exist_ok=True)
    return VipPlumbing.configured(_options(**overrides), str(base), "host-1")


def _hold(plumbing: VipPlumbing, lb_id: str, address: str | None) -> None:
    announcement = plumbing.hold(lb_id, address)
    if announcement is not None:
        announcement.join(10)


def test_a_vip_is_added_to_the_interface_and_announced(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    assert ("192.0.2.10", 32) in host.addresses()
    assert host.changes() == [f"addr add 192.0.2.10/32 dev {INTERFACE}"]
    assert host.announcements() == [f"-q -U -c 3 -I {INTERFACE} 192.0.2.10"]
    record = json.loads((tmp_path / "haproxy" / "lb-1" / "vip.json").read_text())
    assert record == {"address": "192.0.2.10", "prefixlen": 32, "interface": INTERFACE}


def test_holding_it_again_adds_nothing_but_announces_again(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    _hold(plumbing, "lb-1", "192.0.2.10")
    assert host.changes() == [f"addr add 192.0.2.10/32 dev {INTERFACE}"]
    assert host.addresses().count(("192.0.2.10", 32)) == 1
    assert len(host.announcements()) == 2


def test_a_held_vip_is_announced_again_on_request_and_a_released_one_is_not(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    again = plumbing.announce_again("lb-1")
    assert again is not None
    again.join(10)
    assert host.announcements() == [f"-q -U -c 3 -I {INTERFACE} 192.0.2.10"] * 2
    plumbing.release("lb-1")
    assert plumbing.announce_again("lb-1") is None and plumbing.announce_again("lb-2") is None


def test_an_address_the_host_already_has_is_fine(host: FakeHost, tmp_path: pathlib.Path) -> None:
    host.write({"interfaces": {INTERFACE: [["192.0.2.10", 32]]}})
    _hold(_plumbing(tmp_path), "lb-1", "192.0.2.10")
    assert host.changes() == []
    assert host.addresses() == [("192.0.2.10", 32)]


def test_releasing_removes_it_once(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    plumbing.release("lb-1")
    plumbing.release("lb-1")
    assert ("192.0.2.10", 32) not in host.addresses()
    assert host.changes()[1:] == [f"addr del 192.0.2.10/32 dev {INTERFACE}"]
    assert not (tmp_path / "haproxy" / "lb-1" / "vip.json").exists()


def test_an_address_someone_removed_meanwhile_is_released_without_error(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    host.write({"interfaces": {INTERFACE: []}})
    plumbing.release("lb-1")
    assert host.changes() == [f"addr add 192.0.2.10/32 dev {INTERFACE}"]


def test_a_vip_another_load_balancer_binds_stays_until_the_last_leaves(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    plumbing = _plumbing(tmp_path)
    _hold(plumbing, "lb-1", "192.0.2.10")
    _hold(plumbing, "lb-2", "192.0.2.10")
    plumbing.release("lb-1")
    assert ("192.0.2.10", 32) in host.addresses()
    plumbing.release("lb-2")
    assert ("192.0.2.10", 32) not in host.addresses()


def test_without_vip_interface_nothing_is_run(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path, interface=None)
    _hold(plumbing, "lb-1", "127.0.0.1")
    plumbing.release("lb-1")
    assert host.ip_log.read_text() == "" and host.announcements() == []


def test_an_unspecified_vip_plumbs_nothing(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path)
    for address in (None, "", "0.0.0.0", "::"):
        _hold(plumbing, "lb-1", address)
    assert host.ip_log.read_text() == "" and host.announcements() == []


def test_an_ipv6_vip_is_added_whole_without_duplicate_detection_and_not_announced(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    _hold(_plumbing(tmp_path), "lb-1", "2001:db8:0:0::10")
    assert host.changes() == [f"addr add 2001:db8::10/128 dev {INTERFACE} nodad"]
    assert host.announcements() == []


def test_the_prefix_length_and_announcements_follow_the_options(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    _hold(_plumbing(tmp_path, vip_prefixlen=24, vip_announcements=1), "lb-1", "192.0.2.10")
    assert host.changes() == [f"addr add 192.0.2.10/24 dev {INTERFACE}"]
    assert host.announcements() == [f"-q -U -c 1 -I {INTERFACE} 192.0.2.10"]
    _hold(_plumbing(tmp_path, vip_announcements=0), "lb-2", "192.0.2.11")
    assert len(host.announcements()) == 1


def test_what_was_added_under_other_options_is_removed_when_they_change(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    _hold(_plumbing(tmp_path, vip_prefixlen=24), "lb-1", "192.0.2.10")
    _hold(_plumbing(tmp_path), "lb-1", "192.0.2.10")
    assert host.addresses() == [("127.0.0.1", 8), ("192.0.2.10", 32)]
    # Unset, what the record says was added still goes with the load balancer.
    _plumbing(tmp_path, interface=None).release("lb-1")
    assert host.addresses() == [("127.0.0.1", 8)]


def test_the_agent_refuses_to_start_with_an_interface_the_host_lacks(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    with pytest.raises(InvalidConfiguration) as raised:
        _plumbing(tmp_path, interface="no-such-if0")
    message = str(raised.value)
    assert "[driver:haproxy] vip_interface 'no-such-if0' is not an interface of host host-1" in message
    assert "lo" in message and "set it to the interface on the VIPs' network" in message


def test_the_agent_refuses_to_start_without_arping(host: FakeHost, tmp_path: pathlib.Path) -> None:
    (host.bin / "arping").unlink()
    with pytest.raises(InvalidConfiguration, match="install Debian's iputils-arping package, or set"):
        _plumbing(tmp_path, arping="arping-not-here")
    # Nothing to announce, nothing to find.
    _plumbing(tmp_path, arping="arping-not-here", vip_announcements=0)


def test_an_interface_gone_since_the_start_fails_the_task_naming_it(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    plumbing = _plumbing(tmp_path)
    host.write({"interfaces": {}})
    with pytest.raises(InvalidConfiguration) as raised:
        plumbing.hold("lb-1", "192.0.2.10")
    assert str(raised.value).startswith(
        f"VIP 192.0.2.10 could not be added to interface {INTERFACE} of host host-1: the host has no "
        f"interface {INTERFACE} ([driver:haproxy] vip_interface)"
    )
    # A removal finds it gone with its interface: nothing to do.
    plumbing.release("lb-1")


def test_a_missing_permission_fails_the_task_naming_the_capability(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    plumbing = _plumbing(tmp_path)
    host.set(denied=True)
    with pytest.raises(InvalidConfiguration) as raised:
        plumbing.hold("lb-1", "192.0.2.10")
    message = str(raised.value)
    assert "the agent lacks the capability CAP_NET_ADMIN" in message
    assert "AmbientCapabilities=CAP_NET_ADMIN" in message
    assert "Operation not permitted" in raised.value.operator_message
    host.set(denied=False)
    _hold(plumbing, "lb-1", "192.0.2.10")
    host.set(denied=True)
    with pytest.raises(InvalidConfiguration, match="could not be removed from interface lo of host host-1"):
        plumbing.release("lb-1")
    # The record stays, so that the next removal tries again.
    assert (tmp_path / "haproxy" / "lb-1" / "vip.json").exists()


def test_an_announcement_that_fails_is_logged_and_fails_nothing(
    host: FakeHost, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    host.set(no_raw=True)
    with caplog.at_level(logging.WARNING, logger="tether.reference_drivers.haproxy.vip"):
        _hold(_plumbing(tmp_path), "lb-1", "192.0.2.10")
    assert ("192.0.2.10", 32) in host.addresses()
    assert "gratuitous ARP for VIP 192.0.2.10 on lo failed" in caplog.text
    assert "arping: socket: Operation not permitted" in caplog.text and "CAP_NET_RAW" in caplog.text


def test_ip_failing_otherwise_is_retried_as_unreachable(host: FakeHost, tmp_path: pathlib.Path) -> None:
    plumbing = _plumbing(tmp_path)
    (host.bin / "ip").write_text(
        "#!/bin/sh\necho 'RTNETLINK answers: No buffer space available' >&2\nexit 2\n"
    )
    with pytest.raises(DeviceUnreachable, match="No buffer space available"):
        plumbing.hold("lb-1", "192.0.2.10")


class _VipKit(conformance.TestHaproxyConformance):
    """The haproxy driver with ``vip_interface`` set, its VIPs on loopback
    (where HAProxy really binds them) and its plumbing through the stand-ins."""

    def configure(self, conf: Any, tmp_path: pathlib.Path) -> None:
        conf.set_override("vip_interface", INTERFACE, group="driver:haproxy")


def _load_balancer(lb_id: str, port: int) -> Resource:
    listener = Resource("listener", f"{lb_id}-l", "p", {"protocol": "TCP", "protocol_port": port}, lb_id)
    return Resource(
        "loadbalancer", lb_id, "p", {"provider": "haproxy", "vip_address": "127.0.0.2"}, None, (listener,)
    )


def test_the_driver_holds_the_vip_while_the_load_balancer_is_on_its_host(
    host: FakeHost, tmp_path: pathlib.Path
) -> None:
    driver = _VipKit()._driver(tmp_path)
    assert isinstance(driver, HaproxyDriver)
    first, second = (
        _load_balancer("lb-a", conformance._free_port()),
        _load_balancer("lb-b", conformance._free_port()),
    )
    try:
        for tree in (first, second):
            driver.create(Change("t", "create", 1, 1, None, tree, tree))
        assert host.addresses().count(("127.0.0.2", 32)) == 1
        assert {"lb-a", "lb-b"} <= set(driver.inventory())
        # Each status poll of the trees bound here announces their VIP again.
        for announcing in list(driver.vips._announcing.values()):
            announcing.join(10)
        before = len(host.announcements())
        driver.status(["lb-a"])
        wait_for(lambda: len(host.announcements()) == before + 1)
        # Removed by hand: the drift audit finds the trees missing, and a re-apply adds it back.
        host.write({"interfaces": {INTERFACE: [["127.0.0.1", 8]]}})
        assert not {"lb-a", "lb-b"} & set(driver.inventory())
        driver.update(Change("t", "update", 2, 1, None, first, first))
        assert ("127.0.0.2", 32) in host.addresses() and {"lb-a", "lb-b"} <= set(driver.inventory())
        # Deleted: it stays for the other load balancer that binds it ...
        driver.delete(Change("t", "delete", 3, 1, None, first, first))
        assert ("127.0.0.2", 32) in host.addresses()
        # ... and goes when that one is rebound elsewhere and converge removes it here.
        driver.converge(keep=set(), written_before=float("inf"))
        assert ("127.0.0.2", 32) not in host.addresses()
    finally:
        driver.converge(keep=set(), written_before=float("inf"))
