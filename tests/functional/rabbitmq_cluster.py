"""A private, throw-away RabbitMQ cluster for the functional tests.

Three (or ``size``) :class:`~.rabbitmq.RabbitMQNode` on this machine, each
with its own ports, data directory and node name, sharing an Erlang cookie
and one private epmd (through which the nodes find each other; it outlives
any one node, so a node can be stopped and started again), joined with
``rabbitmqctl join_cluster`` as an operator joins them.

For a :class:`~.daemons.Deployment` it stands in for a node:
:meth:`RabbitMQCluster.add_vhost` answers a ``transport_url`` that lists
every node.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from .rabbitmq import RabbitMQNode, RabbitMQNodeError, start_epmd

_NO_BUSY_WAIT = "+sbwt none +sbwtdcpu none +sbwtdio none"


class RabbitMQCluster:
    """``size`` nodes joined into one cluster; ``nodes[0]`` is the seed."""

    #: The user deployments connect as: a password of its own, so that a
    #: test can look for it in logs (guest's is also its user name).
    user = "tether"

    def __init__(self, size: int = 3, base_dir: Path | None = None) -> None:
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="tether-rabbitmq-cluster-"))
        self.size = size
        self.cookie = secrets.token_hex(20).upper()
        self.password = f"pw-{secrets.token_hex(8)}"
        self.nodes: list[RabbitMQNode] = []
        self._epmd: subprocess.Popen[bytes] | None = None
        #: Seconds each phase of :meth:`start` took: what a cluster costs a test run.
        self.timings: dict[str, float] = {}

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 120.0) -> None:
        began = time.monotonic()
        self._epmd, epmd_port = start_epmd(self.base_dir / "epmd.log")
        atexit.register(self._stop_epmd)
        self.nodes = [
            RabbitMQNode(
                self.base_dir / f"node-{i}",
                cookie=self.cookie,
                epmd_port=epmd_port,
                # No busy-waiting schedulers: with three nodes and the CLI's
                # VM on two busy cores, they took 12 s per rabbitmqctl call
                # instead of 2 (RabbitMQ's advice for shared hosts).
                erl_args=_NO_BUSY_WAIT,
            )
            for i in range(1, self.size + 1)
        ]
        # In parallel: on two cores three boots take 15-25 s, one takes 9 s.
        with concurrent.futures.ThreadPoolExecutor(self.size) as pool:
            for future in [pool.submit(node.start, timeout) for node in self.nodes]:
                future.result()
        booted = time.monotonic()
        self.timings["boot"] = booted - began
        # One at a time: concurrent joins to one seed may race on its schema.
        for node in self.nodes[1:]:
            node.join(self.nodes[0], timeout)
        self.wait_running(self.nodes, timeout)
        self.timings["join"] = time.monotonic() - booted
        self.nodes[0].rabbitmqctl("-q", "add_user", self.user, self.password)
        self.timings["total"] = time.monotonic() - began

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self._stop_epmd()
        atexit.unregister(self._stop_epmd)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- for deployments -------------------------------------------------

    def add_vhost(self, name: str, tls: bool = False) -> tuple[str, str]:
        """A fresh virtual host on the cluster: (``transport_url`` listing
        every node, kombu's failover URL of the same nodes)."""
        if tls:
            raise RabbitMQNodeError("the test cluster has no TLS listeners")
        seed = self.running()[0]
        seed.define_vhost(name, self.user)
        hosts = [f"{self.user}:{self.password}@127.0.0.1:{node.port}" for node in self.nodes]
        return f"rabbit://{','.join(hosts)}/{name}", ";".join(f"amqp://{host}/{name}" for host in hosts)

    # -- inspection ------------------------------------------------------

    def running(self) -> list[RabbitMQNode]:
        return [node for node in self.nodes if node.is_running()]

    def node_on_port(self, port: int) -> RabbitMQNode:
        return next(node for node in self.nodes if node.port == port)

    def node_named(self, nodename: str) -> RabbitMQNode:
        return next(node for node in self.nodes if node.nodename == nodename)

    def wait_running(self, nodes: list[RabbitMQNode], timeout: float = 60.0) -> None:
        """Wait until the cluster reports exactly ``nodes`` running."""
        wanted = sorted(node.nodename for node in nodes)
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            report = nodes[0].rabbitmqctl("-q", "eval", "rabbit_nodes:all_running().")
            seen = sorted(name for name in self.nodenames() if name in report)
            if seen == wanted:
                return
            time.sleep(0.5)
        raise RabbitMQNodeError(f"cluster runs {seen}, wanted {wanted}")

    def nodenames(self) -> list[str]:
        return [node.nodename for node in self.nodes]

    def queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        """The queues of ``vhost`` by name, as the broker reports them: type,
        durable, messages, and for a quorum queue its leader, members and
        online members (node names), for a classic one its node."""
        out = self.running()[0].rabbitmqctl(
            "-q",
            "list_queues",
            "-p",
            vhost,
            "--no-table-headers",
            "name",
            "type",
            "durable",
            "messages",
            "leader",
            "members",
            "online",
            "pid",
        )
        queues: dict[str, dict[str, Any]] = {}
        for line in out.splitlines():
            name, kind, durable, messages, leader, members, online, pid = line.split("\t")
            queues[name] = {
                "type": kind,
                "durable": durable == "true",
                "messages": int(messages) if messages.isdigit() else None,
                "leader": leader or None,
                "members": sorted(self._names_in(members)),
                "online": sorted(self._names_in(online)),
                # A classic queue's process id names its node: <rabbit@host.1.2.3>.
                "node": next(iter(self._names_in(pid)), None),
            }
        return queues

    def connections(self, vhost: str) -> dict[str, int]:
        """Client connections to ``vhost`` on each running node, by node name."""
        counts = dict.fromkeys(self.nodenames(), 0)
        out = self.running()[0].rabbitmqctl("-q", "list_connections", "--no-table-headers", "vhost", "port")
        for line in out.splitlines():
            fields = line.split("\t")
            if len(fields) == 2 and fields[0] == vhost:
                counts[self.node_on_port(int(fields[1])).nodename] += 1
        return counts

    # -- internals -------------------------------------------------------

    def _names_in(self, text: str) -> set[str]:
        return {name for name in self.nodenames() if name in text}

    def _stop_epmd(self) -> None:
        if self._epmd is not None:
            if self._epmd.poll() is None:
                self._epmd.kill()
            self._epmd.wait()
            self._epmd = None
