"""Failover without a gap: an ACTIVE_STANDBY load balancer on two agent
hosts, keepalived moving its VIP by VRRP, and the active host's death.

Agent 1 and agent 2 run on test hosts 1 and 2 (network namespaces behind a
bridge, netns.py) with the haproxy driver, ``vip_interface`` eth0; the
plugin, the broker and an HTTP backend run in the root namespace, on the
bridge's address. One load balancer of topology ACTIVE_STANDBY takes a VIP of
the test network. A client on host 4 asks the VIP for a page every 50 ms.
Agent 3 starts on host 3 once the pair is placed: the spare.

Then the active host dies (its cable is pulled and every process on it
killed: agent, HAProxy, keepalived). The largest gap between two answers
the client got must stay under 2 s, while the plugin declares the agent
dead, promotes the standby (never OFFLINE) and makes agent 3 the new
standby, in step. Last, the new active's HAProxy dies alone: keepalived's
check moves the VIP to agent 3's host.
"""

from __future__ import annotations

import contextlib
import http.server
import itertools
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from .daemons import Database, Deployment
from .netns import IP, Host, Network
from .pacing import eventually
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

ADMIN = {"X-Roles": "admin"}
PORT = 8080
#: A request every 50 ms; each waits at most this long for its answer.
CLIENT = """
import os, sys, time, urllib.request
url, out, stop = sys.argv[1:4]
with open(out, "a", buffering=1) as answers:
    while not os.path.exists(stop):
        asked = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=0.5) as answer:
                answer.read()
            answers.write(f"{time.monotonic():.3f}\\n")
        except OSError:
            pass
        time.sleep(max(0.0, 0.05 - (time.monotonic() - asked)))
"""


class Backend:
    """An HTTP server on the bridge's address, reachable from every host."""

    def __init__(self, address: str) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend(network: Network) -> Iterator[Backend]:
    server = Backend(network.gateway)
    yield server
    server.stop()


def _kill_everything_on(host: Host) -> None:
    """Every process in the host's network namespace dies at once."""
    found = subprocess.run([IP, "netns", "pids", host.name], capture_output=True, text=True, check=False)
    for pid in found.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _post(deployment: Deployment, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    response = deployment.http.post(f"/v1/{collection}", json=body)
    assert response.status_code == 202, response.text
    path = f"/v1/{collection}/{response.json()['id']}"

    def settled() -> Any:
        found = deployment.http.get(f"{path}?wait=10").json()
        return None if found["provisioning_status"].startswith("PENDING") else found

    done = dict(eventually(settled, 60, f"{path} settles"))
    assert done["provisioning_status"] == "ACTIVE", (done, deployment.logs())
    return done


def _holds(host: Host, address: str) -> bool:
    shown = subprocess.run(
        [IP, "-n", host.name, "-o", "address", "show", "dev", "eth0"],
        capture_output=True,
        text=True,
        check=False,
    )
    return f" {address}/" in shown.stdout


def _largest_gap(answers: list[float], since: float) -> float:
    times = [t for t in answers if t >= since]
    return max((b - a for a, b in itertools.pairwise(times)), default=float("inf"))


def test_the_vip_moves_to_the_standby_within_two_seconds_of_the_active_hosts_death(
    network: Network, node: RabbitMQNode, database: Database, tmp_path: pathlib.Path, backend: Backend
) -> None:
    assert network.subnet is not None
    vip = str(network.subnet.network_address + 201)  # test_hosts.py's is the .200
    deployment = Deployment(
        tmp_path,
        node,
        database,
        agents=3,
        broker_host=network.gateway,
        plugin_options={"providers": "haproxy", "agent_down_time": 3.0, "reaper_interval": 0.5},
        agent_options={
            "providers": "haproxy",
            "report_interval": 0.5,
            "standby_interval": 0.5,
            "status_interval": 1,
            "rpc_timeout": 2,
        },
        agent_sections={"driver:haproxy": {"vip_interface": "eth0"}},
    )
    started = time.monotonic()
    deployment.migrate()
    deployment.start_plugin()
    for agent, host in zip(deployment.agents, network.hosts[:3], strict=True):
        agent.argv = host.command(agent.argv)
    spare = deployment.agents[2]
    for agent in deployment.agents[:2]:
        agent.start()
    stop_client = tmp_path / "stop-client"
    answers_path = tmp_path / "answers"
    client: subprocess.Popen[bytes] | None = None
    victim: Host | None = None
    try:
        live = "/v1/providers"
        eventually(
            lambda: any(
                p["name"] == "haproxy" and len(p["live_agents"]) == 2
                for p in deployment.http.get(live, headers=ADMIN).json()["providers"]
            ),
            30,
            "agents 1 and 2 register",
        )
        lb = _post(
            deployment,
            "loadbalancers",
            {"provider": "haproxy", "vip_address": vip, "topology": "ACTIVE_STANDBY"},
        )
        spare.start()  # placed already: the pair is agents 1 and 2
        listener = {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": PORT}
        _post(deployment, "listeners", listener)
        pool = _post(
            deployment,
            "pools",
            {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
        )
        _post(
            deployment,
            "members",
            {"pool_id": pool["id"], "address": network.gateway, "protocol_port": backend.port},
        )
        path = f"/v1/loadbalancers/{lb['id']}"
        paired = eventually(
            lambda: (b := deployment.http.get(path).json())["standby"]["in_step"] and b,
            30,
            "the standby holds the tree",
        )
        active, standby = paired["agent_id"], paired["standby"]["agent_id"]
        assert {active, standby} == {"agent-1", "agent-2"}, paired

        client = network.hosts[3].popen(
            [sys.executable, "-c", CLIENT, f"http://{vip}:{PORT}/", str(answers_path), str(stop_client)]
        )

        def answers() -> list[float]:
            text = answers_path.read_text() if answers_path.exists() else ""
            return [float(line) for line in text.split()]

        eventually(lambda: len(answers()) >= 10, 20, "the client gets answers through the VIP")
        # A plugin judges silence once it has listened for twice agent_down_time.
        time.sleep(max(0.0, started + 2 * 3.0 - time.monotonic()))

        victim = network.hosts[int(active.rsplit("-", 1)[1]) - 1]
        heir = network.hosts[int(standby.rsplit("-", 1)[1]) - 1]
        # The active's keepalived holds the VIP: the higher priority, taken even from a standby
        # that came up first.
        eventually(lambda: _holds(victim, vip) and not _holds(heir, vip), 10, "the active host holds the VIP")
        print(f"\n  ready after {time.monotonic() - started:.1f} s")
        victim.cut()
        _kill_everything_on(victim)
        killed = time.monotonic()

        def promoted() -> Any:
            b = deployment.http.get(path).json()
            assert b["operating_status"] != "OFFLINE", b  # the promoted agent serves
            settled = b["agent_id"] == standby and b["standby"]["agent_id"] == "agent-3"
            return settled and b["standby"]["in_step"] and b

        after = eventually(promoted, 30, "the standby is promoted and agent 3 stands by, in step")
        recovered = time.monotonic() - killed
        time.sleep(1.0)  # the client goes on through agent 3's arrival
        assert _holds(heir, vip)
        gap = _largest_gap(answers(), killed - 1.0)
        assert max(answers()) > killed + recovered, (
            "the client got no answer once the new standby was in step"
        )
        assert after["provisioning_status"] == "ACTIVE" and after["operating_status"] == "ONLINE", after

        # The new active's HAProxy dies (its agent lives): keepalived's check moves the VIP to agent 3.
        pidfile = tmp_path / standby / "haproxy" / lb["id"] / "haproxy.pid"
        for pid in pidfile.read_text().split():
            os.kill(int(pid), signal.SIGKILL)
        haproxy_killed = time.monotonic()
        eventually(lambda: _holds(network.hosts[2], vip), 10, "agent 3's host takes the VIP")
        time.sleep(1.0)
        stop_client.touch()
        client.wait(10)
        second_gap = _largest_gap(answers(), haproxy_killed - 0.5)
        print(
            f"\n  {active} died; largest gap between answers {gap:.2f} s; {standby} active and "
            f"agent-3 standby in step after {recovered:.1f} s "
            f"({after['provisioning_status']}/{after['operating_status']}); then {standby}'s HAProxy died: "
            f"largest gap {second_gap:.2f} s"
        )
        assert gap < 2.0, f"traffic stopped for {gap:.2f} s"
        # Two failed checks a second apart, then the standby's takeover.
        assert second_gap < 4.0, f"traffic stopped for {second_gap:.2f} s when HAProxy died"
    except BaseException:
        print(deployment.logs())
        raise
    finally:
        stop_client.touch()
        if client is not None and client.poll() is None:
            client.kill()
        if victim is not None:
            victim.restore()
        for agent in deployment.agents:
            if agent.alive:
                agent.stop()
        deployment.plugin.stop()
        deployment.http.close()
        for host in network.hosts:
            for pidfile in tmp_path.glob("agent-*/haproxy/*/*.pid"):
                with contextlib.suppress(OSError, ValueError):
                    for pid in pidfile.read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
            subprocess.run(
                [IP, "-n", host.name, "address", "del", f"{vip}/32", "dev", "eth0"], capture_output=True
            )
