"""The plugin process: API, outbox relay, claim server, result consumer, RPC
server and reaper, wired together."""

from __future__ import annotations

import dataclasses
import logging
import signal
from typing import Any

import sqlalchemy as sa
import uvicorn
from oslo_config import cfg

from tether.common import rpc, transport
from tether.common.exceptions import ConfigError
from tether.common.resource_types import Registry
from tether.plugin import agents, auth, callbacks, dispatch, lifecycle, reaper, results, throttle, waiters
from tether.plugin.api import views
from tether.plugin.api.app import create_app
from tether.plugin.api.deps import Api
from tether.plugin.changes import Changes
from tether.plugin.claim_server import ClaimServer
from tether.plugin.claims import ClaimDecider
from tether.plugin.db import migration, session
from tether.plugin.db.group_commit import GroupCommit
from tether.plugin.notifications import Notifications
from tether.plugin.policy import Policy
from tether.plugin.providers import Providers
from tether.plugin.rpc import PluginEndpoint
from tether.plugin.scheduler import Scheduler

LOG = logging.getLogger(__name__)

GROUP = "plugin"
OPTS: list[cfg.Opt] = [
    cfg.ListOpt(
        "providers",
        default=["noop", "fake"],
        help="Providers (driver names in the tether.drivers entry-point namespace) that "
        "resources may name; agents serving them must be running for changes to apply.",
    ),
]


class Plugin:
    """Everything one plugin process runs."""

    def __init__(self, conf: cfg.ConfigOpts, migrate: bool = False) -> None:
        self.conf = conf
        self.registry = Registry.load()
        self.providers = Providers.load(conf.plugin.providers)
        self.broker = transport.Broker(conf)
        self.engine = session.make_engine(conf)
        if migrate:
            migration.upgrade(self.engine)
        elif not migration.is_current(self.engine):
            raise ConfigError(
                reason=f"the database schema is at revision {migration.current(self.engine)}, "
                f"this plugin needs {migration.head()}; run "
                f"`tether-manage {_config_args(conf)}db upgrade` first."
            )
        self.sessionmaker = session.make_sessionmaker(self.engine)
        self.read_engine = (
            self.engine if _in_memory(self.engine) else session.make_engine(conf, readonly=True)
        )
        self.reader = session.make_sessionmaker(self.read_engine)
        # Reports arrive over the broker the result consumer listens on:
        # while it is cut off, an agent's silence proves nothing.
        self.agents = agents.Registry(
            conf.plugin.agent_down_time, listening_since=lambda: self.results.connected_since
        )
        self.scheduler = Scheduler(self.providers, self.agents)
        self.policy = dataclasses.replace(lifecycle.Policy.from_conf(conf), router=self.scheduler.route)
        self.relay = dispatch.OutboxRelay(
            self.broker,
            self.sessionmaker,
            self.reader,
            self.providers.names,
            conf.plugin.relay_batch_size,
            conf.plugin.relay_interval,
        )
        self.writer = GroupCommit(self.sessionmaker, conf.api.group_commit_size)
        self.changes = Changes(
            self.registry,
            self.providers,
            self.writer,
            self.policy,
            busy_policy=conf.api.busy_policy,
            max_queued=conf.api.max_queued_per_tree,
            backpressure=throttle.Backpressure(conf.api.max_backlog),
            on_commit=self.relay.wake,
        )
        self.results = results.ResultConsumer(
            self.broker, results.ResultRecorder(self.sessionmaker, self.policy), conf.plugin.result_batch_size
        )
        self.endpoint = PluginEndpoint(self.sessionmaker, self.policy, self.agents, self.providers)
        self.claims = ClaimServer(
            self.broker,
            ClaimDecider(self.sessionmaker, self.policy, self.providers),
            conf.plugin.claim_batch_size,
        )
        self.reaper = reaper.Reaper(
            self.sessionmaker,
            self.policy,
            self.agents,
            conf.plugin.reaper_interval,
            scheduler=self.scheduler,
            reschedule=conf.plugin.reschedule_on_agent_death,
            queue_depths=self.broker.work_queue_depths,
        )
        self._rpc_server: Any = None
        self.api = Api(
            registry=self.registry,
            changes=self.changes,
            reader=self.reader,
            agents=self.agents,
            sessionmaker=self.sessionmaker,
            default_limit=conf.api.default_page_size,
            max_limit=conf.api.max_page_size,
            max_body_bytes=conf.api.max_body_bytes,
            max_string_length=conf.api.max_string_length,
            max_items=conf.api.max_items,
            workers=conf.api.workers,
            idempotency_retention=conf.api.idempotency_retention,
            max_wait=conf.api.max_wait,
            limiter=throttle.RateLimiter(conf.api.rate_limit, conf.api.rate_burst),
            check_callback=lambda url: callbacks.check_url(conf, url),
            auth=auth.from_conf(conf),
            policy=Policy(conf, self.registry.values()),
        )
        self.api.waiters.install(self.sessionmaker)
        self.listener: waiters.Listener | None = None
        if self.engine.dialect.name == "postgresql":
            waiters.send_finished(self.sessionmaker)
            self.listener = waiters.Listener(self.engine, self.api.waiters)
        self.callbacks = callbacks.Deliverer(conf, self.sessionmaker, lambda session, task: views.task(task))
        self.notifications = Notifications(conf)
        self.notifications.install(self.sessionmaker)
        self.app = create_app(self.api, self._broker_problem)

    def _broker_problem(self) -> str | None:
        down = [loop.name for loop in (self.relay, self.results, self.claims) if not loop.connected.is_set()]
        if down:
            return f"not connected to the broker at {self.broker.url.masked}: {', '.join(down)}"
        return None

    def start(self) -> None:
        self._rpc_server = rpc.get_server(rpc.get_transport(self.conf), self.conf.host, [self.endpoint])
        self._rpc_server.start()
        self.relay.start()
        self.results.start()
        self.claims.start()
        self.reaper.start()
        if self.listener is not None:
            self.listener.start()
        if self.conf.callbacks.secret:  # without one no callback can have been accepted
            self.callbacks.start()
        LOG.info(
            "plugin on %s: providers %s; resource types %s; database %s; broker %s",
            self.conf.host,
            ", ".join(self.providers.names),
            ", ".join(self.registry),
            self.engine.url.render_as_string(hide_password=True),
            self.broker.url.masked,
        )

    def serve(self) -> None:
        """Serve the API until SIGINT or SIGTERM."""
        config = uvicorn.Config(
            self.app,
            host=self.conf.api.bind_host,
            port=self.conf.api.bind_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        LOG.info("API listening on http://%s:%d/v1", self.conf.api.bind_host, self.conf.api.bind_port)
        # uvicorn takes SIGINT and SIGTERM only; SIGHUP is the operator's
        # "read your credentials again".
        signal.signal(signal.SIGHUP, lambda *_: self.api.auth.reload())
        uvicorn.Server(config).run()

    def stop(self) -> None:
        """Stop taking calls, then drain: the relay publishes what is committed,
        the result consumer records what it holds."""
        if self._rpc_server is not None:
            self._rpc_server.stop()
            self._rpc_server.wait()
        self.claims.stop()
        self.reaper.stop()
        if self.listener is not None:
            self.listener.stop()
        self.callbacks.stop()
        self.notifications.stop()
        self.relay.stop()
        self.results.stop()
        self.writer.stop()
        self.engine.dispose()
        self.read_engine.dispose()
        LOG.info("plugin stopped")


def _in_memory(engine: sa.Engine) -> bool:
    # An in-memory SQLite database exists only on its one connection.
    return engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:")


def _config_args(conf: cfg.ConfigOpts) -> str:
    return "".join(f"--config-file {f} " for f in conf.config_file)
