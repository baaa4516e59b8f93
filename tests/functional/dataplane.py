"""A load balancer's data plane on the test hosts (netns.py): an HTTP backend
and a client on a host of their own, and a load balancer of the ``haproxy``
provider whose VIP is an address of the test network, which the agent
holding it adds to its host's ``eth0`` (``[driver:haproxy] vip_interface``)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import httpx2

from .netns import Host, Network

#: What the backend answers.
ANSWER = "served by the backend"
BACKEND_PORT = 8080
LISTENER_PORT = 80

_FETCH = """\
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as answer:
        print(answer.read().decode())
except OSError as exc:
    print(f"failed: {exc}")
"""


def vip_of(network: Network) -> str:
    """An address of the test network that no host has: the .200."""
    assert network.subnet is not None
    return str(list(network.subnet.hosts())[199])


def start_backend(host: Host, directory: Any) -> subprocess.Popen[bytes]:
    """An HTTP server on ``host`` answering :data:`ANSWER`."""
    (directory / "index.html").write_text(ANSWER)
    argv = [sys.executable, "-m", "http.server", str(BACKEND_PORT), "--bind", host.address]
    return host.popen(
        [*argv, "--directory", str(directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def fetch(client: Host, address: str, port: int = LISTENER_PORT) -> str:
    """One HTTP request from ``client``: the answer's body, or what failed."""
    url = f"http://{address}:{port}/"
    done = client.run([sys.executable, "-c", _FETCH, url], capture_output=True, text=True, timeout=20)
    return str(done.stdout).strip()


def create_load_balancer(http: httpx2.Client, vip: str, backend: Host) -> tuple[str, str]:
    """A load balancer on ``vip`` with an HTTP listener and one member,
    ``backend``'s server; its id and the member's. The children are accepted
    one after the other without waiting: they queue behind the load
    balancer's create."""
    answer = http.post("/v1/loadbalancers", json={"provider": "haproxy", "name": "vip", "vip_address": vip})
    assert answer.status_code == 202, answer.text
    lb_id = str(answer.json()["id"])
    for collection, body in (
        ("listeners", {"loadbalancer_id": lb_id, "protocol": "HTTP", "protocol_port": LISTENER_PORT}),
        ("pools", {"loadbalancer_id": lb_id, "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"}),
    ):
        answer = http.post(f"/v1/{collection}", json=body)
        assert answer.status_code == 202, answer.text
    pool_id = answer.json()["id"]
    member = {"pool_id": pool_id, "address": backend.address, "protocol_port": BACKEND_PORT}
    answer = http.post("/v1/members", json=member)
    assert answer.status_code == 202, answer.text
    return lb_id, str(answer.json()["id"])
