"""What every tether daemon does at start and stop."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from oslo_config import cfg

from tether.common import config, log
from tether.common.exceptions import ConfigError, TetherError

LOG = logging.getLogger(__name__)

#: Set by the first SIGINT or SIGTERM; a second one ends the process at once.
STOP = threading.Event()


def configure(
    argv: Sequence[str] | None,
    prog: str,
    register: Sequence[Callable[[cfg.ConfigOpts], None]],
    required: Sequence[tuple[str | None, str]] = (),
    defaults: dict[tuple[str | None, str], object] | None = None,
) -> cfg.ConfigOpts:
    """Register options, parse the ini files and set up logging, or exit 2.

    oslo.messaging works with the global ``cfg.CONF`` only, so daemons use it.
    """
    _install_signal_handlers()
    conf = cfg.CONF
    config.register_opts(conf)
    for reg in register:
        reg(conf)
    for (group, name), value in (defaults or {}).items():
        conf.set_default(name, value, group=group)
    try:
        config.load(conf, argv, prog, required)
    except ConfigError as exc:
        fail(prog, exc)
    log.setup(conf)
    return conf


def fail(prog: str, exc: TetherError) -> None:
    print(f"{prog}: {exc.msg}", file=sys.stderr)
    sys.exit(2)


def started() -> None:
    """Keep what start-up built out of the garbage collector's full passes.

    The modules, the configuration, the app and the engines are some 170,000
    objects that live as long as the process. A full collection walks them
    all, stopping every thread for 50 to 110 ms (the plugin's processes under
    load); frozen, they are never walked again.
    """
    gc.collect()
    gc.freeze()


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    while not STOP.wait(1.0):
        pass


def _install_signal_handlers() -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if STOP.is_set():
            LOG.warning("received %s again, exiting now", name)
            logging.shutdown()
            os._exit(1)
        LOG.info("received %s, stopping", name)
        STOP.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
