"""The plugin's pipeline: everything between an accepted change and its
recorded result that is not the API.

The outbox relay publishes committed work, the claim server and the RPC
server answer agents, the result consumer records what they did (the two
on one thread and connection, :mod:`tether.plugin.tasks.agent_traffic`), the reaper
retries what they left, and callbacks go out; on SQLite a checkpointer
copies the write-ahead log back into the database beside the writers
(:mod:`tether.plugin.db.checkpoints`). It runs in the API's process
(the all-in-one, tests) or in one of its own beside it
(:mod:`tether.plugin.processes`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tether.common import rpc
from tether.plugin import link
from tether.plugin.agents import unserved
from tether.plugin.agents.endpoint import PluginEndpoint
from tether.plugin.agents.standby_endpoint import StandbyEndpoint
from tether.plugin.api import views
from tether.plugin.db import checkpoints
from tether.plugin.outbound import callbacks
from tether.plugin.tasks import dispatch, handoff, reaper, results
from tether.plugin.tasks.agent_traffic import AgentTraffic
from tether.plugin.tasks.claim_decider import ClaimDecider
from tether.plugin.tasks.claim_server import ClaimServer

if TYPE_CHECKING:
    from tether.plugin.service import Core

LOG = logging.getLogger(__name__)


class Pipeline:
    def __init__(self, core: Core) -> None:
        conf = core.conf
        self.core = core
        self.relay = dispatch.OutboxRelay(
            core.broker,
            core.sessionmaker,
            core.reader,
            core.providers.names,
            conf.plugin.relay_batch_size,
            conf.plugin.relay_interval,
        )
        self.results = results.ResultConsumer(
            core.broker,
            results.ResultRecorder(core.sessionmaker, core.policy),
            conf.plugin.result_batch_size,
        )
        self.endpoint = PluginEndpoint(core.sessionmaker, core.policy, core.agents, core.providers)
        self.standby_endpoint = StandbyEndpoint(core.sessionmaker)
        self.claims = ClaimServer(
            core.broker,
            ClaimDecider(core.sessionmaker, core.policy, core.providers),
            conf.plugin.claim_batch_size,
        )
        # Claims and results share a thread, a connection and, on SQLite, each tick's transaction.
        self.traffic = AgentTraffic(
            core.broker,
            core.sessionmaker,
            self.claims,
            self.results,
            shared=core.engine.dialect.name == "sqlite",
        )
        self.reaper = reaper.Reaper(
            core.sessionmaker,
            core.policy,
            core.agents,
            conf.plugin.reaper_interval,
            scheduler=core.scheduler,
            reschedule=conf.plugin.reschedule_on_agent_death,
            queue_depths=core.broker.work_queue_depths,
            providers=core.providers.names,
        )
        self.callbacks = callbacks.Deliverer(conf, core.sessionmaker, lambda session, task: views.task(task))
        database = checkpoints.database_file(core.engine)
        self.checkpointer = None if database is None else checkpoints.Checkpointer(database)
        # Reports arrive over the broker the result consumer listens on:
        # while it is cut off, an agent's silence proves nothing.
        core.agents.listening_since = lambda: self.traffic.connected_since
        self._rpc_server: Any = None
        self._links: list[link.Link] = []

    def problem(self) -> str | None:
        """What keeps the pipeline from the broker, for ``/readyz``."""
        down = [loop.name for loop in (self.relay, self.traffic) if not loop.connected.is_set()]
        if down:
            return f"not connected to the broker at {self.core.broker.url.masked}: {', '.join(down)}"
        return None

    def link_to_apis(self, to_apis: list[link.Link]) -> None:
        """Serve API processes: wake the relay or take rows when one says so,
        tell each which tasks finished and how the pipeline is."""
        self._links = to_apis
        # On PostgreSQL, NOTIFY carries finished tasks to every process already.
        if not self.core.notifies_finished:

            def forward(task_ids: list[str]) -> None:
                for to_api in to_apis:
                    to_api.send_finished(task_ids)

            self.core.waiters.forward = forward
        for to_api in to_apis:

            def report(to_api: link.Link = to_api) -> None:
                to_api.send(link.STATUS, link.status(self.problem(), self.traffic.connected_since))

            to_api.start(
                {
                    link.RELAY: lambda _body: self.relay.wake(),
                    link.HANDOFF: lambda body: self.relay.hand(handoff.decode(body)),
                },
                every=(link.STATUS_INTERVAL, report),
            )

    def start(self) -> None:
        conf = self.core.conf
        self._rpc_server = rpc.get_server(
            rpc.get_transport(conf), conf.host, [self.endpoint, self.standby_endpoint]
        )
        self._rpc_server.start()
        self.relay.start()
        self.traffic.start()
        self.reaper.start()
        if self.checkpointer is not None:
            self.checkpointer.start()
        unserved.warn_unserved(conf, conf.plugin.providers)
        if conf.callbacks.secret:  # without one no callback can have been accepted
            self.callbacks.start()

    def stop(self) -> None:
        """Stop taking calls, then drain: the relay publishes what is committed,
        claims held are answered and results held recorded."""
        if self._rpc_server is not None:
            self._rpc_server.stop()
            self._rpc_server.wait()
        self.reaper.stop()
        self.callbacks.stop()
        self.relay.stop()
        self.traffic.stop()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        for to_api in self._links:
            to_api.stop()
