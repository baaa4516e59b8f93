"""The plugin: its API, and the pipeline in the same process or beside it.

:class:`Core` is what both halves stand on (options, database, broker,
agents, the task lifecycle's policy); :class:`Plugin` adds the API and, in
one process, the :class:`~tether.plugin.pipeline.Pipeline`. ``tether-plugin``
runs the pipeline in a process of its own instead
(:mod:`tether.plugin.processes`) and links the two.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
from collections.abc import Callable
from types import FrameType

import sqlalchemy as sa
import uvicorn
from oslo_config import cfg

from tether.common import transport
from tether.common.exceptions import ConfigError
from tether.common.resource_types import Registry
from tether.plugin import link
from tether.plugin.agents import registry
from tether.plugin.agents.placement import Placement
from tether.plugin.agents.provider_capabilities import ProviderCapabilities
from tether.plugin.agents.providers import Providers
from tether.plugin.api import auth, waiters
from tether.plugin.api.app import create_app
from tether.plugin.api.deps import Api
from tether.plugin.api.policy import AccessPolicy
from tether.plugin.db import migration, session
from tether.plugin.db.group_commit import GroupCommit
from tether.plugin.outbound import callbacks
from tether.plugin.outbound.notifications import Notifications
from tether.plugin.pipeline import Pipeline
from tether.plugin.tasks import handoff, lifecycle, throttle
from tether.plugin.tasks.accept_checks import AcceptChecks
from tether.plugin.tasks.changes import Changes

LOG = logging.getLogger(__name__)

GROUP = "plugin"
OPTS: list[cfg.Opt] = [
    cfg.ListOpt(
        "providers",
        default=["noop", "fake"],
        help="Providers that resources may name, as agents serve them ([agent] providers). "
        "What each is (its placement and resource types) the plugin learns from those "
        "agents' state reports: no driver needs to be installed beside the plugin.",
    ),
    cfg.BoolOpt(
        "separate_pipeline",
        default=True,
        help="Run the pipeline (outbox relay, claim server, result consumer, RPC server, "
        "reaper, callbacks) in a process of its own beside the API's, so that the plugin "
        "uses two cores. False runs everything in one process. The in-memory transport, "
        "an in-memory database and tether-allinone always run in one.",
    ),
    cfg.IntOpt(
        "api_processes",
        default=1,
        min=1,
        max=64,
        help="Processes serving the REST API on its one socket, beside the pipeline's, when "
        "separate_pipeline is true. More use more cores for HTTP; each holds its own "
        "database connections, and [api] rate_limit and rate_burst are shared out among them.",
    ),
]


class Core:
    """What the API and the pipeline share: options, database, broker, agents."""

    def __init__(self, conf: cfg.ConfigOpts, migrate: bool = False) -> None:
        self.conf = conf
        self.registry = Registry.load()
        self.broker = transport.Broker(conf)
        self.engine = session.make_engine(conf)
        self.read_engine = (
            self.engine if _in_memory(self.engine) else session.make_engine(conf, readonly=True)
        )
        if migrate:
            migration.upgrade(self.engine)
        else:
            # Read on the reader: a writer holding the database (a long migration,
            # an administrator's session) must not stop a plugin from starting.
            check_schema(conf, self.read_engine)
        self.sessionmaker = session.make_sessionmaker(self.engine)
        self.reader = session.make_sessionmaker(self.read_engine)
        self.agents = registry.AgentRegistry(conf.plugin.agent_down_time)
        self.providers = Providers(conf.plugin.providers, self.agents, self.reader)
        self.scheduler = Placement(self.providers, self.agents)
        self.policy = dataclasses.replace(lifecycle.Policy.from_conf(conf), router=self.scheduler.route)
        # Every process counts the tasks it finishes and wakes its own waiters.
        self.waiters = waiters.Waiters()
        self.waiters.install(self.sessionmaker)
        #: whether finished tasks reach the other plugin processes by NOTIFY
        self.notifies_finished = self.engine.dialect.name == "postgresql"
        if self.notifies_finished:
            waiters.send_finished(self.sessionmaker)
        self.notifications = Notifications(conf)
        self.notifications.install(self.sessionmaker)

    def dispose(self) -> None:
        self.notifications.stop()
        self.engine.dispose()
        self.read_engine.dispose()


class Plugin(Core):
    """The API, with the pipeline in this process unless ``to_pipeline``
    links it to one in another."""

    def __init__(
        self, conf: cfg.ConfigOpts, migrate: bool = False, to_pipeline: link.Link | None = None
    ) -> None:
        super().__init__(conf, migrate)
        self.pipeline: Pipeline | None = None
        self._link = to_pipeline
        self._pipeline_status = link.PipelineStatus()
        if to_pipeline is None:
            self.pipeline = Pipeline(self)
            wake_relay = self.pipeline.relay.wake
            hand_over = self.pipeline.relay.hand
            pipeline_problem = self.pipeline.problem
        else:
            self.agents.listening_since = self._pipeline_status.listening_since
            wake_relay = to_pipeline.wake_relay
            hand_over = to_pipeline.hand_over
            pipeline_problem = self._pipeline_status.problem
        # Replicas on PostgreSQL share the outbox: whichever relay locks a
        # row first publishes it.
        hands_over = self.engine.dialect.name == "sqlite"
        if hands_over:
            handoff.install(self.sessionmaker, hand_over)
        self.writer = GroupCommit(self.sessionmaker, conf.api.group_commit_size, conf.api.group_commit_wait)
        self.changes = Changes(
            self.registry,
            self.providers,
            self.writer,
            self.policy,
            busy_policy=conf.api.busy_policy,
            max_queued=conf.api.max_queued_per_tree,
            backpressure=throttle.Backpressure(conf.api.max_backlog),
            on_commit=wake_relay,
            hands_over=hands_over,
            capabilities=ProviderCapabilities(self.agents, self.reader),
            checks=AcceptChecks.load(conf, self.registry),
        )
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
            waiters=self.waiters,
            limiter=_rate_limiter(conf, shared_by=1 if to_pipeline is None else conf.plugin.api_processes),
            check_callback=lambda url: callbacks.check_url(conf, url),
            auth=auth.from_conf(conf),
            policy=AccessPolicy(conf, self.registry.values()),
            broker=self.broker,
            wake_relay=wake_relay,
        )
        self.listener: waiters.FinishedListener | None = None
        if self.notifies_finished:
            self.listener = waiters.FinishedListener(self.engine, self.waiters)
        self.app = create_app(self.api, pipeline_problem)

    def start(self) -> None:
        if self.pipeline is not None:
            self.pipeline.start()
        if self._link is not None:
            self._link.start(
                {
                    link.FINISHED: self._heard_finished,
                    link.LOST: lambda _body: self.waiters.wake_all(),
                    link.STATUS: self._pipeline_status.heard,
                }
            )
        if self.listener is not None:
            self.listener.start()
        LOG.info(
            "plugin on %s: providers %s; resource types %s; database %s; broker %s; %s",
            self.conf.host,
            ", ".join(self.providers.names),
            ", ".join(self.registry),
            self.engine.url.render_as_string(hide_password=True),
            self.broker.url.masked,
            "pipeline in this process" if self.pipeline is not None else "pipeline in its own process",
        )

    def _heard_finished(self, body: bytes) -> None:
        for task_id in body.decode().split(","):
            self.waiters.notify(task_id)

    def serve(self, listening: socket.socket | None = None) -> None:
        """Serve the API until SIGINT or SIGTERM, on ``listening`` if given
        (bound by the parent of several API processes)."""
        config = uvicorn.Config(
            self.app,
            host=self.conf.api.bind_host,
            port=self.conf.api.bind_port,
            log_config=None,
            access_log=False,
            lifespan="on",
        )
        host, port = (listening.getsockname()[:2]) if listening else (config.host, config.port)
        LOG.info("API listening on http://%s:%d/v1", host, port)
        # uvicorn takes SIGINT and SIGTERM only; SIGHUP is the operator's
        # "read your credentials again".
        signal.signal(signal.SIGHUP, lambda *_: self.api.auth.reload())
        stopping = [self.waiters.close, self.app.state.console_events.close]
        _Server(config, stopping).run(sockets=None if listening is None else [listening])

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.stop()
        if self._link is not None:
            self._link.stop()
        if self.pipeline is not None:
            self.pipeline.stop()
        self.writer.stop()
        self.dispose()
        LOG.info("plugin stopped")


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the answers that would never end by
    themselves when told to stop: its graceful shutdown waits for every one,
    and a long poll (``?wait=``) or a console page's event stream would hold
    it up for a minute or for ever."""

    def __init__(self, config: uvicorn.Config, stopping: list[Callable[[], None]]) -> None:
        super().__init__(config)
        self._stopping = stopping

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for stop in self._stopping:
            stop()
        super().handle_exit(sig, frame)


def _rate_limiter(conf: cfg.ConfigOpts, shared_by: int) -> throttle.RateLimiter:
    # Each API process counts for itself, and the kernel spreads a client's
    # connections among them: each allows its share.
    return throttle.RateLimiter(
        conf.api.rate_limit / shared_by, max(1, round(conf.api.rate_burst / shared_by))
    )


def check_schema(conf: cfg.ConfigOpts, engine: sa.Engine) -> None:
    """Refuse a database whose schema is not this release's."""
    if not migration.is_current(engine):
        raise ConfigError(
            reason=f"the database schema is at revision {migration.current(engine)}, "
            f"this plugin needs {migration.head()}; run "
            f"`tether-manage {_config_args(conf)}db upgrade` first."
        )


def _in_memory(engine: sa.Engine) -> bool:
    # An in-memory SQLite database exists only on its one connection.
    return engine.url.get_backend_name() == "sqlite" and engine.url.database in (None, "", ":memory:")


def _config_args(conf: cfg.ConfigOpts) -> str:
    return "".join(f"--config-file {f} " for f in conf.config_file)
