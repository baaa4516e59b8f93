"""``tether-agent``: consumes work for its providers and runs their drivers."""

from __future__ import annotations

from collections.abc import Sequence

from oslo_config import cfg

from tether.agent import driver_manager, service
from tether.cmd import daemon
from tether.common.exceptions import TetherError

PROG = "tether-agent"


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(
        argv, PROG, [service.register_opts], required=[(None, "transport_url"), ("agent", "providers")]
    )
    try:
        _register_driver_opts(conf)
        agent = service.Agent(conf)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    agent.start()
    daemon.started()
    daemon.wait_for_signal()
    agent.stop()


def _register_driver_opts(conf: cfg.ConfigOpts) -> None:
    # Driver options are known only once [agent] providers is read; oslo.config
    # resolves options registered after parsing from the files already read.
    driver_manager.register_driver_opts(conf, list(conf.agent.providers))


if __name__ == "__main__":
    main()
