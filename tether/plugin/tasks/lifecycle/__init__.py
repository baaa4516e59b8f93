"""The task state machine: every transition of a task, in one place.

Every path that moves a task (the API accepting a change, a claim, a
result, a cancel, the reaper) calls these functions inside its own
transaction; the claim server, the RPC endpoint, the result consumer and the
API only translate what they receive into these calls:

=================================================  ===========================  =============
transition                                         function                     written as
=================================================  ===========================  =============
QUEUED → PENDING, with its outbox row              ``enqueue``, ``advance``     ORM
a new root, straight to PENDING                    ``roots.build``              plain rows
PENDING → RUNNING; RUNNING taken over (fencing)    ``decide_claim``, ``take``   set-based
RUNNING → SUCCEEDED, nothing else to decide        ``settle_simply``            set-based
any other result                                   ``record_result``            ORM
RUNNING → PENDING or FAILED (agent lost, late)     ``abandon``, ``retry_or_fail``  ORM
→ CANCELLED, → SUPERSEDED                          ``finish_cancelled``,        ORM
                                                   ``supersede``,
                                                   ``fold_into_delete``
a step of a stepped operation (stays RUNNING)      ``steps.plan``,              ORM
                                                   ``steps.record``
=================================================  ===========================  =============

The rules:

* a task is dispatched by writing an outbox row (never by publishing
  directly), so dispatch commits or rolls back with the state change;
* a claim makes a PENDING task RUNNING on one agent with the next attempt
  number; a redelivered claim of a RUNNING task fences the attempt it
  replaces off (guarantee 4), unless the copy was published for an older
  attempt than the one running;
* a result is kept in the task's history always, and applied only when its
  attempt is the current one of a RUNNING task (fencing);
* a retry is a new dispatch after a capped exponential backoff with jitter,
  up to ``max_attempts`` claims; then the task fails with the last reason,
  stated as "attempt N of M";
* a task that finishes moves its resource: ACTIVE (or gone, after a delete)
  on success, ERROR with ``last_error`` on failure, and dispatches the next
  task queued on its tree; a cascade delete moves every resource under its
  target the same way (:mod:`tether.plugin.tasks.lifecycle.cascade_records`).

The set-based writes (:mod:`tether.plugin.db.attempts`) carry the fencing in
their ``WHERE``: a write decided on a stale read matches no row, and the
batch fails rather than overwrite anything.
"""

from __future__ import annotations

from tether.plugin.tasks.lifecycle.cascade_records import mark_deleting, subtree
from tether.plugin.tasks.lifecycle.claiming import (
    ClaimDecision,
    ClaimedTask,
    decide_claim,
    progress,
    take,
    taken_by,
)
from tether.plugin.tasks.lifecycle.finished import FINISHED, FINISHED_METRICS
from tether.plugin.tasks.lifecycle.reapplying import reapply
from tether.plugin.tasks.lifecycle.retries import OPTS, Policy
from tether.plugin.tasks.lifecycle.settling import settle_simply
from tether.plugin.tasks.lifecycle.transitions import (
    abandon,
    advance,
    apply_statuses,
    enqueue,
    fail,
    finish_cancelled,
    fold_into_delete,
    new_task,
    record_result,
    retry_or_fail,
    succeed,
    supersede,
)

__all__ = [
    "FINISHED",
    "FINISHED_METRICS",
    "OPTS",
    "ClaimDecision",
    "ClaimedTask",
    "Policy",
    "abandon",
    "advance",
    "apply_statuses",
    "decide_claim",
    "enqueue",
    "fail",
    "finish_cancelled",
    "fold_into_delete",
    "mark_deleting",
    "new_task",
    "progress",
    "reapply",
    "record_result",
    "retry_or_fail",
    "settle_simply",
    "subtree",
    "succeed",
    "supersede",
    "take",
    "taken_by",
]
