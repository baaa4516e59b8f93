"""Deciding claims, a batch per transaction, whichever way they came.

Agents of this release claim over kombu (:mod:`tether.plugin.tasks.claim_server`),
agents of the previous one over oslo.messaging (:mod:`tether.plugin.agents.endpoint`);
both hand their claims here, and each claim's transition is
:func:`tether.plugin.tasks.lifecycle.decide_claim`'s.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import orm

from tether.common import log
from tether.common.claims import Claim, ClaimAnswer
from tether.common.exceptions import ServiceUnavailable
from tether.plugin.agents.providers import Providers
from tether.plugin.db import attempts, queries
from tether.plugin.db import session as session_lib
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.tasks import lifecycle

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

    def decide(
        self, claims: Sequence[Claim], more: Callable[[], Sequence[Claim]] | None = None
    ) -> list[ClaimAnswer]:
        """An answer to each claim, in order.

        :param more: called once the transaction holds the write turn: claims
            that arrived meanwhile, decided with these and answered after them.

        :raises ServiceUnavailable: the database is locked or away; the
            agents claim again shortly.
        """
        if not claims:
            return []
        try:
            with self._sessionmaker.begin() as session:
                return self.decide_in(session, session_lib.with_arrived(session, claims, more))
        except DatabaseUnavailable as exc:
            raise unavailable(exc) from exc

    def decide_in(self, session: orm.Session, claims: Sequence[Claim]) -> list[ClaimAnswer]:
        """:meth:`decide` in ``session``'s transaction, which the caller commits."""
        if not claims:
            return []
        # One statement locks the batch's tasks, reading what deciding needs.
        tasks = attempts.for_claims(session, [claim.task_id for claim in claims])
        answers: list[ClaimAnswer | None] = []
        taking: list[tuple[int, lifecycle.ClaimedTask, Claim, lifecycle.ClaimDecision]] = []
        for claim in claims:
            task = tasks.get(claim.task_id)
            decision = lifecycle.decide_claim(self._policy, task, claim, self._bound_to(session, task))
            if task is not None and decision.answer is None and not decision.exhausted:
                # Two claims of one task in a batch: the first takes it, the
                # second is decided on what the first wrote.
                taking.append((len(answers), task, claim, decision))
                tasks[claim.task_id] = lifecycle.taken_by(task, claim)
            answers.append(decision.answer)
            if decision.exhausted:
                answers[-1] = self._abandon(session, claim, decision)
        taken = lifecycle.take(session, self._policy, [(t, c, d) for _, t, c, d in taking])
        for (index, *_), answer in zip(taking, taken, strict=True):
            answers[index] = answer
        attempts.delete_outbox(session, [claim.task_id for _, _, claim, _ in taking])
        return [answer for answer in answers if answer is not None]

    def _abandon(self, session: orm.Session, claim: Claim, decision: lifecycle.ClaimDecision) -> ClaimAnswer:
        """The attempt a redelivery fences off was the last: the task fails."""
        task = queries.task_for_update(session, claim.task_id)
        assert task is not None and decision.abandon is not None
        with log.request_context(claim.request_id):
            lifecycle.abandon(session, self._policy, task, "AgentLost", decision.abandon)
        return ClaimAnswer(reason=f"task {task.id} failed: {task.error_message}")

    def _bound_to(self, session: orm.Session, task: Any) -> str | None:
        """The agent a host-placed task's tree is bound to."""
        if task is None or self._providers is None:
            return None
        if not self._providers.is_host_placed(task.provider, session):
            return None
        root = queries.get_resource(session, task.root_id, None)
        return None if root is None else root.agent_id


def unavailable(exc: DatabaseUnavailable) -> ServiceUnavailable:
    """What claims are answered during a database outage: claim again shortly."""
    LOG.warning("claims met a database outage: %s", exc.detail)
    return ServiceUnavailable(reason="the plugin's database is unavailable; claim again shortly")
