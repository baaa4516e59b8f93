"""``tether-allinone``: the plugin and several agents in one process.

On the embedded defaults (SQLite and the in-memory transport) it needs
nothing but Python: the quick start, the demo, fast tests. It is not for
production: the in-memory transport dies with the process, and with it any
message not yet recorded.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from oslo_config import cfg

from tether.agent import driver_manager
from tether.agent import opts as agent_opts
from tether.agent import service as agent_service
from tether.cmd import daemon
from tether.common import opts as common_opts
from tether.common import rpc
from tether.common.exceptions import ConfigError, TetherError
from tether.plugin import opts as plugin_opts
from tether.plugin.service import Plugin

LOG = logging.getLogger(__name__)

PROG = "tether-allinone"

GROUP = "allinone"
OPTS: list[cfg.Opt] = [
    cfg.IntOpt("agents", default=2, min=1, help="Agents to run inside the process."),
]

#: Where the all-in-one's defaults differ from the daemons'.
DEFAULTS: dict[tuple[str | None, str], object] = {
    (None, "transport_url"): "memory://",
    (None, "state_path"): "~/.local/state/tether",
    ("agent", "providers"): ["noop", "fake"],
}


def register_opts(conf: cfg.ConfigOpts) -> None:
    plugin_opts.register_opts(conf)
    agent_service.register_opts(conf)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    """Every option the all-in-one reads, with the all-in-one's defaults."""
    groups = (
        common_opts.list_common_opts()
        + [(None, [rpc.transport_url_opt()])]
        + plugin_opts.list_opts()
        + agent_opts.list_opts()
        + [(GROUP, OPTS)]
    )
    listed = []
    for group, opts in groups:
        patched = []
        for opt in opts:
            if (group, opt.dest) in DEFAULTS:
                opt = copy.deepcopy(opt)
                opt.default = DEFAULTS[(group, opt.dest)]
                opt.sample_default = None
            patched.append(opt)
        listed.append((group, patched))
    return listed


def check_providers(conf: cfg.ConfigOpts) -> None:
    """The all-in-one's agents are its only agents: a provider the API
    accepts and none of them serves would leave its changes PENDING until
    ``pending_timeout``.

    :raises ConfigError: naming the providers and both options.
    """
    unserved = [p for p in conf.plugin.providers if p not in conf.agent.providers]
    if unserved:
        raise ConfigError(
            reason=f"[plugin] providers accepts {', '.join(unserved)}, which [agent] providers "
            f"({', '.join(conf.agent.providers) or 'nothing'}) does not serve, and the all-in-one's "
            f"agents are its only agents: add {', '.join(unserved)} to [agent] providers, or remove "
            "it from [plugin] providers"
        )


def main(argv: Sequence[str] | None = None) -> None:
    conf = daemon.configure(argv, PROG, [register_opts], defaults=DEFAULTS)
    try:
        check_providers(conf)
        driver_manager.register_driver_opts(conf, list(conf.agent.providers))
        plugin = Plugin(conf, migrate=True)
        agents = [
            agent_service.Agent(conf, agent_id=f"{conf.host}-agent-{i + 1}")
            for i in range(conf.allinone.agents)
        ]
        if agents:
            # Its own agents' drivers, known before their first report.
            plugin.providers.assume(agents[0].declarations)
    except TetherError as exc:
        daemon.fail(PROG, exc)
    plugin.start()
    for agent in agents:
        agent.start()
    LOG.info(
        "all-in-one ready: API on http://%s:%d/v1, %d agents, state in %s",
        conf.api.bind_host,
        conf.api.bind_port,
        len(agents),
        conf.state_path,
    )
    daemon.started()
    try:
        # uvicorn takes the stop signals while it serves and raises them again
        # when it has shut down; our handler then only records the stop.
        if not daemon.STOP.is_set():
            plugin.serve()
    finally:
        for agent in agents:
            agent.stop()
        plugin.stop()


if __name__ == "__main__":
    main()
