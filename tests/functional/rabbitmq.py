"""A private, throw-away RabbitMQ node for the functional tests.

The node runs from Debian's rabbitmq-server package (see
tools/install-system-deps.sh) as the current user, with every path, port and
name of its own, so it never touches or clashes with a system node, another
test session on the same machine, or a developer's own broker.
"""

from __future__ import annotations

import atexit
import dataclasses
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import amqp
from amqp.exceptions import AMQPError

RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# Not /usr/sbin/rabbitmq-server: Debian's wrapper su's to the rabbitmq user
# and drops our environment, so the node would ignore all our settings.
RABBITMQ_SERVER = RABBITMQ_BIN / "rabbitmq-server"
RABBITMQCTL = RABBITMQ_BIN / "rabbitmqctl"
INSTALL_HINT = "run tools/install-system-deps.sh to install Debian's rabbitmq-server"

# The CLI tools listen on this range for their own distribution port
# (RABBITMQ_CTL_DIST_PORT_MIN/MAX defaults), so our node must not take it.
_CTL_DIST_PORTS = range(35672, 35683)
_RESERVED_PORTS = {4369, 5672, 15672, 25672, *_CTL_DIST_PORTS}

_node_numbers = itertools.count(1)


class RabbitMQNodeError(RuntimeError):
    pass


class _PortTakenError(RabbitMQNodeError):
    pass


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    """PEM files for a node's TLS listener.

    The node asks every client for a certificate and refuses one that ``ca``
    did not sign, but accepts a client that shows none.
    """

    ca: Path
    cert: Path
    key: Path


def is_installed() -> bool:
    return os.access(RABBITMQ_SERVER, os.X_OK)


def _free_ports(count: int) -> list[int]:
    # Keep every socket bound until all are chosen so the kernel cannot hand
    # out the same port twice; the node binds them moments later.
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _RESERVED_PORTS:
                ports.append(port)
    finally:
        for sock in held:
            sock.close()
    return ports


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _error_lines(path: Path, offset: int, limit: int = 40) -> str:
    # The root cause is usually logged well above the tail, which is filled
    # by the orderly shutdown that follows a failed boot.
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([line for line in lines if "[error]" in line][:limit])


def _read_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _read_ppid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may itself contain spaces or ")".
    return int(stat.rsplit(")", 1)[1].split()[1])


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # A zombie has already released everything; only its parent can reap it.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_epmd(log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """A private epmd on a free loopback port: the process and its port."""
    epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
    log.parent.mkdir(parents=True, exist_ok=True)
    for _attempt in range(5):
        (port,) = _free_ports(1)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                # In the foreground (no -daemon) so it stays our child and
                # stop() can end it.
                [epmd, "-port", str(port), "-address", "127.0.0.1"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
                continue
            return proc, port
        # Most likely someone took the port in between: try another one.
        proc.kill()
        proc.wait()
    raise RabbitMQNodeError(f"epmd did not start:\n{_tail(log)}")


class RabbitMQNode:
    """One private RabbitMQ node, started and stopped by the test session.

    ``restart()`` keeps the data directory, port and node name, so durable
    queues and persistent messages survive it just as on a real broker.
    """

    def __init__(
        self,
        base_dir: str | Path | None = None,
        tls: TLSFiles | None = None,
        *,
        cookie: str | None = None,
        epmd_port: int | None = None,
        erl_args: str = "",
        extra_addresses: Sequence[str] = (),
    ) -> None:
        """``cookie`` and ``epmd_port`` are for nodes that form a cluster
        (see rabbitmq_cluster.py): they must share the Erlang cookie, and
        find each other through one epmd that outlives each of them. Without
        them the node has a random cookie and an epmd of its own. ``erl_args``:
        more flags for the node's Erlang VM and the CLI tools' (e.g. the
        cluster's: several VMs on a small machine).

        ``extra_addresses``: local addresses the AMQP listener binds besides
        127.0.0.1, on the same port, e.g. a test network's gateway
        (netns.py), so that clients in other network namespaces reach the
        node; :meth:`add_vhost` gives URLs for any of them. Without them the
        node is reachable from this host's loopback only."""
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="tether-rabbitmq-"))
            self._owns_base_dir = True
        else:
            self.base_dir = Path(base_dir)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            self._owns_base_dir = False
        # Unique per process and per node, so parallel sessions' nodes never
        # mix logs or data, and none can be mistaken for the system "rabbit".
        # @localhost rather than the host name because CI machines' host names
        # do not always resolve, while localhost always does.
        self.nodename = f"tether-test-{os.getpid()}-{next(_node_numbers)}@localhost"
        self.tls = tls
        self.extra_addresses = tuple(extra_addresses)
        self._cookie = cookie
        #: The epmd this node registers with, started and stopped by someone else.
        self._shared_epmd_port = epmd_port
        self._erl_args = erl_args
        #: The TLS listener's port, beside the plain one; None without ``tls``.
        self.tls_port: int | None = None
        self._pick_ports()
        self.home_dir = self.base_dir / "home"
        self.mnesia_base = self.base_dir / "mnesia"
        self.log_base = self.base_dir / "log"
        self.config_file = self.base_dir / "rabbitmq.conf"
        self.enabled_plugins_file = self.base_dir / "enabled_plugins"
        self.startup_log = self.log_base / "startup.log"
        self.epmd_log = self.log_base / "epmd.log"
        self._epmd_port: int | None = epmd_port
        self._epmd: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False
        self._has_started = False
        # Where this start's part of the (appended-to) node log begins.
        self._log_offset = 0

    # -- addresses -------------------------------------------------------

    @property
    def url(self) -> str:
        return f"rabbit://guest:guest@127.0.0.1:{self.port}/"

    @property
    def amqp_url(self) -> str:
        # The trailing "//" is kombu's spelling of the default vhost "/".
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def add_vhost(self, name: str, tls: bool = False, host: str = "127.0.0.1") -> tuple[str, str]:
        """A fresh virtual host for one deployment, so that deployments sharing
        this node never see each other's queues; its (transport_url, amqp_url),
        on the TLS listener if ``tls``, naming ``host`` (127.0.0.1 or one of
        ``extra_addresses``)."""
        if host != "127.0.0.1" and host not in self.extra_addresses:
            raise RabbitMQNodeError(f"{self.nodename} does not listen on {host}")
        self.define_vhost(name, "guest")
        if tls:
            if self.tls_port is None:
                raise RabbitMQNodeError(f"{self.nodename} was started without a TLS listener")
            return (
                f"rabbit://guest:guest@{host}:{self.tls_port}/{name}",
                f"amqps://guest:guest@{host}:{self.tls_port}/{name}",
            )
        return (
            f"rabbit://guest:guest@{host}:{self.port}/{name}",
            f"amqp://guest:guest@{host}:{self.port}/{name}",
        )

    def define_vhost(self, name: str, user: str) -> None:
        """Virtual host ``name``, all of it allowed to ``user``, in one
        rabbitmqctl call: each call boots an Erlang VM, 1-2 s on a busy
        2-core machine, and every deployment of a test run makes a vhost."""
        definitions = self.base_dir / f"vhost-{name}.json"
        allowed = {"user": user, "vhost": name, "configure": ".*", "write": ".*", "read": ".*"}
        definitions.write_text(json.dumps({"vhosts": [{"name": name}], "permissions": [allowed]}))
        self.rabbitmqctl("-q", "import_definitions", str(definitions))

    @property
    def log_file(self) -> Path:
        return self.log_base / f"{self.nodename}.log"

    # -- lifecycle -------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        if not is_installed():
            raise RabbitMQNodeError(f"{RABBITMQ_SERVER} is missing: {INSTALL_HINT}")
        if self.is_running():
            return
        for _attempt in range(3):
            try:
                self._start_once(timeout)
            except _PortTakenError:
                # Another process grabbed a port between _free_ports() and
                # the node binding it. Only a node that never ran may move:
                # after that, clients hold its URL.
                if self._has_started:
                    raise
                self._pick_ports()
            else:
                self._has_started = True
                return
        raise RabbitMQNodeError(f"{self.nodename}: no free port after 3 attempts")

    def _start_once(self, timeout: float) -> None:
        # A node that was kill()ed leaves its wrapper and helpers behind.
        self._reap_server()
        self._prepare_files()
        self._start_epmd()
        try:
            self._log_offset = self.log_file.stat().st_size
        except FileNotFoundError:
            self._log_offset = 0
        if not self._atexit_registered:
            # Backstop for an interrupted session (Ctrl-C, internal error):
            # a leaked node would keep running and holding memory forever.
            atexit.register(self._stop_quietly)
            self._atexit_registered = True
        with open(self.startup_log, "ab") as out:
            self._server = subprocess.Popen(
                [str(RABBITMQ_SERVER)],
                cwd=self.base_dir,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Out of pytest's process group: a Ctrl-C must not kill the
                # node mid-write; the atexit hook stops it in order instead.
                start_new_session=True,
            )
        self._wait_until_accepting(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        """Stop the node gracefully, force it after ``timeout`` seconds.

        SIGTERM makes RabbitMQ (3.8+) shut down just like ``rabbitmqctl stop``
        (listeners closed, queues and message stores flushed), without
        booting a second Erlang VM for the CLI: that costs a second when
        idle and many more on a busy 2-core CI machine.
        """
        server = self._server
        if server is not None and server.poll() is None:
            beam = self.beam_pid()
            try:
                if beam is not None:
                    os.kill(beam, signal.SIGTERM)
                else:
                    # Still in the wrapper script: its trap forwards TERM.
                    os.killpg(server.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                server.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass  # _reap_server() below SIGKILLs what is left
        self._reap_server()
        self._stop_epmd()

    def restart(self, timeout: float = 60.0) -> None:
        self.stop(timeout)
        self.start(timeout)

    def kill(self) -> None:
        """SIGKILL the Erlang VM, as a crash would: no graceful shutdown."""
        pid = self.beam_pid()
        if pid is None:
            raise RabbitMQNodeError(f"{self.nodename} has no running VM to kill")
        os.kill(pid, signal.SIGKILL)
        if self._server is not None:
            # The wrapper script exits as soon as its VM is gone.
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._wait_gone([pid], timeout=10)

    def close(self) -> None:
        """Stop the node and delete its files if this object created them."""
        self.stop()
        atexit.unregister(self._stop_quietly)
        self._atexit_registered = False
        if self._owns_base_dir:
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

    def join(self, other: RabbitMQNode, timeout: float = 120.0) -> None:
        """Make this node, never used by a client yet, a member of ``other``'s
        cluster, as an operator does; both must share the cookie and the epmd."""
        self.rabbitmqctl("-q", "stop_app", timeout=timeout)
        self.rabbitmqctl("-q", "join_cluster", other.nodename, timeout=timeout)
        self.rabbitmqctl("-q", "start_app", timeout=timeout)

    # -- inspection ------------------------------------------------------

    def is_running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def beam_pid(self) -> int | None:
        pids = self._beam_pids()
        return pids[0] if pids else None

    def rabbitmqctl(self, *args: str, timeout: float = 60.0) -> str:
        """Run rabbitmqctl against this node and return its stdout.

        E.g. ``node.rabbitmqctl("-q", "list_queues", "name", "messages")``.
        """
        if not self.is_running():
            raise RabbitMQNodeError(f"{self.nodename} is not running")
        result = subprocess.run(
            [str(RABBITMQCTL), "-n", self.nodename, *args],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RabbitMQNodeError(
                f"rabbitmqctl {' '.join(args)} failed with exit code "
                f"{result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    # -- internals -------------------------------------------------------

    def _pick_ports(self) -> None:
        if self.tls is None:
            self.port, self.dist_port = _free_ports(2)
        else:
            self.port, self.dist_port, self.tls_port = _free_ports(3)

    def _env(self) -> dict[str, str]:
        # The caller's RABBITMQ_* and ERL_* settings (a developer's own
        # broker, ERL_FLAGS, ...) must not leak into the private node.
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        if self._epmd_port is None:
            raise RabbitMQNodeError(f"{self.nodename} was never started")
        env.update(
            HOME=str(self.home_dir),
            # The CLI tools are Elixir and warn loudly on a non-UTF-8 locale.
            LANG="C.UTF-8",
            LC_ALL="C.UTF-8",
            # Our own epmd: no clash with, or dependence on, a system one,
            # and nothing left running once the node is stopped.
            ERL_EPMD_PORT=str(self._epmd_port),
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_USE_LONGNAME="false",
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.mnesia_base),
            RABBITMQ_LOG_BASE=str(self.log_base),
            RABBITMQ_CONFIG_FILE=str(self.config_file),
            # Point both away from /etc/rabbitmq, whose files are meant for
            # the system node and may be edited by whoever owns the machine.
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.enabled_plugins_file),
            RABBITMQ_PID_FILE=str(self.base_dir / "rabbitmq.pid"),
            # An Erlang VM that finds no epmd starts a daemon of its own,
            # which would outlive the node: use ours or fail. Also keep the
            # distribution port off the network interfaces.
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=(
                f"-start_epmd false -kernel inet_dist_use_interface {{127,0,0,1}} {self._erl_args}".strip()
            ),
            RABBITMQ_CTL_ERL_ARGS=f"-start_epmd false {self._erl_args}".strip(),
        )
        return env

    def _prepare_files(self) -> None:
        for directory in (self.home_dir, self.mnesia_base, self.log_base):
            directory.mkdir(parents=True, exist_ok=True)
        cookie = self.home_dir / ".erlang.cookie"
        if not cookie.exists():
            # Erlang refuses a cookie file readable by group or others.
            fd = os.open(cookie, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as handle:
                handle.write(self._cookie or secrets.token_hex(20).upper())
        extra_listeners = "".join(
            f"listeners.tcp.{i} = {address}:{self.port}\n"
            for i, address in enumerate(self.extra_addresses, 1)
        )
        self.config_file.write_text(
            "loopback_users = none\n"
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"{extra_listeners}"
            # Pinned rather than inherited: a limit relative to RAM, common in
            # production configs, blocks every publisher on a CI machine whose
            # free disk is smaller than its memory.
            "disk_free_limit.absolute = 50MB\n"
            # Queue counters (list_queues) a second old at most, not five:
            # tests watch them settle.
            "collect_statistics_interval = 1000\n"
            "log.file.level = info\n"
            "log.console = false\n" + (self._tls_config() if self.tls else "")
        )
        # No plugins at all: management and friends add seconds to boot.
        self.enabled_plugins_file.write_text("[].\n")
        (self.base_dir / "rabbitmq-env.conf").write_text("")

    def _tls_config(self) -> str:
        assert self.tls is not None
        return (
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}\n"
            f"ssl_options.cacertfile = {self.tls.ca}\n"
            f"ssl_options.certfile = {self.tls.cert}\n"
            f"ssl_options.keyfile = {self.tls.key}\n"
            "ssl_options.verify = verify_peer\n"
            "ssl_options.fail_if_no_peer_cert = false\n"
        )

    def _start_epmd(self) -> None:
        if self._shared_epmd_port is not None:
            return
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd, self._epmd_port = start_epmd(self.epmd_log)

    def _stop_epmd(self) -> None:
        if self._epmd is not None:
            if self._epmd.poll() is None:
                self._epmd.kill()
            self._epmd.wait()
            self._epmd = None

    def _wait_until_accepting(self, timeout: float) -> None:
        assert self._server is not None
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                code = self._server.returncode
                self._fail(f"exited (code {code}) before accepting clients", last_error)
            # A full AMQP handshake, not just a TCP connect: the listener
            # opens a little before the broker can serve a client.
            connection = amqp.Connection(
                host=f"127.0.0.1:{self.port}",
                userid="guest",
                password="guest",
                virtual_host="/",
                connect_timeout=2,
            )
            try:
                connection.connect()
            except (OSError, AMQPError) as exc:  # booting: "not yet"
                last_error = exc
                # Drops a half-open socket, which would otherwise surface as
                # a ResourceWarning (an error under our filterwarnings).
                connection.collect()
                time.sleep(0.2)
            else:
                connection.close()
                return
        self._fail(f"did not accept AMQP connections within {timeout:.0f}s", last_error)

    def _fail(self, what: str, last_error: BaseException | None) -> None:
        errors = _error_lines(self.log_file, self._log_offset)
        message = (
            f"RabbitMQ node {self.nodename} (port {self.port}) {what}; "
            f"last connection error: {last_error!r}\n"
            f"--- errors in {self.log_file} ---\n{errors}\n"
            f"--- tail of {self.log_file} ---\n{_tail(self.log_file, 30)}\n"
            f"--- tail of {self.startup_log} ---\n{_tail(self.startup_log, 30)}"
        )
        self._reap_server()
        self._stop_epmd()
        # A listener's port, or the distribution port the node checks before
        # it starts (logged to the startup log only: the node's own log does
        # not exist yet), taken since _free_ports().
        said = errors + _tail(self.startup_log)
        taken = any(sign in said for sign in ("eaddrinuse", "dist_port_already_used"))
        error_class = _PortTakenError if taken else RabbitMQNodeError
        raise error_class(message)

    def _descendant_pids(self) -> list[int]:
        # By parentage, not session or process group: erl_child_setup and
        # the port programs under it call setsid(), escaping both.
        # Only while the wrapper is unreaped: after that its pid may belong
        # to some unrelated process, and its orphans are no longer ours.
        if self._server is None or self._server.returncode is not None:
            return []
        children: dict[int, list[int]] = {}
        for pid in _all_pids():
            parent = _read_ppid(pid)
            if parent is not None:
                children.setdefault(parent, []).append(pid)
        found: list[int] = []
        pending = [self._server.pid]
        while pending:
            pid = pending.pop()
            found.append(pid)
            pending.extend(children.get(pid, []))
        return found

    def _beam_pids(self) -> list[int]:
        # The VM names itself only after boot, so its argv carries no node
        # name; "-home <our home dir>" is just as unique, and still finds a VM
        # whose wrapper is gone: nothing of this node may outlive stop().
        wanted = str(self.home_dir)
        found = []
        for pid in _all_pids():
            argv = _read_cmdline(pid)
            if not argv or not os.path.basename(argv[0]).startswith("beam"):
                continue
            pairs = set(itertools.pairwise(argv))
            # rabbitmqctl's VM gets the same home; only the server boots rabbit.
            if ("-home", wanted) in pairs and ("-s", "rabbit") in pairs:
                found.append(pid)
        return sorted(found)

    def _reap_server(self) -> None:
        """Make sure nothing of the node is left: wrapper, VM, port programs."""
        if self._server is None:
            return
        leftovers = set(self._descendant_pids()) | set(self._beam_pids())
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self._server.wait(timeout=10)
        except subprocess.TimeoutExpired as exc:
            raise RabbitMQNodeError(f"{self.nodename}: wrapper did not exit") from exc
        self._wait_gone(sorted(leftovers), timeout=10)
        self._server = None

    def _wait_gone(self, pids: list[int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while any(_pid_alive(pid) for pid in pids):
            if time.monotonic() > deadline:
                raise RabbitMQNodeError(f"{self.nodename}: processes {pids} survived SIGKILL")
            time.sleep(0.05)

    def _stop_quietly(self) -> None:
        try:
            self.stop(timeout=15)
        except (RabbitMQNodeError, OSError, subprocess.SubprocessError) as exc:
            print(f"could not stop RabbitMQ node {self.nodename}: {exc}", file=sys.stderr)
