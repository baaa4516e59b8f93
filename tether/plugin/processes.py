"""``tether-plugin`` on several cores: the API in one or more processes,
the pipeline in another.

One Python process runs one thread at a time, and a plugin under load
spends about half its CPU serving HTTP and half relaying, claiming and
recording. The parent process started by the operator binds the API's
socket, starts its children from the same command line and options, links
each API child to the pipeline child with a pair of datagram sockets
(:mod:`tether.plugin.link`) and watches them:

* each of the ``[plugin] api_processes`` **API** children serves HTTP on the
  one listening socket (the kernel spreads the connections), accepts
  changes and answers ``?wait``;
* the **pipeline** child runs :class:`~tether.plugin.pipeline.Pipeline`.

They share the database: on SQLite they take turns to write through a file
lock beside it (:class:`~tether.plugin.db.write_turn.FileTurn`), on PostgreSQL
they are clients like any replica's. Their Prometheus counters are kept in a
directory all write (``prometheus_client``'s multiprocess mode) and served
together by each API child.

SIGTERM or SIGINT stops the API children first and the pipeline after them,
so that the relay publishes what the last accepts committed. SIGHUP goes to
the API children (read credentials again). A child that exits on its own
stops the others and the parent, with the child's exit code, for the
service manager to restart the plugin whole; a child whose parent dies is
sent SIGTERM by the kernel.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from oslo_config import cfg

from tether.common import transport
from tether.common.exceptions import ConfigError
from tether.plugin import link

LOG = logging.getLogger(__name__)

API = "api"
PIPELINE = "pipeline"
#: environment of a child: its role, its ends of the links, its parent, the API's socket
ROLE = "TETHER_PLUGIN_ROLE"
LINK_FD = "TETHER_PLUGIN_LINK_FD"
PARENT = "TETHER_PLUGIN_PARENT"
LISTEN_FD = "TETHER_PLUGIN_LISTEN_FD"
#: what prometheus_client's multiprocess mode reads
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"

_PR_SET_PDEATHSIG = 1


def one_process_reason(conf: cfg.ConfigOpts) -> str | None:
    """Why this plugin must run in one process, or None if it may split."""
    if not conf.plugin.separate_pipeline:
        return "[plugin] separate_pipeline is false"
    if transport.parse_url(conf.transport_url).in_memory:
        return "the in-memory transport reaches only its own process"
    url = sa.make_url(conf.database.connection)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        return "an in-memory database lives in one process"
    return None


@dataclasses.dataclass
class Child:
    """What a parent gave the process it started as one of its children."""

    role: str
    links: list[link.Link]
    listening: socket.socket | None


def role() -> Child | None:
    """This process's role, its ends of the links and the API's socket, if a
    parent started it as one of its children."""
    name = os.environ.get(ROLE)
    if name is None:
        return None
    # Die with the parent rather than serve on unsupervised.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ[PARENT]):
        sys.exit(f"tether-plugin {name}: the parent process is gone")
    peer = API if name == PIPELINE else PIPELINE
    links = [
        link.Link(socket.socket(fileno=int(fd)), f"link-to-{peer}") for fd in os.environ[LINK_FD].split(",")
    ]
    listen_fd = os.environ.get(LISTEN_FD)
    listening = socket.socket(fileno=int(listen_fd)) if listen_fd else None
    return Child(name, links, listening)


def is_api(name: str) -> bool:
    return name == API or name.startswith(f"{API}-")


def supervise(
    argv: Sequence[str], listening: socket.socket, apis: int, stop_requested: Callable[[float], bool]
) -> int:
    """Run ``apis`` API children on ``listening`` and the pipeline until
    stopped; the exit code.

    :param stop_requested: waits up to the given seconds for SIGINT or
        SIGTERM and says whether one came.
    """
    pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(apis)]
    metrics_dir = tempfile.mkdtemp(prefix="tether-plugin-metrics-")
    children: dict[str, subprocess.Popen[bytes]] = {}
    names = [API, *(f"{API}-{n}" for n in range(2, apis + 1))]
    try:
        starts: list[tuple[str, list[socket.socket], socket.socket | None]]
        starts = [(PIPELINE, [p[1] for p in pairs], None)]
        starts += [(name, [pair[0]], listening) for name, pair in zip(names, pairs, strict=True)]
        for name, ends, sock in starts:
            fds = [end.fileno() for end in ends]
            env = {
                **os.environ,
                ROLE: name,
                LINK_FD: ",".join(map(str, fds)),
                PARENT: str(os.getpid()),
                METRICS_DIR: metrics_dir,
            }
            if sock is not None:
                env[LISTEN_FD] = str(sock.fileno())
                fds.append(sock.fileno())
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "tether.cmd.plugin", *argv], env=env, pass_fds=fds
            )
        for pair in pairs:
            for end in pair:
                end.close()
        listening.close()
        LOG.info(
            "plugin: API in process %s, pipeline in process %d",
            ", ".join(str(children[name].pid) for name in names),
            children[PIPELINE].pid,
        )

        def reload(*_: object) -> None:
            for name in names:
                children[name].send_signal(signal.SIGHUP)

        signal.signal(signal.SIGHUP, reload)
        while not stop_requested(0.2):
            for name, child in children.items():
                code = child.poll()
                if code is not None:
                    LOG.error("the %s process exited with code %d; stopping the plugin", name, code)
                    _stop(children)
                    return code if code > 0 else 1
        _stop(children)
        return 0
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _stop(children: dict[str, subprocess.Popen[bytes]], timeout: float = 90.0) -> None:
    # The API first: the accepts it finishes still reach the relay.
    for group in ([n for n in children if is_api(n)], [PIPELINE]):
        for name in group:
            if children[name].poll() is None:
                children[name].send_signal(signal.SIGTERM)
        for name in group:
            child = children[name]
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                LOG.error("the %s process ignored SIGTERM for %.0f s; killing it", name, timeout)
                child.kill()
                child.wait()


def bind(host: str, port: int) -> socket.socket:
    """The API's listening socket, bound here so that every API child serves it.

    :raises ConfigError: when the address cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            reason=f"cannot listen on {host}:{port} ([api] bind_host, bind_port): {exc.strerror}"
        ) from exc
    sock.set_inheritable(True)
    return sock
