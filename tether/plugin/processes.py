"""``tether-plugin`` on two cores: the API in one process, the pipeline in another.

One Python process runs one thread at a time, and a plugin under load
spends about half its CPU serving HTTP and half relaying, claiming and
recording. The parent process started by the operator starts two children
from the same command line and options, links them with a pair of
datagram sockets (:mod:`tether.plugin.link`) and watches them:

* the **API** child serves HTTP, accepts changes and answers ``?wait``;
* the **pipeline** child runs :class:`~tether.plugin.pipeline.Pipeline`.

They share the database: on SQLite they take turns to write through a file
lock beside it (:class:`~tether.plugin.db.session.FileTurn`), on PostgreSQL
they are two of its clients like any replica. Their Prometheus counters are
kept in a directory both write (``prometheus_client``'s multiprocess mode)
and served together by the API.

SIGTERM or SIGINT stops the API first and the pipeline after it, so that
the relay publishes what the last accepts committed. SIGHUP goes to the
API (read credentials again). A child that exits on its own stops the
other and the parent, with the child's exit code, for the service manager
to restart the plugin whole; a child whose parent dies is sent SIGTERM by
the kernel.
"""

from __future__ import annotations

import ctypes
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
from tether.plugin import link

LOG = logging.getLogger(__name__)

API = "api"
PIPELINE = "pipeline"
#: environment of a child: its role, its end of the link, its parent
ROLE = "TETHER_PLUGIN_ROLE"
LINK_FD = "TETHER_PLUGIN_LINK_FD"
PARENT = "TETHER_PLUGIN_PARENT"
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


def role() -> tuple[str, link.Link] | None:
    """This process's role and its end of the link, if a parent started it as one."""
    name = os.environ.get(ROLE)
    if name is None:
        return None
    # Die with the parent rather than serve on unsupervised.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(os.environ[PARENT]):
        sys.exit(f"tether-plugin {name}: the parent process is gone")
    sock = socket.socket(fileno=int(os.environ[LINK_FD]))
    return name, link.Link(sock, f"link-to-{PIPELINE if name == API else API}")


def supervise(argv: Sequence[str], stop_requested: Callable[[float], bool]) -> int:
    """Run the API and the pipeline as two children until stopped; the exit code.

    :param stop_requested: waits up to the given seconds for SIGINT or
        SIGTERM and says whether one came.
    """
    api_end, pipeline_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    metrics_dir = tempfile.mkdtemp(prefix="tether-plugin-metrics-")
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, end in ((PIPELINE, pipeline_end), (API, api_end)):
            env = {
                **os.environ,
                ROLE: name,
                LINK_FD: str(end.fileno()),
                PARENT: str(os.getpid()),
                METRICS_DIR: metrics_dir,
            }
            children[name] = subprocess.Popen(
                [sys.executable, "-m", "tether.cmd.plugin", *argv], env=env, pass_fds=(end.fileno(),)
            )
        api_end.close()
        pipeline_end.close()
        LOG.info(
            "plugin: API in process %d, pipeline in process %d", children[API].pid, children[PIPELINE].pid
        )
        signal.signal(signal.SIGHUP, lambda *_: children[API].send_signal(signal.SIGHUP))
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
    for name in (API, PIPELINE):
        child = children[name]
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            LOG.error("the %s process ignored SIGTERM for %.0f s; killing it", name, timeout)
            child.kill()
            child.wait()
