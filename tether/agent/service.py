"""The agent process: drivers, worker pool, work consumer and heartbeat."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from oslo_config import cfg

from tether import __version__
from tether.agent import driver_manager
from tether.agent.audit import Auditor, lists_its_device
from tether.agent.claim_channel import ClaimChannel
from tether.agent.consumer import WorkConsumer
from tether.agent.heartbeat import Heartbeat
from tether.agent.plugin_api import PluginApi
from tether.agent.reports import Reports, ReportSender
from tether.agent.runner import Runner
from tether.agent.standby import StandbyKeeper
from tether.agent.status_poller import StatusPoller
from tether.agent.status_server import StatusServer
from tether.common import metrics, rpc, transport

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
        "driver_timeout",
        default=300.0,
        min=1,
        max=1740,
        help="Seconds a driver call may take before its task fails with a retryable "
        "DriverTimeout and its worker is replaced. Keep it well below RabbitMQ's "
        "consumer_timeout (30 minutes by default): the broker takes back a work message "
        "held unacked longer than that.",
    ),
    cfg.FloatOpt(
        "operation_timeout",
        default=3600.0,
        min=1,
        help="Seconds a long device operation (a driver that answered InProgress) may take in all "
        "before its task fails with a retryable DriverTimeout.",
    ),
    cfg.FloatOpt(
        "report_interval",
        default=2.0,
        min=0.1,
        help="Seconds between state reports to the plugin (the agent's heartbeat).",
    ),
    cfg.FloatOpt(
        "status_interval",
        default=10.0,
        min=1,
        help="Seconds between two polls of each driver's status() (the operating status and counters "
        "of what its device holds). Each root of a shared provider is polled by one live agent.",
    ),
    cfg.FloatOpt(
        "rpc_timeout",
        default=10.0,
        min=0.1,
        help="Seconds to wait for the plugin to answer a claim or a state report before trying again.",
    ),
    cfg.PortOpt(
        "metrics_port",
        default=0,
        help="Port of the agent's /metrics, /healthz and /readyz; 0 serves none. Give each agent "
        "on a host its own.",
    ),
    cfg.HostAddressOpt("metrics_host", default="127.0.0.1", help="Address the metrics port listens on."),
    cfg.FloatOpt(
        "audit_interval",
        default=60.0,
        min=0,
        help="Seconds between two drift audits: each driver that can list its device is compared "
        "with the desired state of the resources placed on this agent, and drifted resources show "
        "in_sync false with their drift. 0 audits nothing.",
    ),
    cfg.FloatOpt(
        "standby_interval",
        default=1.0,
        min=0.1,
        help="Seconds between two passes that keep this agent's standby copies of ACTIVE_STANDBY "
        "roots in step with their desired state (and tell its drivers of their peers).",
    ),
    cfg.BoolOpt(
        "repair_drift",
        default=False,
        help="Have the plugin re-apply the desired state of every resource the drift audit finds "
        "drifted (an update task each); otherwise drift is only reported.",
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
    rpc.register_opts(conf)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


class Agent:
    """Everything one agent runs."""

    def __init__(self, conf: cfg.ConfigOpts, agent_id: str | None = None) -> None:
        self.conf = conf
        self.providers = list(conf.agent.providers)
        self.agent_id = agent_id or conf.agent.agent_id or conf.host
        self.started_at = datetime.datetime.now(datetime.UTC)
        self.reports = Reports()
        self.drivers = driver_manager.load_drivers(
            conf, self.providers, driver_manager.AgentCallbacks(self.reports)
        )
        #: what each driver supports, sent with every state report (checked when loaded)
        self.capabilities = {
            name: driver.current_capabilities().to_wire() for name, driver in self.drivers.items()
        }
        broker = transport.Broker(conf)
        claims = ClaimChannel(broker, self.agent_id, conf.agent.rpc_timeout)
        self.plugin = PluginApi(conf, claims)
        self.sender = ReportSender(self.reports, self.plugin, self.agent_id, conf.agent.driver_timeout)
        self.status_poller = StatusPoller(
            self.drivers, self.plugin, self.agent_id, conf.agent.status_interval, self.reports
        )
        workers = conf.agent.workers
        self.consumer = WorkConsumer(
            broker,
            Runner(
                self.drivers, self.plugin, self.agent_id, conf.host, conf.agent.driver_timeout, self.reports
            ),
            [p if self.drivers[p].placement == "shared" else f"{p}.{self.agent_id}" for p in self.providers],
            workers=workers,
            prefetch=conf.agent.prefetch or 2 * workers,
            shutdown_timeout=conf.agent.shutdown_timeout,
            operation_timeout=conf.agent.operation_timeout,
            claims=claims,
        )
        self.auditor = Auditor(
            self.drivers, self.plugin, self.agent_id, conf.agent.audit_interval, conf.agent.repair_drift
        )
        self.standby = StandbyKeeper(self.drivers, self.plugin, self.agent_id, conf.agent.standby_interval)
        #: each driver's placement and resource types, whence the plugin routes (RPC API 1.9)
        self.declarations = {
            name: driver_manager.declaration(driver) for name, driver in self.drivers.items()
        }
        #: where peers reach each host-placed driver (RPC API 1.8)
        self.addresses = {
            name: address
            for name, driver in self.drivers.items()
            if driver.placement == "host" and (address := driver.peer_address())
        }
        self.heartbeat = Heartbeat(
            self.plugin,
            conf.agent.report_interval,
            self.state,
            lambda up: self.consumer.pause(not up),
            self.converge,
        )

    def problems(self) -> list[str]:
        found = []
        if not self.consumer.connected.is_set():
            found.append(f"not connected to the broker at {self.consumer.broker.url.masked}")
        if self.consumer._paused:  # noqa: SLF001 - the consumer's own flag
            found.append("disabled by an administrator")
        return found

    def converge(self, bound: dict[str, list[str]], sent_at: float) -> None:
        """Host-placed drivers keep exactly the roots bound to this agent."""
        for name, driver in self.drivers.items():
            if driver.placement == "host":
                try:
                    driver.converge(set(bound.get(name, ())), sent_at)
                except Exception:
                    LOG.exception("driver %s failed to converge", name)

    def state(self) -> dict[str, Any]:
        # A plugin of an earlier release takes statuses only here.
        statuses, stats = ({}, {}) if self.plugin.status_reports else self.reports.take_flat()
        metrics.IN_FLIGHT.set(self.consumer.in_flight)
        return {
            "agent_id": self.agent_id,
            "host": self.conf.host,
            "providers": self.providers,
            "version": __version__,
            "workers": self.conf.agent.workers,
            "in_flight": self.consumer.in_flight,
            # The devices this agent audits for drift; a shared one is left to another that does.
            "audits": [
                name for name, d in self.drivers.items() if self.auditor.interval > 0 and lists_its_device(d)
            ],
            "statuses": statuses,
            "stats": stats,
            # RPC API 1.6; an older plugin ignores it.
            "capabilities": self.capabilities,
            "addresses": self.addresses,
            "drivers": self.declarations,
            "started_at": self.started_at.isoformat(),
            "driver_timeout": self.conf.agent.driver_timeout,
        }

    def start(self) -> None:
        self.consumer.start()
        self.heartbeat.start()
        self.sender.start()
        self.status_poller.start()
        self.auditor.start()
        self.standby.start()
        if self.conf.agent.metrics_port:
            self.status_server = StatusServer(
                self.conf.agent.metrics_host, self.conf.agent.metrics_port, self.problems
            )
            self.status_server.start()
        LOG.info(
            "agent %s on host %s serves providers %s with %d workers via %s",
            self.agent_id,
            self.conf.host,
            ", ".join(self.providers),
            self.conf.agent.workers,
            self.consumer.broker.url.masked,
        )

    status_server: StatusServer | None = None

    def stop(self) -> None:
        if self.status_server is not None:
            self.status_server.stop()
        self.consumer.stop(timeout=self.conf.agent.shutdown_timeout + 5)
        self.sender.stop()
        self.status_poller.stop()
        self.auditor.stop()
        self.standby.stop()
        self.heartbeat.stop()
        for driver in self.drivers.values():
            driver.close()
        LOG.info("agent %s stopped", self.agent_id)
