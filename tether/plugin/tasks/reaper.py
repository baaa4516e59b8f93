"""The reaper (DESIGN.md guarantee 5: nothing is stuck).

Every non-terminal task carries a deadline. Each pass of the reaper:

1. declares dead the agents whose reports stopped, promotes the standbys of
   the roots they were active for (:mod:`tether.plugin.agents.standby_pairs`), replaces
   those they stood by for, and retries (or fails) the tasks they were
   running;
2. takes the tasks past their deadline and retries them or fails them with
   a reason a person can act on: no live agent serves the provider, the
   agent reported no result in time. A published task that is unclaimed
   past its deadline is published again only when its work queue is empty:
   behind queued messages it is still waiting its turn (the broker keeps a
   confirmed message until it is consumed), and publishing it again would
   only pile duplicates onto a deep queue.

Rows are taken with ``FOR UPDATE SKIP LOCKED``, so several plugin processes
can run reapers against one database without doing the same work twice.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable, Sequence

from oslo_config import cfg
from sqlalchemy import orm

from tether.common.periodic import Periodic
from tether.common.states import OperatingStatus, TaskState
from tether.plugin.agents import standby_pairs
from tether.plugin.agents.placement import Placement
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.api import idempotency
from tether.plugin.db import agent_queries, queries
from tether.plugin.db.exceptions import DatabaseError
from tether.plugin.db.models import ResourceRecord, Task, utcnow
from tether.plugin.outbound import notifications
from tether.plugin.tasks import lifecycle

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.BoolOpt(
        "reschedule_on_agent_death",
        default=True,
        help="When an agent of a host-placed provider is declared dead, bind its root resources "
        "to live agents and apply them there in full.",
    ),
    cfg.FloatOpt("reaper_interval", default=1.0, min=0.1, help="Seconds between passes of the reaper."),
]

_BATCH = 500
#: Seconds after this reaper first sees a shared provider declared (or
#: starts) during which it looks for that provider's tasks accepted while
#: it was not: long enough for every API process's view of the agents
#: (a second old at most) to have caught up. Looking every pass would read
#: the provider's whole PENDING backlog once a second; a straggler after
#: the window is published again at its deadline like any unclaimed task.
SHARED_SWEEP = 10.0


class Reaper(Periodic):
    name = "reaper"
    outages = (DatabaseError,)

    def __init__(
        self,
        sessionmaker: orm.sessionmaker[orm.Session],
        policy: lifecycle.Policy,
        agents: AgentRegistry,
        interval: float,
        scheduler: Placement | None = None,
        reschedule: bool = True,
        queue_depths: Callable[[Sequence[str]], dict[str, int | None]] | None = None,
        providers: Sequence[str] = (),
    ) -> None:
        super().__init__(interval)
        self.providers = list(providers)
        #: since when (monotonic) each provider with waiting tasks has had no
        #: live agent, and whether that was said
        self._orphaned: dict[str, tuple[float, bool]] = {}
        self.sessionmaker = sessionmaker
        self.policy = policy
        self.agents = agents
        self.scheduler = scheduler
        self.reschedule = reschedule
        self.queue_depths = queue_depths
        #: this pass's answers of queue_depths, by routing key
        self._depths: dict[str, int | None] = {}
        #: the live agents of host-placed providers when standbys were last filled
        self._live: frozenset[str] | None = None
        #: since when (monotonic) each shared provider has been seen declared
        self._shared_since: dict[str, float] = {}

    def tick(self) -> int:
        return self.reap()

    def reap(self) -> int:
        """One pass; how many tasks it moved."""
        moved = self._bury_dead_agents() + self._unstick_trees() + self._dispatch_waiting()
        self._watch_providers()
        self._fill_standbys()
        with self.sessionmaker.begin() as session:
            idempotency.purge_expired(session)
        self._depths = {}
        while True:
            with self.sessionmaker.begin() as session:
                tasks = agent_queries.overdue(session, utcnow(), _BATCH)
                # Trees another transaction holds are busy, not stuck: the
                # next pass looks again. Skipping them, not waiting, means the
                # reaper (task first, then tree) cannot deadlock with the API
                # and the recorder (tree first).
                trees = queries.lock_trees(session, {task.root_id for task in tasks}, skip_locked=True)
                taken = [task for task in tasks if task.root_id in trees]
                for task in taken:
                    self._overdue(session, task)
            moved += len(taken)
            if len(tasks) < _BATCH or not taken:
                return moved

    def _watch_providers(self) -> None:
        """Say once when a provider's tasks wait and no live agent has served
        it for ``agent_down_time``, and when one serves it again."""
        now = time.monotonic()
        with self.sessionmaker.begin() as session:
            for provider in self.providers:
                if self.agents.live_for(session, provider) or not agent_queries.has_pending(
                    session, provider
                ):
                    if self._orphaned.pop(provider, (0.0, False))[1]:
                        LOG.info("provider %s has a live agent again", provider)
                    continue
                since, said = self._orphaned.setdefault(provider, (now, False))
                if not said and now - since >= self.agents.down_time.total_seconds():
                    self._orphaned[provider] = (since, True)
                    LOG.warning(
                        "provider %s has tasks waiting and no live agent has served it for %.0f s: start or "
                        "enable an agent with %s in [agent] providers; its waiting tasks fail with "
                        "NoLiveAgent once pending_timeout (%.0f s) passes",
                        provider,
                        now - since,
                        provider,
                        self.policy.pending_timeout,
                    )

    def _bury_dead_agents(self) -> int:
        moved = 0
        with self.sessionmaker.begin() as session:
            for agent in list(self.agents.declare_dead(session)):
                # First, so that the tasks abandoned below go to the promoted agent.
                moved += self._promote(session, agent.id)
                standby_pairs.replace(session, agent.id, self.agents)
                for task in agent_queries.running_on(session, agent.id):
                    lifecycle.abandon(
                        session,
                        self.policy,
                        task,
                        "AgentLost",
                        f"agent {agent.id} died during attempt {task.attempt}",
                    )
                    moved += 1
                _offline(session, agent.id, agent.host)
                if self.scheduler is not None and self.reschedule:
                    moved += self._reschedule(session, agent.id)
        return moved

    def _promote(self, session: orm.Session, dead: str) -> int:
        """The roots of a dead agent that have a live standby move to it at
        once, whether or not ``reschedule_on_agent_death``: their device has
        moved the traffic there already. Applied again in full only where
        the standby was not in step."""
        promoted = standby_pairs.promote(session, dead, self.agents)
        for root, in_step in promoted:
            notifications.failed_over(session, root, dead, in_step)
            self._reroute(session, root, dead)
            if not in_step:
                lifecycle.reapply(
                    session, self.policy, root, f"agent {dead} died; standby {root.agent_id} promoted"
                )
        return len(promoted)

    def _fill_standbys(self) -> int:
        """Roots that want a standby and have none get one when the live
        agents change (one has come, or come back)."""
        if self.scheduler is None:
            return 0
        providers = self.scheduler.providers
        with self.sessionmaker.begin() as session:
            placed = [p for p in providers.names if providers.is_host_placed(p, session)]
            live = frozenset(a.id for p in placed for a in self.agents.live_for(session, p))
            if live == self._live:
                return 0
            self._live = live
            return standby_pairs.fill(session, placed, self.agents, live)

    def _reschedule(self, session: orm.Session, dead: str) -> int:
        """Move the roots bound to a dead agent to live ones and apply them there in full."""
        assert self.scheduler is not None
        roots = agent_queries.bound_to(session, dead)
        for root in roots:
            queries.lock_root(session, root.id)
            if self.scheduler.bind(session, root, exclude=dead) is None:
                LOG.error(
                    "%s %s cannot move off dead agent %s: no other live agent serves %s",
                    root.type,
                    root.id,
                    dead,
                    root.provider,
                )
                continue
            self._reroute(session, root, dead)
            lifecycle.reapply(session, self.policy, root, f"agent {dead} died; moved to {root.agent_id}")
        return len(roots)

    def _reroute(self, session: orm.Session, root: ResourceRecord, dead: str) -> None:
        """Publish again, to the queue of ``root``'s new agent, its tasks that
        were published (or are about to be) to the dead agent's queue.

        Nobody but the dead agent consumes that queue: left there, such a task
        (a change accepted after the agent went silent but before it was
        declared dead) would hold up its tree, the re-apply queued behind it
        included, until its ``pending_timeout``, or run on the dead agent's
        host, no longer the root's, if that agent came back first.
        """

        def published(task: Task) -> bool:
            # RUNNING ones were abandoned above; unpublished ones wait for any agent.
            return task.state == TaskState.PENDING and task.pending_at is not None

        for task in queries.still_locked(session, queries.in_flight_tasks(session, root.id), published):
            resource = queries.get_resource(session, task.resource_id, None)
            if resource is None:
                continue
            queries.delete_outbox_of(session, task.id)
            lifecycle.enqueue(session, self.policy, task, resource)
            LOG.warning(
                "task %s was published to dead agent %s; published again for agent %s",
                task.id,
                dead,
                root.agent_id,
            )

    def _queued_before(self, session: orm.Session, task: Task) -> int:
        """Messages waiting in the queue ``task`` was published to; 0 when it
        is empty or cannot be asked."""
        if self.queue_depths is None:
            return 0
        key: str | None = task.provider
        if self.scheduler is not None and self.scheduler.providers.is_host_placed(task.provider, session):
            root = queries.get_resource(session, task.root_id, None)
            key = f"{task.provider}.{root.agent_id}" if root is not None and root.agent_id else None
        if key is None:
            return 0
        if key not in self._depths:
            self._depths |= self.queue_depths([key])
        return self._depths.get(key) or 0

    def _dispatch_waiting(self) -> int:
        # Host-placed tasks that found no live agent wait undispatched, as do
        # those of a provider no agent had declared yet; one may be here now.
        if self.scheduler is None:
            return 0
        with self.sessionmaker.begin() as session:
            providers = self.scheduler.providers
            waiting = agent_queries.undispatched(session, self._waiting_for_dispatch(session))
            for task in waiting:
                resource = queries.get_resource(session, task.resource_id, None)
                if resource is not None and (
                    providers.is_shared(task.provider, session)
                    or self.agents.live_for(session, task.provider)
                ):
                    lifecycle.enqueue(session, self.policy, task, resource)
            return len(waiting)

    def _waiting_for_dispatch(self, session: orm.Session) -> list[str]:
        """The providers whose undispatched tasks may go now: host-placed
        ones, and shared ones within :data:`SHARED_SWEEP` of being declared.
        A provider still undeclared is left alone: enqueueing would only
        push its tasks' deadlines on, and they must fail at them."""
        assert self.scheduler is not None
        providers = self.scheduler.providers
        now = time.monotonic()
        found = []
        for name in providers.names:
            placement = providers.placement(name, session)
            if placement == "shared":
                if now - self._shared_since.setdefault(name, now) > SHARED_SWEEP:
                    continue
            elif placement is None:
                self._shared_since.pop(name, None)
                continue
            found.append(name)
        return found

    def _unstick_trees(self) -> int:
        # A tree with queued changes and none in the works would wait for
        # ever; dispatching the next is normally done as the last finishes.
        with self.sessionmaker.begin() as session:
            # advance() reads the tree again once it is held: another
            # plugin may have dispatched its next task in the meantime.
            roots = queries.lock_trees(
                session, agent_queries.idle_trees_with_queue(session), skip_locked=True
            )
            return sum(lifecycle.advance(session, self.policy, root) is not None for root in sorted(roots))

    def _overdue(self, session: orm.Session, task: Task) -> None:
        now = utcnow()
        if task.state == TaskState.RUNNING:
            waited = (now - (task.running_at or now)).total_seconds()
            lifecycle.abandon(
                session,
                self.policy,
                task,
                "ResultTimeout",
                f"agent {task.agent_id} reported no result within {waited:.0f} s "
                f"of claiming attempt {task.attempt}",
            )
            return
        live = self.agents.live_for(session, task.provider)
        if not live:
            lifecycle.fail(
                session,
                self.policy,
                task,
                "NoLiveAgent",
                f"no live agent serves provider {task.provider}; start an agent with "
                f"`[agent] providers` including {task.provider}, then retry the request",
            )
            return
        if self.scheduler is not None and self.scheduler.providers.placement(task.provider, session) is None:
            lifecycle.fail(
                session,
                self.policy,
                task,
                "NoLiveAgent",
                f"no agent serving provider {task.provider} has declared its driver's placement "
                "(agents of an older release declare none): upgrade an agent of "
                f"{task.provider}, then retry the request",
            )
            return
        extend = datetime.timedelta(seconds=self.policy.pending_timeout)
        if queries.has_outbox(session, task.id):
            # Still waiting to be published (the broker is unreachable); the
            # relay will get to it.
            task.deadline = now + extend
            return
        resource = queries.get_resource(session, task.resource_id, None)
        if resource is None:
            lifecycle.fail(
                session, self.policy, task, "ResourceGone", "the resource disappeared before the task ran"
            )
            return
        waiting = self._queued_before(session, task)
        if waiting:
            # A deep queue, not a lost message: the broker holds confirmed
            # messages until they are consumed. Publishing again would only
            # add duplicates behind it; look again once it has drained.
            task.deadline = now + extend
            LOG.info(
                "task %s unclaimed for %.0f s behind %d queued messages; waiting on",
                task.id,
                (now - (task.pending_at or now)).total_seconds(),
                waiting,
            )
            return
        LOG.warning(
            "task %s unclaimed for %.0f s with %d live agent(s) serving %s; publishing it again",
            task.id,
            (now - (task.pending_at or now)).total_seconds(),
            len(live),
            task.provider,
        )
        lifecycle.enqueue(session, self.policy, task, resource)


def _offline(session: orm.Session, dead: str, host: str) -> None:
    """The trees a dead agent held go OFFLINE at once: nothing can say what
    its host serves now, and ONLINE from its last report would be a claim
    nobody backs. The agent that applies a tree next (this one come back,
    or the one it moves to) reports its status again."""
    reason = f"agent {dead} on host {host} was declared dead"
    for root in agent_queries.bound_to(session, dead):
        for resource in queries.tree(session, root.id):
            if resource.operating_status != OperatingStatus.OFFLINE:
                resource.operating_status = OperatingStatus.OFFLINE
                notifications.resource_offline(session, resource, reason)
        LOG.warning("%s %s and what it holds are OFFLINE: %s", root.type, root.id, reason)
