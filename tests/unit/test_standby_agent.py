"""Active-standby, the agent's and the haproxy driver's side: the keeper
applies what the plugin says the agent stands by for, tells the driver of
its role and peer, and keepalived's configuration is what keepalived takes."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import time
from collections.abc import Collection
from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import agent_state, make_plugin
from tests.unit.test_standby import PAIRED, _finish
from tether.agent.standby import StandbyKeeper
from tether.common import config
from tether.drivers.base import Callbacks, Change, Driver, InProgress, Peer, Resource, driver_group
from tether.reference_drivers.haproxy import HaproxyDriver, keepalived
from tether.reference_drivers.haproxy.haproxy_cfg import render


class PairedDriver(Driver):
    """A host-placed driver that records what it is told as active or standby."""

    name = "haproxy"
    resource_types = frozenset({"loadbalancer"})
    placement = "host"

    def __init__(self) -> None:
        super().__init__(cfg.ConfigOpts(), Callbacks())
        self.standby: list[tuple[str, int, Peer | None]] = []
        self.active: list[tuple[str, Peer | None]] = []
        self.fail = False

    def create(self, change: Change) -> InProgress | None:
        return None

    update = delete = create

    def converge(self, keep: Collection[str], written_before: float) -> None:
        pass

    def sync_standby(self, tree: Resource, peer: Peer | None) -> None:
        if self.fail:
            raise RuntimeError("the device is on fire")
        self.standby.append((tree.id, len(tree.children), peer))

    def sync_active(self, root_id: str, peer: Peer | None) -> None:
        self.active.append((root_id, peer))


class DirectPluginApi:
    """The plugin's endpoint, called in process."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def standby_sync(self, agent_id: str, provider: str, held: dict[str, str]) -> Any:
        return self.endpoint.standby_sync({}, agent_id=agent_id, provider=provider, held=held)


def test_the_keeper_applies_each_standby_tree_once_and_tells_the_active_of_its_peer(
    conf: cfg.ConfigOpts,
) -> None:
    conf.set_override("providers", ["noop", "haproxy"], group="plugin")
    plugin = make_plugin(conf)
    with TestClient(plugin.app) as client:
        for agent_id, host in (("a", "h1"), ("b", "h2")):
            state = agent_state(
                agent_id, ["haproxy"], host=host, addresses={"haproxy": f"192.0.2.{host[-1]}"}
            )
            plugin.pipeline.endpoint.report_state({}, state=state)
        lb = client.post("/v1/loadbalancers", json=PAIRED).json()
        _finish(plugin, lb["task"]["id"])
        placed = client.get(f"/v1/loadbalancers/{lb['id']}").json()
        active_id, standby_id = placed["agent_id"], placed["standby"]["agent_id"]
        api = DirectPluginApi(plugin.pipeline.standby_endpoint)
        on_standby, on_active = PairedDriver(), PairedDriver()
        standby = StandbyKeeper({"haproxy": on_standby}, api, standby_id, 1.0)  # type: ignore[arg-type]
        active = StandbyKeeper({"haproxy": on_active}, api, active_id, 1.0)  # type: ignore[arg-type]

        assert standby.sync() == {"haproxy": 1}
        peer_of_standby = Peer(active_id, placed["host"], f"192.0.2.{placed['host'][-1]}")
        assert on_standby.standby == [(lb["id"], 0, peer_of_standby)]
        assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["in_step"] is True
        assert standby.sync() == {"haproxy": 0} and len(on_standby.standby) == 1  # held already
        active.sync()
        active.sync()
        assert on_active.active == [
            (
                lb["id"],
                Peer(standby_id, placed["standby"]["host"], "192.0.2." + placed["standby"]["host"][-1]),
            )
        ]

        # A driver that fails is asked again on the next pass.
        listener = client.post(
            "/v1/listeners", json={"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": 80}
        ).json()
        _finish(plugin, listener["task"]["id"])
        on_standby.fail = True
        assert standby.sync() == {"haproxy": 0}
        assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["in_step"] is False
        on_standby.fail = False
        assert standby.sync() == {"haproxy": 1}
        assert on_standby.standby[-1][:2] == (lb["id"], 1)
        assert client.get(f"/v1/loadbalancers/{lb['id']}").json()["standby"]["in_step"] is True


def test_a_keeper_with_no_driver_that_can_stand_by_starts_nothing() -> None:
    class Shared(PairedDriver):
        placement = "shared"

    keeper = StandbyKeeper({"x": Shared()}, None, "a", 1.0)  # type: ignore[arg-type]
    keeper.start()
    assert keeper.drivers == {} and keeper._thread is None


def _driver(tmp_path: pathlib.Path, **options: Any) -> HaproxyDriver:
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf.register_opts(HaproxyDriver.list_opts(), group=driver_group("haproxy"))
    conf([], project="tether", default_config_files=[])
    conf.set_override("state_path", str(tmp_path))
    for name, value in options.items():
        conf.set_override(name, value, group=driver_group("haproxy"))
    return HaproxyDriver(conf, Callbacks())


def _allowed_topologies(driver: HaproxyDriver) -> set[Any]:
    wire = driver.current_capabilities().to_wire()
    found = [c for c in wire["constraints"] if c.get("attribute") == "topology"]
    return set(found[0]["values"])


def test_haproxy_takes_active_standby_only_with_keepalived_and_a_vip_interface(
    tmp_path: pathlib.Path,
) -> None:
    assert _allowed_topologies(_driver(tmp_path)) == {"SINGLE"}
    assert _allowed_topologies(
        _driver(tmp_path, vip_interface="lo", keepalived_binary="no-such-keepalived")
    ) == {"SINGLE"}
    if shutil.which("keepalived", path="/usr/sbin:/usr/bin:/sbin") is None:
        pytest.skip("keepalived is not installed (tools/install-system-deps.sh installs it)")
    paired = _driver(tmp_path, vip_interface="lo")
    assert _allowed_topologies(paired) == {"SINGLE", "ACTIVE_STANDBY"}
    assert paired.peer_address() == "127.0.0.1"


def test_a_paired_load_balancers_frontends_bind_the_vip_it_may_not_hold_yet(tmp_path: pathlib.Path) -> None:
    listener = Resource("listener", "l-1", "p", {"protocol": "HTTP", "protocol_port": 80}, "lb")
    lb = Resource(
        "loadbalancer", "lb", "p", {"provider": "haproxy", "vip_address": "192.0.2.10"}, None, (listener,)
    )
    assert "bind 192.0.2.10:80\n" in render(lb, str(tmp_path))
    paired = Resource(
        "loadbalancer", "lb", "p", {**lb.attributes, "topology": "ACTIVE_STANDBY"}, None, (listener,)
    )
    assert "bind 192.0.2.10:80 transparent\n" in render(paired, str(tmp_path))


@pytest.mark.parametrize(
    ("role", "peer"), [("active", "192.0.2.2"), ("standby", "192.0.2.1"), ("active", None)]
)
def test_keepalived_takes_the_configuration_of_either_role(
    tmp_path: pathlib.Path, role: str, peer: str | None
) -> None:
    binary = shutil.which("keepalived", path="/usr/sbin:/usr/bin:/sbin")
    if binary is None:
        pytest.skip("keepalived is not installed (tools/install-system-deps.sh installs it)")
    text = keepalived.render("lb-1", str(tmp_path), "192.0.2.10", "eth0", role, "192.0.2.9", peer, 0.2)
    assert f"priority {keepalived.PRIORITY[role]}" in text and "advert_int 0.2" in text
    # The active takes the VIP from a standby that came up first; nobody takes it from the active.
    assert ("nopreempt" in text) == (role == "standby")
    assert ("unicast_peer" in text) == (peer is not None)
    (tmp_path / "check_haproxy").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "check_haproxy").chmod(0o755)
    (tmp_path / "keepalived.conf").write_text(text)
    checked = subprocess.run(
        [binary, "-t", "-f", str(tmp_path / "keepalived.conf")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr


def test_virtual_router_ids_are_stable_and_clashes_on_a_host_are_found(tmp_path: pathlib.Path) -> None:
    ids = {keepalived.router_id(f"lb-{i}") for i in range(2000)}
    assert ids == set(range(1, 256))
    assert keepalived.router_id("lb-1") == keepalived.router_id("lb-1")
    twin = next(
        f"lb-{i}" for i in range(2, 5000) if keepalived.router_id(f"lb-{i}") == keepalived.router_id("lb-1")
    )
    (tmp_path / twin).mkdir()
    assert keepalived.clashing(str(tmp_path), "lb-1") is None  # no keepalived there
    (tmp_path / twin / "keepalived.conf").write_text("")
    assert keepalived.clashing(str(tmp_path), "lb-1") == twin


def test_keepalived_check_fails_once_haproxy_is_dead_even_before_it_is_reaped(tmp_path: pathlib.Path) -> None:
    check = tmp_path / "check_haproxy"
    check.write_text(keepalived._check_script(str(tmp_path)))
    check.chmod(0o755)
    process = subprocess.Popen(["sleep", "60"])
    try:
        (tmp_path / "haproxy.pid").write_text(f"{process.pid}\n")
        assert subprocess.run([str(check)]).returncode == 0
        process.kill()
        deadline = time.monotonic() + 5
        while "Z" not in pathlib.Path(f"/proc/{process.pid}/stat").read_text().split()[2]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert subprocess.run([str(check)]).returncode == 1  # a zombie, not yet reaped
    finally:
        process.kill()
        process.wait()
    (tmp_path / "haproxy.pid").unlink()
    assert subprocess.run([str(check)]).returncode == 1
