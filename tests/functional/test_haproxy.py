"""Load balancing for real: the haproxy driver on host placement, with HTTP
traffic through it, an agent host that dies, and a clean delete; TLS
terminated at the VIP, sticky sessions and checks sent to a monitor port."""

from __future__ import annotations

import collections
import contextlib
import http.server
import os
import pathlib
import signal
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import trustme

from .daemons import Database, Deployment, free_port
from .pacing import eventually
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional


class Backend:
    """An HTTP server on loopback that answers with its own name."""

    def __init__(self, name: str) -> None:
        self.name = name

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # health checks hang up early; that is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _hits(port: int, count: int = 30) -> collections.Counter[str]:
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(count):
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer,
        ):
            seen[answer.read().decode()] += 1
    return seen


def _settle(deployment: Deployment, path: str) -> dict[str, Any]:
    def done() -> Any:
        response = deployment.http.get(f"{path}?wait=10")
        if response.status_code == 404:
            return {"gone": True}
        body = response.json()
        return body if not body["provisioning_status"].startswith("PENDING") else None

    return dict(eventually(done, 60, f"{path} settles"))


def _post(deployment: Deployment, collection: str, body: dict[str, Any]) -> dict[str, Any]:
    response = deployment.http.post(f"/v1/{collection}", json=body)
    assert response.status_code == 202, response.text
    settled = _settle(deployment, f"/v1/{collection}/{response.json()['id']}")
    assert settled["provisioning_status"] == "ACTIVE", (settled, deployment.logs())
    return settled


def _kill_host(deployment: Deployment, agent_name: str) -> None:
    """The host dies: its agent and the HAProxy processes it started."""
    agent = next(a for a in deployment.agents if a.name == agent_name)
    agent.kill()
    for pidfile in (deployment.root / agent_name / "haproxy").glob("*/haproxy.pid"):
        for pid in pidfile.read_text().split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    started = [Backend(f"backend-{i}") for i in (1, 2, 3)]
    yield started
    for backend in started:
        with contextlib.suppress(Exception):
            backend.stop()


# The test's own backend servers may leave a health-check connection to be
# garbage-collected when one is stopped on purpose.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_traffic_follows_the_api_and_survives_the_death_of_its_host(
    rabbitmq: RabbitMQNode, database: Database, tmp_path: pathlib.Path, backends: list[Backend]
) -> None:
    ca = trustme.CA()
    certificates = tmp_path / "certificates"
    certificates.mkdir()
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(certificates / "vip.pem"))
    deployment = Deployment(
        tmp_path,
        rabbitmq,
        database,
        agents=2,
        # Failure detection on the defaults: the load balancer must move within 10 s of its host's death.
        plugin_options={"providers": "noop,fake,haproxy"},
        agent_options={"providers": "haproxy", "status_interval": 1},
        agent_sections={"driver:haproxy": {"certificate_dir": certificates}},
    )
    deployment.start()
    started = time.monotonic()
    try:
        admin = {"X-Roles": "admin"}
        eventually(
            lambda: len(
                [
                    p
                    for p in deployment.http.get("/v1/providers", headers=admin).json()["providers"]
                    if p["name"] == "haproxy" and len(p["live_agents"]) == 2
                ]
            ),
            30,
            "agents register",
        )
        # While the plugin listens long enough to judge silence (below), the other features.
        begun = time.monotonic()
        _tls_sessions_and_monitor_port(deployment, backends, ca)
        print(f"\n  TLS, sticky sessions and monitor_port checked in {time.monotonic() - begun:.1f} s")
        port = free_port()
        lb = _post(deployment, "loadbalancers", {"provider": "haproxy", "vip_address": "127.0.0.1"})
        assert lb["agent_id"] in {"agent-1", "agent-2"} and lb["host"]
        _post(
            deployment, "listeners", {"loadbalancer_id": lb["id"], "protocol": "HTTP", "protocol_port": port}
        )
        _second_on_the_same_vip_and_port_is_refused(deployment, port)
        pool = _post(
            deployment,
            "pools",
            {"loadbalancer_id": lb["id"], "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN"},
        )
        _post(
            deployment,
            "healthmonitors",
            {
                "pool_id": pool["id"],
                "type": "HTTP",
                "delay": 1,
                "timeout": 1,
                "max_retries": 1,
                "max_retries_down": 1,
                "url_path": "/",
            },
        )
        members = [
            _post(
                deployment,
                "members",
                {"pool_id": pool["id"], "address": "127.0.0.1", "protocol_port": b.port, "name": b.name},
            )
            for b in backends
        ]

        # Round robin reaches all three.
        def all_three() -> collections.Counter[str] | None:
            hits = _hits(port)
            return hits if len(hits) == 3 else None

        seen = eventually(all_three, 20, "all three backends answer")
        assert max(seen.values()) - min(seen.values()) <= 2, seen

        # Weights: backend-1 gets three shares.
        deployment.http.put(f"/v1/members/{members[0]['id']}", json={"weight": 3})
        _settle(deployment, f"/v1/members/{members[0]['id']}")
        seen = _hits(port, 50)
        assert seen["backend-1"] > seen["backend-2"] and seen["backend-1"] > seen["backend-3"], seen

        # Remove a member; take another out of service.
        deployment.http.delete(f"/v1/members/{members[2]['id']}")
        assert _settle(deployment, f"/v1/members/{members[2]['id']}") == {"gone": True}
        assert "backend-3" not in _hits(port)
        deployment.http.put(f"/v1/members/{members[1]['id']}", json={"admin_state_up": False})
        _settle(deployment, f"/v1/members/{members[1]['id']}")
        assert set(_hits(port)) == {"backend-1"}

        # A backend that stops goes OFFLINE in the API, by the health check.
        deployment.http.put(f"/v1/members/{members[1]['id']}", json={"admin_state_up": True})
        _settle(deployment, f"/v1/members/{members[1]['id']}")
        backends[1].stop()
        eventually(
            lambda: (
                deployment.http.get(f"/v1/members/{members[1]['id']}").json()["operating_status"] == "OFFLINE"
            ),
            20,
            "the stopped backend's member goes OFFLINE",
        )
        assert deployment.http.get(f"/v1/members/{members[0]['id']}").json()["operating_status"] == "ONLINE"

        # The host of the load balancer dies: it moves, and traffic flows again.
        first_host = lb["agent_id"]
        # A plugin judges silence only once it has listened for twice agent_down_time (6 s by
        # default; docs/operating.md): measure the failover of a plugin past its start.
        time.sleep(max(0.0, started + 2 * 6.0 - time.monotonic()))
        _kill_host(deployment, first_host)
        killed = time.monotonic()
        # Declared dead and bound to the other agent within 10 s, on the defaults; OFFLINE meanwhile.
        rebound = eventually(
            lambda: (
                (b := deployment.http.get(f"/v1/loadbalancers/{lb['id']}").json())["agent_id"] != first_host
                and b
            ),
            45,
            "the load balancer is bound to the other agent",
        )
        rebound_after = time.monotonic() - killed
        assert rebound_after < 10, (
            f"the load balancer was rescheduled {rebound_after:.1f} s after its host died"
        )
        moved = eventually(
            lambda: (
                (b := deployment.http.get(f"/v1/loadbalancers/{lb['id']}").json())["provisioning_status"]
                == "ACTIVE"
                and b["operating_status"] == "ONLINE"
                and b
            ),
            45,
            "the load balancer is applied on the other agent",
        )
        moved_after = time.monotonic() - killed
        eventually(lambda: _hits(port, 5)["backend-1"] > 0, 30, "traffic flows through the new host")
        recovery = time.monotonic() - killed
        assert recovery < 45, recovery
        print(
            f"\n  {first_host} died; {moved['agent_id']} bound after {rebound_after:.1f} s "
            f"({rebound['provisioning_status']}/{rebound['operating_status']}), ACTIVE/ONLINE after "
            f"{moved_after:.1f} s, traffic back after {recovery:.1f} s"
        )

        # The dead host comes back: it removes its stale copy and leaves the moved one alone.
        returning = next(a for a in deployment.agents if a.name == first_host)
        returning.start()
        eventually(
            lambda: not (tmp_path / first_host / "haproxy" / lb["id"]).exists(),
            30,
            "the returning agent removes its stale copy",
        )
        assert _hits(port, 5)["backend-1"] > 0

        # The new host's agent restarts with its HAProxy gone: resync brings it back.
        host = next(a for a in deployment.agents if a.name == moved["agent_id"])
        assert host.stop() == 0
        _kill_host(deployment, moved["agent_id"])
        host.start()
        eventually(lambda: _hits(port, 5)["backend-1"] > 0, 30, "the restarted agent restores its HAProxy")

        # Delete everything: the port closes and the process is gone.
        for member in members[:2]:
            deployment.http.delete(f"/v1/members/{member['id']}")
            _settle(deployment, f"/v1/members/{member['id']}")
        for path in (
            f"/v1/healthmonitors/{_monitor(deployment, pool['id'])}",
            f"/v1/pools/{pool['id']}",
            f"/v1/listeners/{_listener(deployment, lb['id'])}",
            f"/v1/loadbalancers/{lb['id']}",
        ):
            assert deployment.http.delete(path).status_code == 202
            assert _settle(deployment, path) == {"gone": True}
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass
        assert not list((tmp_path / moved["agent_id"] / "haproxy").glob("*/haproxy.pid"))
    finally:
        for agent in deployment.agents:
            if agent.alive:
                agent.stop()
        deployment.plugin.stop()
        for pidfile in tmp_path.glob("**/haproxy.pid"):
            for pid in pidfile.read_text().split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)


def _second_on_the_same_vip_and_port_is_refused(deployment: Deployment, port: int) -> None:
    """HAProxy binds with SO_REUSEPORT: a second load balancer on the VIP and
    port would come up too and take part of the traffic. The API refuses it."""
    started = time.monotonic()
    other = deployment.http.post(
        "/v1/loadbalancers", json={"provider": "haproxy", "vip_address": "127.0.0.1"}
    )
    assert other.status_code == 202, other.text
    refused = deployment.http.post(
        "/v1/listeners",
        json={"loadbalancer_id": other.json()["id"], "protocol": "HTTP", "protocol_port": port},
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["error"]["message"] == (
        f"127.0.0.1:{port} is already in use by another load balancer; choose another vip_address or "
        "protocol_port."
    )
    assert deployment.http.delete(f"/v1/loadbalancers/{other.json()['id']}").status_code == 202
    assert _settle(deployment, f"/v1/loadbalancers/{other.json()['id']}") == {"gone": True}
    print(f"\nsecond load balancer on the same VIP and port: refused in {time.monotonic() - started:.1f} s")


def _monitor(deployment: Deployment, pool_id: str) -> str:
    return str(
        deployment.http.get("/v1/healthmonitors", params={"pool_id": pool_id}).json()["healthmonitors"][0][
            "id"
        ]
    )


def _listener(deployment: Deployment, lb_id: str) -> str:
    return str(
        deployment.http.get("/v1/listeners", params={"loadbalancer_id": lb_id}).json()["listeners"][0]["id"]
    )


def _get(port: int, context: ssl.SSLContext, cookie: str | None = None) -> tuple[str, str | None]:
    """A request over TLS to the VIP: the backend that answered, and the cookie it was given."""
    request = urllib.request.Request(
        f"https://127.0.0.1:{port}/", headers={"Cookie": cookie} if cookie else {}
    )
    with urllib.request.urlopen(request, timeout=2, context=context) as answer:
        set_cookie = answer.headers.get("Set-Cookie")
        return answer.read().decode(), set_cookie.split(";")[0] if set_cookie else None


def _tls_sessions_and_monitor_port(deployment: Deployment, backends: list[Backend], ca: trustme.CA) -> None:
    """A load balancer of its own, removed at the end: TLS terminated at
    the VIP with ``vip.pem`` of the agents' certificate directory, which
    ``ca`` signed; an inserted cookie keeping a client on its backend;
    a check sent to a member's ``monitor_port``."""
    port = free_port()
    lb = _post(deployment, "loadbalancers", {"provider": "haproxy", "vip_address": "127.0.0.1"})
    pool = _post(
        deployment,
        "pools",
        {
            "loadbalancer_id": lb["id"],
            "protocol": "HTTP",
            "lb_algorithm": "ROUND_ROBIN",
            "session_persistence": {"type": "HTTP_COOKIE"},
        },
    )
    _post(
        deployment,
        "listeners",
        {
            "loadbalancer_id": lb["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": port,
            "default_tls_container_ref": "vip.pem",
            "default_pool_id": pool["id"],
        },
    )
    members = [
        _post(
            deployment,
            "members",
            {"pool_id": pool["id"], "address": "127.0.0.1", "protocol_port": b.port, "name": b.name},
        )
        for b in backends[:2]
    ]

    # TLS ends at the VIP, with the certificate the client's CA vouches for.
    trusting = ssl.create_default_context(cafile=None)
    ca.configure_trust(trusting)

    def answered() -> tuple[str, str | None] | None:
        try:
            return _get(port, trusting)
        except OSError:
            return None

    name, cookie = eventually(answered, 20, "HTTPS answers through the VIP")
    assert name in {"backend-1", "backend-2"} and cookie is not None
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        _get(port, ssl.create_default_context())

    # The cookie keeps a client on its backend; clients without one are spread.
    assert {_get(port, trusting, cookie)[0] for _ in range(10)} == {name}
    assert {_get(port, trusting)[0] for _ in range(10)} == {"backend-1", "backend-2"}

    # A certificate that is not there fails the listener, saying which and why.
    response = deployment.http.post(
        "/v1/listeners",
        json={
            "loadbalancer_id": lb["id"],
            "protocol": "TERMINATED_HTTPS",
            "protocol_port": free_port(),
            "default_tls_container_ref": "absent.pem",
        },
    )
    assert response.status_code == 202, response.text
    failed = _settle(deployment, f"/v1/listeners/{response.json()['id']}")
    assert failed["provisioning_status"] == "ERROR"
    assert "default_tls_container_ref 'absent.pem': there is no such file" in failed["last_error"]

    # Checks go to monitor_port: backend-2 still serves, but its checks find a closed port.
    _post(
        deployment,
        "healthmonitors",
        {
            "pool_id": pool["id"],
            "type": "HTTP",
            "delay": 1,
            "timeout": 1,
            "max_retries": 1,
            "max_retries_down": 1,
        },
    )
    closed = free_port()
    deployment.http.put(f"/v1/members/{members[1]['id']}", json={"monitor_port": closed})
    _settle(deployment, f"/v1/members/{members[1]['id']}")
    eventually(
        lambda: (
            deployment.http.get(f"/v1/members/{members[1]['id']}").json()["operating_status"] == "OFFLINE"
        ),
        20,
        "the member whose monitor_port is closed goes OFFLINE",
    )
    assert deployment.http.get(f"/v1/members/{members[0]['id']}").json()["operating_status"] == "ONLINE"
    assert {_get(port, trusting)[0] for _ in range(10)} == {"backend-1"}

    path = f"/v1/loadbalancers/{lb['id']}"
    assert deployment.http.delete(path, params={"cascade": "true"}).status_code == 202
    assert _settle(deployment, path) == {"gone": True}
