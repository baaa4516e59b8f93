"""``tether-plugin``: the REST API, outbox relay and result recorder.

It runs the API and the pipeline as two processes it supervises
(:mod:`tether.plugin.processes`), or both in itself where they cannot be
parted; the children are this same command, told their role.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

from oslo_config import cfg

from tether.cmd import daemon
from tether.common.exceptions import TetherError
from tether.common.resource_types import Registry
from tether.plugin import link, opts, processes
from tether.plugin.db import session
from tether.plugin.pipeline import Pipeline
from tether.plugin.service import Core, Plugin, check_schema

PROG = "tether-plugin"
LOG = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(argv, PROG, [opts.register_opts], required=[(None, "transport_url")])
    child = processes.role()
    if child is not None:
        if child.role == processes.PIPELINE:
            _run_pipeline(conf, child.links)
        else:
            _run_api(conf, child.links[0], child.listening)
        return
    try:
        reason = processes.one_process_reason(conf)
        if reason is None:
            _check(conf)
            listening = processes.bind(conf.api.bind_host, conf.api.bind_port)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    if reason is None:
        argv = sys.argv[1:] if argv is None else argv
        sys.exit(processes.supervise(argv, listening, conf.plugin.api_processes, daemon.STOP.wait))
    LOG.info("API and pipeline in one process: %s", reason)
    _run_api(conf, None, None)


def _check(conf: cfg.ConfigOpts) -> None:
    """Refuse once, before starting children that would each refuse."""
    Registry.load()
    engine = session.make_engine(conf, readonly=True)
    try:
        check_schema(conf, engine)
    finally:
        engine.dispose()


def _run_api(conf: cfg.ConfigOpts, to_pipeline: link.Link | None, listening: socket.socket | None) -> None:
    try:
        plugin = Plugin(conf, to_pipeline=to_pipeline)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    plugin.start()
    daemon.started()
    try:
        # uvicorn takes the stop signals while it serves and raises them again
        # when it has shut down; our handler then only records the stop.
        if not daemon.STOP.is_set():
            plugin.serve(listening)
    finally:
        plugin.stop()


def _run_pipeline(conf: cfg.ConfigOpts, to_apis: list[link.Link]) -> None:
    try:
        core = Core(conf)
        pipeline = Pipeline(core)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    pipeline.link_to_apis(to_apis)
    pipeline.start()
    daemon.started()
    try:
        daemon.wait_for_signal()
    finally:
        pipeline.stop()
        core.dispose()
        LOG.info("pipeline stopped")


if __name__ == "__main__":
    main()
