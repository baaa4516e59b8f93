"""``tether-plugin``: the REST API, outbox relay and result recorder."""

from __future__ import annotations

from collections.abc import Sequence

from tether.cmd import daemon
from tether.common.exceptions import TetherError
from tether.plugin import opts
from tether.plugin.service import Plugin

PROG = "tether-plugin"


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(argv, PROG, [opts.register_opts], required=[(None, "transport_url")])
    try:
        plugin = Plugin(conf)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    plugin.start()
    try:
        # uvicorn takes the stop signals while it serves and raises them again
        # when it has shut down; our handler then only records the stop.
        if not daemon.STOP.is_set():
            plugin.serve()
    finally:
        plugin.stop()


if __name__ == "__main__":
    main()
