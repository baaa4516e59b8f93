"""Deciding claims, a batch per transaction, whichever way they came.

Agents of this release claim over kombu (:mod:`tether.plugin.claim_server`),
agents of the previous one over oslo.messaging (:mod:`tether.plugin.rpc`);
both hand their claims here, and each claim's transition is
:func:`tether.plugin.lifecycle.claim`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy.exc
from sqlalchemy import orm

from tether.common import log
from tether.common.claims import Claim, ClaimAnswer
from tether.common.exceptions import ServiceUnavailable
from tether.plugin import lifecycle
from tether.plugin.db import queries
from tether.plugin.db.models import Task
from tether.plugin.providers import Providers

LOG = logging.getLogger(__name__)


class ClaimDecider:
    """PENDING → RUNNING for the agents that asked, one transaction per batch."""

    def __init__(
        self,
        sessionmaker: orm.sessionmaker[orm.Session],
        policy: lifecycle.Policy,
        providers: Providers | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        self._policy = policy
        self._providers = providers

    def decide(self, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        """An answer to each claim, in order.

        :raises ServiceUnavailable: the database is locked or away; the
            agents claim again shortly.
        """
        if not claims:
            return []
        try:
            with self._sessionmaker.begin() as session:
                # One statement locks the batch's tasks, one deletes their outbox rows.
                tasks = queries.tasks_for_update(session, [claim.task_id for claim in claims])
                answers = [self._decide(session, tasks.get(claim.task_id), claim) for claim in claims]
                # A copy the reaper put in the outbox again is moot now.
                queries.delete_outbox_of_tasks(
                    session,
                    [claim.task_id for claim, answer in zip(claims, answers, strict=True) if answer.run],
                )
                return answers
        except sqlalchemy.exc.OperationalError as exc:
            LOG.warning("claims met a database outage: %s", str(exc.orig or exc).splitlines()[0])
            raise ServiceUnavailable(
                reason="the plugin's database is unavailable; claim again shortly"
            ) from exc

    def _decide(self, session: orm.Session, task: Task | None, claim: Claim) -> ClaimAnswer:
        with log.request_context(claim.request_id):
            return lifecycle.claim(session, self._policy, task, claim, self._bound_to(session, task))

    def _bound_to(self, session: orm.Session, task: Task | None) -> str | None:
        """The agent a host-placed task's tree is bound to."""
        if task is None or self._providers is None or not self._providers.is_host_placed(task.provider):
            return None
        root = queries.get_resource(session, task.root_id, None)
        return None if root is None else root.agent_id
