"""The agent process: drivers, worker pool and work consumer, wired together."""

from __future__ import annotations

import logging

from oslo_config import cfg

from tether.agent import driver_manager
from tether.agent.consumer import WorkConsumer
from tether.agent.runner import Runner
from tether.common import transport

LOG = logging.getLogger(__name__)

GROUP = "agent"
OPTS: list[cfg.Opt] = [
    cfg.ListOpt(
        "providers",
        default=[],
        help="Providers this agent serves: driver names from the tether.drivers "
        "entry-point namespace, e.g. noop,fake or haproxy.",
    ),
    cfg.StrOpt(
        "agent_id",
        sample_default="<host>",
        help="Name of this agent, unique among all agents; defaults to [DEFAULT] host. "
        "Set it when one host runs several agents.",
    ),
    cfg.IntOpt("workers", default=8, min=1, help="Driver calls this agent runs at once."),
    cfg.IntOpt(
        "prefetch",
        min=1,
        sample_default="2 * workers",
        help="Work messages taken from the broker ahead of free workers; defaults to "
        "twice the workers. Messages held here are not available to other agents.",
    ),
    cfg.FloatOpt(
        "shutdown_timeout",
        default=30.0,
        min=0,
        help="Seconds a stopping agent waits for running driver calls before leaving "
        "them to the broker to hand to another agent.",
    ),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


class Agent:
    """Everything one agent runs."""

    def __init__(self, conf: cfg.ConfigOpts, agent_id: str | None = None) -> None:
        self.conf = conf
        self.providers = list(conf.agent.providers)
        self.agent_id = agent_id or conf.agent.agent_id or conf.host
        self.drivers = driver_manager.load_drivers(conf, self.providers, driver_manager.AgentCallbacks())
        workers = conf.agent.workers
        self.consumer = WorkConsumer(
            transport.Broker(conf),
            Runner(self.drivers, self.agent_id, conf.host),
            self.providers,
            workers=workers,
            prefetch=conf.agent.prefetch or 2 * workers,
            shutdown_timeout=conf.agent.shutdown_timeout,
        )

    def start(self) -> None:
        self.consumer.start()
        LOG.info(
            "agent %s on host %s serves providers %s with %d workers via %s",
            self.agent_id,
            self.conf.host,
            ", ".join(self.providers),
            self.conf.agent.workers,
            self.consumer.broker.url.masked,
        )

    def stop(self) -> None:
        self.consumer.stop(timeout=self.conf.agent.shutdown_timeout + 5)
        for driver in self.drivers.values():
            driver.close()
        LOG.info("agent %s stopped", self.agent_id)
