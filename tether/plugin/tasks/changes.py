"""Accepting changes: validate, then record desired state and a task in one
transaction (DESIGN.md guarantee 1: accepted means durable).

One change at a time per resource tree (guarantee 6). A change to a tree
that has one in flight is queued behind it (``[api] busy_policy = queue``,
the default) or refused with 409 naming the task in flight (``reject``).
Queued changes are dispatched in order as the tree frees up, each with the
newest desired state (:func:`tether.plugin.tasks.lifecycle.advance`). A delete
supersedes the queued updates of its resource; a delete that arrives before
the resource's create was claimed by any agent finishes both with no device
work. A resource with children is deleted only with them, by a cascade
delete (:mod:`tether.plugin.tasks.lifecycle.cascade_records`), which supersedes the
waiting changes of every resource it removes.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from oslo_config import cfg
from sqlalchemy import orm

from tether.common.exceptions import Conflict, InvalidInput, NotFound
from tether.common.resource_types import Registry, ResourceType
from tether.common.states import (
    OperatingStatus,
    Operation,
    ProvisioningStatus,
    TaskState,
)
from tether.plugin.agents.provider_capabilities import ProviderCapabilities
from tether.plugin.agents.providers import Providers
from tether.plugin.context import RequestContext
from tether.plugin.db import ids, queries
from tether.plugin.db import session as session_lib
from tether.plugin.db.group_commit import GroupCommit
from tether.plugin.db.models import ResourceRecord, Row, Task, utcnow
from tether.plugin.tasks import lifecycle
from tether.plugin.tasks.accept_checks import AcceptChecks
from tether.plugin.tasks.lifecycle import roots
from tether.plugin.tasks.throttle import Backpressure

LOG = logging.getLogger(__name__)

T = TypeVar("T")

#: Called inside the accepting transaction once the change is flushed; what
#: it returns is the caller's answer (rendered there, and remembered for an
#: Idempotency-Key, because the rows are not the caller's after commit). A new
#: root's answer, which writes nothing, is rendered from its rows before its
#: transaction, with no session.
Answer = Callable[[orm.Session | None, ResourceRecord | Row, Task | Row], T]

OPTS: list[cfg.Opt] = [
    cfg.StrOpt(
        "busy_policy",
        default="queue",
        choices=[
            ("queue", "queue the change behind the one in flight; queued updates coalesce"),
            ("reject", "refuse it with 409 naming the task in flight"),
        ],
        help="What happens to a change of a resource tree (a root resource and everything "
        "under it) while another change of that tree is in flight.",
    ),
    cfg.IntOpt(
        "max_queued_per_tree",
        default=100,
        min=1,
        help="Changes that may wait behind the one in flight on one resource tree; further "
        "changes get 409 until the queue shortens.",
    ),
]


class Changes:
    """Turns API requests into committed desired state and tasks."""

    def __init__(
        self,
        registry: Registry,
        providers: Providers,
        writer: GroupCommit,
        policy: lifecycle.Policy,
        busy_policy: str = "queue",
        max_queued: int = 100,
        backpressure: Backpressure | None = None,
        on_commit: Callable[[], None] = lambda: None,
        hands_over: bool = False,
        capabilities: ProviderCapabilities | None = None,
        checks: AcceptChecks | None = None,
    ) -> None:
        """:param on_commit: wakes the relay after a change committed.
        :param hands_over: a new root's outbox row reaches the relay with its
            commit (:mod:`tether.plugin.tasks.handoff`): no wake-up needed.
        :param capabilities: what the providers' drivers support; a change
            none of them supports is refused before anything is written.
        :param checks: the types' references and checks with the database
            (by default the references only)."""
        self.capabilities = capabilities
        self.checks = checks or AcceptChecks(registry)
        self.backpressure = backpressure
        self.policy = policy
        self.registry = registry
        self.providers = providers
        self.writer = writer
        self.busy_policy = busy_policy
        self.max_queued = max_queued
        self._on_commit = on_commit
        self.hands_over = hands_over

    def create(
        self,
        ctx: RequestContext,
        rtype: ResourceType,
        body: Any,
        answer: Answer[T],
        answer_writes: bool = False,
    ) -> Future[T]:
        """:param answer_writes: ``answer`` writes rows of its own (an
        Idempotency-Key's), which may collide with a concurrent request's."""
        self.registry.validate(rtype, body)
        attributes = rtype.defaults() | dict(body)
        # A new root conflicts with nothing: no savepoint, and its rows go in
        # with the batch's bulk insert. A host-placed one binds an agent first;
        # one whose provider no agent has declared waits unpublished.
        if (
            rtype.parent is None
            and not answer_writes
            and self.providers.is_shared(attributes.get("provider", ""))
            and not self.checks.checks_root(rtype, attributes)
        ):
            return self._create_root(ctx, rtype, attributes, answer)
        return self._write(lambda session: self._create(session, ctx, rtype, attributes, answer))

    def update(
        self, ctx: RequestContext, rtype: ResourceType, resource_id: str, body: Any, answer: Answer[T]
    ) -> Future[T]:
        if not isinstance(body, dict):
            raise InvalidInput(reason=f"the body must be a JSON object of {rtype.name} attributes")
        if not body:
            raise InvalidInput(reason=f"the body names no {rtype.name} attribute to change")
        return self._write(lambda session: self._update(session, ctx, rtype, resource_id, body, answer))

    def delete(
        self,
        ctx: RequestContext,
        rtype: ResourceType,
        resource_id: str,
        answer: Answer[T],
        cascade: bool = False,
    ) -> Future[T]:
        """:param cascade: delete everything under the resource too, in the same task."""
        return self._write(lambda session: self._delete(session, ctx, rtype, resource_id, answer, cascade))

    def _write(
        self, unit: Callable[[orm.Session], T], savepoint: bool = True, wake: bool = True
    ) -> Future[T]:
        future = self.writer.submit(unit, savepoint)
        if wake:
            future.add_done_callback(lambda done: done.exception() or self._on_commit())
        return future

    def _create_root(
        self, ctx: RequestContext, rtype: ResourceType, attributes: dict[str, Any], answer: Answer[T]
    ) -> Future[T]:
        # Everything but the backlog check and the inserts happens here, in
        # the request's thread: the writer's thread holds the write turn.
        provider = attributes["provider"]
        self.providers.check(provider, rtype.name)
        notes = self._judge(None, provider, rtype, attributes)
        accepted = roots.build(
            self.policy, rtype.name, ctx.project_id, attributes, ctx.request_id, ctx.callback_url, notes
        )
        answered = answer(None, accepted.resource, accepted.task)

        def unit(session: orm.Session) -> T:
            self._check_backlog(session, provider)
            roots.add(session, accepted)
            _log_accepted(session, accepted.resource, accepted.task)
            return answered

        return self._write(unit, savepoint=False, wake=not self.hands_over)

    def _create(
        self,
        session: orm.Session,
        ctx: RequestContext,
        rtype: ResourceType,
        attributes: dict[str, Any],
        answer: Answer[T],
    ) -> T:
        parent = None
        if rtype.parent is not None and rtype.parent_key:
            parent_id = attributes.pop(rtype.parent_key)
            parent = self._get(session, ctx, self.registry[rtype.parent], parent_id)
            if parent.provisioning_status == ProvisioningStatus.PENDING_DELETE:
                raise Conflict(f"{parent.type} {parent.id} is being deleted.")
            provider_name = parent.provider
        else:
            provider_name = attributes["provider"]
        self.providers.check(provider_name, rtype.name)
        self._check_backlog(session, provider_name)
        resource_id = ids.new_id()
        root_id = parent.root_id if parent is not None else resource_id
        now = utcnow()
        resource = ResourceRecord(
            id=resource_id,
            type=rtype.name,
            project_id=parent.project_id if parent is not None else ctx.project_id,
            parent_id=parent.id if parent is not None else None,
            root_id=root_id,
            provider=provider_name,
            name=attributes.get("name"),
            attributes=attributes,
            provisioning_status=ProvisioningStatus.PENDING_CREATE,
            operating_status=OperatingStatus.UNKNOWN,
            generation=1,
            applied_generation=0,
            # Set here, not at the insert: the answer shows them before it.
            created_at=now,
            updated_at=now,
        )
        if parent is not None:  # a new root has no change in flight to wait behind
            self._admit(session, root_id)
        # After the root's lock: two children created at once are counted one after the other.
        notes = self._judge(session, provider_name, rtype, attributes, parent)
        session.add(resource)
        self.checks.create(session, rtype, resource, parent)
        task = self._accept(session, ctx, resource, Operation.CREATE, notes)
        session.flush()
        return answer(session, resource, task)

    def _update(
        self,
        session: orm.Session,
        ctx: RequestContext,
        rtype: ResourceType,
        resource_id: str,
        body: dict[str, Any],
        answer: Answer[T],
    ) -> T:
        resource = self._get(session, ctx, rtype, resource_id)
        if rtype.parent_key and rtype.parent_key in body and body[rtype.parent_key] != resource.parent_id:
            raise InvalidInput(
                f"{rtype.parent_key} cannot change after create; create a new {rtype.name} instead.",
                path=f"$.{rtype.parent_key}",
            )
        changes = {k: v for k, v in body.items() if k != rtype.parent_key}
        rtype.check_immutable(resource.attributes, changes)
        self._check_backlog(session, resource.provider)
        attributes = copy.deepcopy(resource.attributes) | changes
        full = attributes | ({rtype.parent_key: resource.parent_id} if rtype.parent_key else {})
        self.registry.validate(rtype, full)
        # The merged attributes: an update keeps what it does not name.
        notes = self._judge(session, resource.provider, rtype, attributes)
        self._admit(session, resource.root_id)
        if resource.provisioning_status == ProvisioningStatus.PENDING_DELETE:
            raise Conflict(f"{rtype.name} {resource.id} is being deleted.")
        self.checks.update(session, rtype, resource, changes)
        resource.attributes = attributes
        resource.name = attributes.get("name")
        resource.generation += 1
        resource.provisioning_status = ProvisioningStatus.PENDING_UPDATE
        task = self._accept(session, ctx, resource, Operation.UPDATE, notes)
        session.flush()
        return answer(session, resource, task)

    def _delete(
        self,
        session: orm.Session,
        ctx: RequestContext,
        rtype: ResourceType,
        resource_id: str,
        answer: Answer[T],
        cascade: bool,
    ) -> T:
        resource = self._get(session, ctx, rtype, resource_id)
        self._admit(session, resource.root_id)
        self._check_backlog(session, resource.provider)
        kids = queries.children(session, resource.id)
        if kids and not cascade:
            raise Conflict(
                f"{rtype.name} {resource.id} still has {_describe(kids)}; delete them first, or "
                f"delete the {rtype.name} with everything under it: DELETE "
                f"/v1/{rtype.collection}/{resource.id}?cascade=true."
            )
        if resource.provisioning_status == ProvisioningStatus.PENDING_DELETE:
            raise Conflict(f"{rtype.name} {resource.id} is already being deleted.")
        # A cascade of a resource without children is a plain delete.
        doomed = lifecycle.subtree(session, resource) if kids else [resource]
        self.checks.delete(session, rtype, doomed)
        lifecycle.mark_deleting(doomed)
        task = self._accept(session, ctx, resource, Operation.DELETE, doomed=doomed)
        session.flush()
        return answer(session, resource, task)

    def _get(
        self, session: orm.Session, ctx: RequestContext, rtype: ResourceType, resource_id: Any
    ) -> ResourceRecord:
        resource = None
        if isinstance(resource_id, str):
            resource = queries.get_resource(session, resource_id, ctx.project_filter, rtype.name)
        if resource is None:
            raise NotFound(kind=rtype.name.capitalize(), id=resource_id)
        return resource

    def _check_backlog(self, session: orm.Session, provider: str) -> None:
        if self.backpressure is not None:
            self.backpressure.check(session, provider)

    def _admit(self, session: orm.Session, root_id: str, locked: bool = True) -> None:
        """May one more change of this tree be accepted now?

        The root's row lock serialises every change of one tree on databases
        with row locks (PostgreSQL); SQLite's single writer does the same.
        """
        if locked:
            queries.lock_root(session, root_id)
        tasks = queries.in_flight_tasks(session, root_id)
        if not tasks:
            return
        if self.busy_policy == "reject":
            busy = tasks[0]
            raise Conflict(
                f"Task {busy.id} ({busy.operation} {busy.resource_type} {busy.resource_id}) is "
                f"{busy.state} on the same resource tree; retry when it has finished "
                f"(GET /v1/tasks/{busy.id}?wait=30)."
            )
        queued = [t for t in tasks if t.state == TaskState.QUEUED]
        if len(queued) >= self.max_queued:
            raise Conflict(
                f"{len(queued)} changes already wait on this resource tree (the limit is "
                f"{self.max_queued}); retry when some have finished."
            )

    def _judge(
        self,
        session: orm.Session | None,
        provider: str,
        rtype: ResourceType,
        attributes: dict[str, Any],
        parent: ResourceRecord | None = None,
    ) -> list[str]:
        """Refuse what the provider's drivers declared they cannot do; the task's notes."""
        if self.capabilities is None:
            return []
        return self.capabilities.judge(session, provider, rtype, attributes, parent)

    def _accept(
        self,
        session: orm.Session,
        ctx: RequestContext,
        resource: ResourceRecord,
        operation: Operation,
        notes: list[str] | None = None,
        doomed: Sequence[ResourceRecord] = (),
    ) -> Task:
        """:param doomed: what a delete removes: the resource, and for a
        cascade delete everything under it."""
        cascade = len(doomed) > 1
        task = lifecycle.new_task(resource, operation, ctx.request_id, ctx.callback_url, cascade)
        task.notes = notes or None
        session.add(task)
        if operation == Operation.CREATE and resource.parent_id is None:
            # A new root is its whole tree and has nothing in flight: dispatch
            # it without asking the database what it already knows.
            lifecycle.enqueue(session, self.policy, task, resource, tree=[resource])
        else:
            session.flush()
        _log_accepted(session, resource, task)
        if operation == Operation.DELETE:
            lifecycle.fold_into_delete(session, self.policy, resource, task, doomed)
        if task.state == TaskState.QUEUED:
            lifecycle.advance(session, self.policy, resource.root_id)
        return task


def _describe(kids: Sequence[ResourceRecord]) -> str:
    shown = ", ".join(f"{k.type} {k.id}" for k in kids[:5])
    more = f" and {len(kids) - 5} more" if len(kids) > 5 else ""
    return f"{len(kids)} child resource(s): {shown}{more}"


def _log_accepted(session: orm.Session, resource: ResourceRecord | Row, task: Task | Row) -> None:
    # Once committed: an accept whose commit fails was not accepted.
    session_lib.log_after_commit(
        session,
        LOG,
        "accepted %s of %s %s as task %s (generation %d, provider %s)",
        task.operation,
        resource.type,
        resource.id,
        task.id,
        task.generation,
        resource.provider,
    )
