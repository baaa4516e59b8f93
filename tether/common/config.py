"""Options every tether process reads, and loading a daemon's configuration.

Options are registered by the daemon's ``main()`` (never at import time) on
the ``ConfigOpts`` it passes down; :func:`load` parses the ini files and
checks every registered option once, so a wrong value stops the daemon at
start with the option's name and file instead of failing mid-request.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Sequence

from oslo_config import cfg

from tether import __version__
from tether.common.exceptions import ConfigError

DEFAULT_OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "state_path",
        default="/var/lib/tether",
        help="Directory where tether keeps its local state (the SQLite database of "
        "the embedded default, driver files).",
    ),
    cfg.HostAddressOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<hostname>",
        help="Name of this host as agents and logs report it.",
    ),
]

MESSAGING_GROUP = "messaging"
MESSAGING_OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "queue_type",
        default="quorum",
        choices=[
            ("quorum", "replicated RabbitMQ quorum queues with a delivery limit"),
            ("classic", "classic durable queues, for brokers without quorum queues"),
        ],
        help="Kind of durable queue declared on RabbitMQ for work and results. Every "
        "process must use the same value, or the broker refuses the declaration.",
    ),
    cfg.IntOpt(
        "max_deliveries",
        default=5,
        min=1,
        help="Deliveries of one work or result message after which a quorum queue "
        "dead-letters it instead of handing it out again.",
    ),
    cfg.FloatOpt(
        "confirm_timeout",
        default=30.0,
        min=0.1,
        help="Seconds to wait for the broker to confirm a batch of published "
        "messages before treating the batch as unsent and publishing it again.",
    ),
    cfg.IntOpt(
        "heartbeat",
        default=60,
        min=0,
        help="AMQP heartbeat in seconds; 0 disables it.",
    ),
    cfg.FloatOpt(
        "batch_wait",
        default=0.001,
        min=0.0,
        max=0.05,
        help="Seconds a consumer that has just taken a message waits for the next before "
        "acting on what it holds (the plugin deciding claims and recording results, an "
        "agent handing out work): under moderate load, batches of two or three instead of "
        "one each, for less CPU per task. It adds at most this much latency per message; "
        "under full load the next message is already there. 0 acts on each at once.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register what every process reads.

    ``[DEFAULT] transport_url`` belongs to oslo.messaging, which registers it
    itself; :func:`load` has it do so once the files are parsed.
    """
    from tether.common import log

    conf.register_opts(DEFAULT_OPTS + log.LOG_OPTS)
    conf.register_opts(MESSAGING_OPTS, group=MESSAGING_GROUP)


def load(
    conf: cfg.ConfigOpts,
    argv: Sequence[str] | None,
    prog: str,
    required: Iterable[tuple[str | None, str]] = (),
) -> None:
    """Parse the command line and ini files into ``conf`` and check every option.

    :param required: ``(group, name)`` pairs that must have a value; ``None``
        is the ``[DEFAULT]`` group.
    :raises ConfigError: naming the option and the file that set it.
    """
    try:
        conf(
            args=list(argv) if argv is not None else None,
            project="tether",
            prog=prog,
            version=__version__,
            default_config_files=[],
        )
    except cfg.Error as exc:
        raise ConfigError(reason=str(exc)) from exc
    from tether.common import rpc

    rpc.register_opts(conf)
    _check_values(conf)
    for group, name in required:
        value = conf[group][name] if group else conf[name]
        location = conf.get_location(name, group)
        unset = location is None or location.location == cfg.Locations.opt_default
        if value in (None, "", []) or unset:
            raise ConfigError(
                reason=f"[{group or 'DEFAULT'}] {name} is required but not set "
                f"(config files: {_files(conf)})."
            )


def state_path(conf: cfg.ConfigOpts, *parts: str) -> str:
    path = os.path.join(os.path.expanduser(conf.state_path), *parts)
    os.makedirs(os.path.dirname(path) if parts else path, exist_ok=True)
    return path


def _check_values(conf: cfg.ConfigOpts) -> None:
    # oslo.config converts values lazily; touching each option here turns a
    # typo in an ini file into a refusal to start rather than a 500 at 3 a.m.
    for group, name, _opt in _registered(conf):
        try:
            conf[group][name] if group else conf[name]
        except (cfg.ConfigFileValueError, ValueError) as exc:
            raise ConfigError(
                reason=f"[{group or 'DEFAULT'}] {name}: {exc} (config files: {_files(conf)})."
            ) from exc


def _registered(conf: cfg.ConfigOpts) -> Iterable[tuple[str | None, str, cfg.Opt]]:
    for name, info in conf._opts.items():  # noqa: SLF001 - oslo.config has no public iterator
        yield None, name, info["opt"]
    for group_name in conf._groups:  # noqa: SLF001
        for name, info in conf._groups[group_name]._opts.items():  # noqa: SLF001
            yield group_name, name, info["opt"]


def _files(conf: cfg.ConfigOpts) -> str:
    return ", ".join(conf.config_file) if conf.config_file else "none given"
