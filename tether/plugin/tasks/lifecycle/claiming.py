"""Claims: PENDING → RUNNING, a RUNNING task taken over from a dead agent,
and the progress of a long operation.

A claim is decided on the task's locked row (:func:`decide_claim`, a pure
decision) and written set-based with the claims of its batch (:func:`take`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import orm

from tether.common import metrics
from tether.common.claims import Claim, ClaimAnswer
from tether.common.states import TaskState
from tether.plugin.db import attempts
from tether.plugin.db import session as session_lib
from tether.plugin.db.models import Task, utcnow
from tether.plugin.outbound import notifications
from tether.plugin.tasks.lifecycle.retries import Policy

LOG = logging.getLogger(__name__)


class ClaimedTask(Protocol):
    """What deciding a claim reads of a task (:data:`tether.plugin.db.attempts.CLAIM_COLUMNS`)."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def claim_id(self) -> str | None: ...
    @property
    def claimed_for(self) -> int | None: ...
    @property
    def agent_id(self) -> str | None: ...
    @property
    def provider(self) -> str: ...


@dataclasses.dataclass(frozen=True)
class ClaimDecision:
    """What a claim does: answer without a change, or take the task."""

    #: the answer when the claim changes nothing; None when it takes the task
    answer: ClaimAnswer | None = None
    #: why the attempt the claim replaces is over (its agent died)
    abandon: str | None = None
    #: that attempt was the last one: the task fails instead of being taken
    exhausted: bool = False


def decide_claim(
    policy: Policy, task: ClaimedTask | None, request: Claim, bound_to: str | None
) -> ClaimDecision:
    """Decide one claim of ``task`` (read under its lock; None when there is no such task).

    :param bound_to: the agent a host-placed task's tree is bound to, if any.
    """
    if task is None:
        # Flagged, not only said: the agent dead-letters such a message.
        return _skip(ClaimAnswer(reason=f"task {request.task_id} does not exist", unknown=True))
    state = TaskState(task.state)
    if state.terminal:
        return _skip(ClaimAnswer(reason=f"task {task.id} is already {state}"))
    if state == TaskState.RUNNING and task.claim_id == request.claim_id:
        return _skip(_run(policy, task.attempt))
    if state == TaskState.QUEUED:
        return _skip(ClaimAnswer(reason=f"task {task.id} is queued behind another task on its tree"))
    if bound_to is not None and bound_to != request.agent_id:
        # A copy left in the queue of an agent its tree has moved away from
        # (it was cut off, declared dead, and is back): the work belongs to
        # the new host, and its holder is not dead.
        return _skip(
            ClaimAnswer(reason=f"task {task.id} belongs to agent {bound_to}, where its resource moved")
        )
    if state != TaskState.RUNNING:
        return ClaimDecision()
    if not request.redelivered:
        # A second copy (a republish); the first one is being worked on.
        return _skip(ClaimAnswer(reason=f"task {task.id} is running on agent {task.agent_id}"))
    published_for = request.published_for
    if None not in (published_for, task.claimed_for) and published_for != task.claimed_for:
        # The redelivered copy is an older attempt's message, held by an
        # agent that was declared dead before its broker connection closed;
        # the current holder's is not back.
        return _skip(
            ClaimAnswer(
                reason=f"task {task.id} is running on agent {task.agent_id} (attempt {task.attempt}); "
                f"this copy was published for attempt {published_for}"
            )
        )
    # The holder's delivery came back to the queue: its connection (and most
    # likely the agent) died. Fence its attempt off.
    reason = f"agent {task.agent_id} died during attempt {task.attempt}"
    return ClaimDecision(abandon=reason, exhausted=task.attempt >= policy.max_attempts)


def take(
    session: orm.Session, policy: Policy, taken: Sequence[tuple[ClaimedTask, Claim, ClaimDecision]]
) -> list[ClaimAnswer]:
    """PENDING (or RUNNING on a dead agent) → RUNNING for the claims that take
    their task, in set-based statements; the answer to each, in order."""
    now = utcnow()
    takes: list[dict[str, Any]] = []
    closes: list[dict[str, Any]] = []
    opens: dict[tuple[str, int], dict[str, Any]] = {}
    answers: list[ClaimAnswer] = []
    for task, request, decision in taken:
        attempt = task.attempt + 1
        takes.append(
            {
                "id": task.id,
                "was_state": task.state,
                "was_attempt": task.attempt,
                "attempt": attempt,
                "agent_id": request.agent_id[:255],
                "claim_id": request.claim_id,
                "claimed_for": request.published_for,
                "running_at": now,
                "deadline": now + datetime.timedelta(seconds=request.driver_timeout + policy.result_grace),
            }
        )
        if decision.abandon is not None:
            closed = {"outcome": "ABANDONED", "error_type": "AgentLost", "error_message": decision.abandon}
            if (task.id, task.attempt) in opens:
                # Taken earlier in this batch: its history row is not written yet.
                opens[(task.id, task.attempt)] |= closed | {"finished_at": now}
            else:
                closes.append({"task_id": task.id, "attempt": task.attempt, **closed})
        opens[(task.id, attempt)] = {
            "task_id": task.id,
            "attempt": attempt,
            "agent_id": request.agent_id[:255],
            "redelivered": request.redelivered,
            "claimed_at": now,
            "outcome": None,
            "finished_at": None,
            "error_type": None,
            "error_message": None,
        }
        if request.redelivered:
            metrics.REDELIVERIES.labels(task.provider).inc()
        session_lib.log_after_commit(
            session,
            LOG,
            "task %s claimed by agent %s (attempt %d of %d%s)",
            task.id,
            request.agent_id,
            attempt,
            policy.max_attempts,
            ", redelivered" if request.redelivered else "",
            request_id=request.request_id,
        )
        answers.append(_run(policy, attempt))
    attempts.close_attempts(session, closes, now)
    attempts.take(session, takes)
    attempts.open_attempts(session, list(opens.values()))
    if session.info.get(notifications.WANTED):
        for task, request, _ in taken:
            payload = notifications.task_payload(task)  # type: ignore[arg-type]
            payload |= {
                "state": TaskState.RUNNING.value,
                "attempt": task.attempt + 1,
                "agent_id": request.agent_id,
            }
            notifications.record(session, "tether.task.running", payload)
    return answers


@dataclasses.dataclass(frozen=True)
class _Taken:
    """A task as a claim of the same batch left it, for the claims after it."""

    id: str
    attempt: int
    claim_id: str | None
    claimed_for: int | None
    agent_id: str | None
    provider: str
    state: str = TaskState.RUNNING.value


def taken_by(task: ClaimedTask, request: Claim) -> ClaimedTask:
    """``task`` once ``request`` has taken it (written by :func:`take`)."""
    return _Taken(
        task.id,
        task.attempt + 1,
        request.claim_id,
        request.published_for,
        request.agent_id[:255],
        task.provider,
    )


def _skip(answer: ClaimAnswer) -> ClaimDecision:
    return ClaimDecision(answer=answer)


def progress(policy: Policy, task: Task | None, attempt: int, message: str, expect_within: float) -> bool:
    """A long device operation of ``attempt`` goes on: show its progress, move
    its deadline. False when that attempt was fenced off: the agent drops it."""
    if task is None or task.state != TaskState.RUNNING or task.attempt != attempt:
        return False
    task.progress = message[:1000]
    task.deadline = utcnow() + datetime.timedelta(seconds=expect_within + policy.result_grace)
    return True


def _run(policy: Policy, attempt: int) -> ClaimAnswer:
    return ClaimAnswer(run=True, attempt=attempt, max_attempts=policy.max_attempts)
