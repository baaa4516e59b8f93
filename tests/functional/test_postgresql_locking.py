"""The row locks that keep the plugin's concurrent transactions apart on
PostgreSQL, where they truly run at once: the RPC server's claims, the
result consumer's batches and the replicas of each. SQLite's single writer
orders them anyway, so these tests run in the PostgreSQL pass
(``make test`` runs both).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from oslo_config import cfg
from sqlalchemy import orm

from tether.common import messages
from tether.common.exceptions import Conflict
from tether.common.resource_types import Registry
from tether.common.states import Outcome
from tether.plugin.agents.providers import Providers
from tether.plugin.agents.registry import AgentRegistry
from tether.plugin.context import RequestContext
from tether.plugin.db import exceptions as db_exceptions
from tether.plugin.db import migration, session
from tether.plugin.db.group_commit import GroupCommit
from tether.plugin.db.models import Reservation, ResourceRecord, Task, utcnow
from tether.plugin.lbaas import vips
from tether.plugin.tasks import cancellation, lifecycle
from tether.plugin.tasks.accept_checks import AcceptChecks
from tether.plugin.tasks.changes import Changes
from tether.plugin.tasks.results import ResultRecorder

from .daemons import Database

pytestmark = pytest.mark.functional


@pytest.fixture
def sessionmaker(database: Database) -> Iterator[orm.sessionmaker[orm.Session]]:
    if database.backend != "postgresql":
        pytest.skip("SQLite runs one transaction at a time: run with --database postgresql (make test does)")
    url = database.connection()
    assert url is not None
    engine = sa.create_engine(url)
    db_exceptions.install(engine)  # as the plugin's engines: the database's errors as tether's
    migration.upgrade(engine)
    yield session.make_sessionmaker(engine)
    engine.dispose()


def _task(sessionmaker: orm.sessionmaker[orm.Session], state: str = "RUNNING") -> str:
    """A loadbalancer being created: its task claimed by agent a (attempt 1),
    or published and not yet claimed (PENDING)."""
    resource_id, task_id = str(uuid.uuid4()), str(uuid.uuid4())
    with sessionmaker.begin() as db:
        db.add(
            ResourceRecord(
                id=resource_id,
                type="loadbalancer",
                project_id="p",
                root_id=resource_id,
                provider="noop",
                attributes={},
                provisioning_status="PENDING_CREATE",
                operating_status="OFFLINE",
            )
        )
        db.add(
            Task(
                id=task_id,
                resource_id=resource_id,
                resource_type="loadbalancer",
                root_id=resource_id,
                project_id="p",
                provider="noop",
                operation="create",
                generation=1,
                state=state,
                attempt=1 if state == "RUNNING" else 0,
                agent_id="a" if state == "RUNNING" else None,
                claim_id="claim-a" if state == "RUNNING" else None,
                running_at=utcnow() if state == "RUNNING" else None,
                pending_at=utcnow(),
            )
        )
    return task_id


def _noop(sessionmaker: orm.sessionmaker[orm.Session]) -> Providers:
    """Provider noop, as its agents declare it."""
    providers = Providers(["noop"], AgentRegistry(60), sessionmaker)
    types = ["healthmonitor", "listener", "loadbalancer", "member", "pool"]
    providers.assume({"noop": {"placement": "shared", "resource_types": types}})
    return providers


def _waiting_on_a_lock(sessionmaker: orm.sessionmaker[orm.Session]) -> bool:
    with sessionmaker() as db:
        query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        return bool(db.execute(sa.text(query)).scalar_one())


def _during_a_claim(
    sessionmaker: orm.sessionmaker[orm.Session], task_id: str, attempt: int, decide: Callable[[], Any]
) -> Any:
    """Run ``decide`` while agent b's claim holds ``task_id``, and let the claim
    (to ``attempt``) commit once ``decide`` waits for it; what ``decide`` returned
    or raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(decide())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    with sessionmaker.begin() as claim:
        # What a claim does in its transaction: lock the task, and only the
        # task, then mark it running for the claimant.
        claim.execute(sa.select(Task.id).where(Task.id == task_id).with_for_update())
        deciding = threading.Thread(target=run)
        deciding.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(sessionmaker):
            assert time.monotonic() < deadline, "the decision never met the claim's lock"
            assert deciding.is_alive(), f"the decision was taken while the claim held the task: {outcome}"
            time.sleep(0.01)
        claim.execute(
            sa.update(Task)
            .where(Task.id == task_id)
            .values(state="RUNNING", attempt=attempt, agent_id="b", claim_id="claim-b", running_at=utcnow())
        )
    deciding.join(10)
    assert not deciding.is_alive()
    return outcome[0]


def _state(sessionmaker: orm.sessionmaker[orm.Session], task_id: str) -> tuple[str, int, str | None]:
    with sessionmaker() as db:
        task = db.get(Task, task_id)
        assert task is not None
        return task.state, task.attempt, task.agent_id


def test_a_result_meeting_a_takeover_claim_waits_for_it_and_is_not_applied(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    # Attempt 1's result arrives while agent b's claim of the redelivered
    # message takes the task over (attempt 2). Reading the task without its
    # row lock, the recorder saw attempt 1 still current, applied the result
    # once the claim committed and overwrote the running attempt 2 (found by
    # the chaos suite on PostgreSQL).
    task_id = _task(sessionmaker)
    recorder = ResultRecorder(sessionmaker, lifecycle.Policy())
    result = messages.Result(task_id=task_id, attempt=1, outcome=Outcome.SUCCEEDED, agent_id="a")
    _during_a_claim(sessionmaker, task_id, 2, lambda: recorder.record([result]))
    assert _state(sessionmaker, task_id) == ("RUNNING", 2, "b")


def test_a_cancel_meeting_a_claim_waits_for_it_and_refuses_the_running_task(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    task_id = _task(sessionmaker, "PENDING")
    ctx = RequestContext(project_id="p")

    def cancel() -> Any:
        with sessionmaker.begin() as db:
            return cancellation.cancel(db, lifecycle.Policy(), ctx, task_id)

    refused = _during_a_claim(sessionmaker, task_id, 1, cancel)
    assert isinstance(refused, Conflict) and "is running on agent b" in str(refused), refused
    assert _state(sessionmaker, task_id) == ("RUNNING", 1, "b")


def test_a_delete_meeting_a_claim_of_the_create_waits_and_queues_behind_it(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    # A delete folds the changes before it that never reached an agent; read
    # without the task's lock, the create being claimed looked unclaimed, was
    # superseded over the claim, and the resource went while the agent built it.
    create_id = _task(sessionmaker, "PENDING")
    with sessionmaker() as db:
        create = db.get(Task, create_id)
        assert create is not None
        resource_id = create.resource_id
    registry = Registry.load()
    writer = GroupCommit(sessionmaker, 1)
    changes = Changes(registry, _noop(sessionmaker), writer, lifecycle.Policy())

    def delete() -> Any:
        answer = changes.delete(
            RequestContext(project_id="p"), registry["loadbalancer"], resource_id, lambda db, r, t: t.id
        )
        return answer.result(10)

    try:
        delete_id = _during_a_claim(sessionmaker, create_id, 1, delete)
    finally:
        writer.stop()
    assert isinstance(delete_id, str), delete_id
    assert _state(sessionmaker, create_id) == ("RUNNING", 1, "b")
    assert _state(sessionmaker, delete_id)[0] == "QUEUED"  # behind the create, for the agent to undo


def _lbaas_changes(sessionmaker: orm.sessionmaker[orm.Session]) -> tuple[Changes, GroupCommit]:
    """A replica's accept path with the load-balancing checks, [loadbalancer]
    vip_range = 10.1.0.1-10.1.0.2."""
    conf = cfg.ConfigOpts()
    conf.register_opts(vips.OPTS, group=vips.GROUP)
    conf([], default_config_files=[])
    conf.set_override("vip_range", ["10.1.0.1-10.1.0.2"], group=vips.GROUP)
    registry = Registry.load()
    writer = GroupCommit(sessionmaker, 1)
    checks = AcceptChecks.load(conf, registry)
    return Changes(registry, _noop(sessionmaker), writer, lifecycle.Policy(), checks=checks), writer


def _held_by_another_replica(
    sessionmaker: orm.sessionmaker[orm.Session], key: str, commit: bool, decide: Callable[[], Any]
) -> Any:
    """Run ``decide`` while another transaction holds ``key`` uncommitted;
    commit or roll that back once ``decide`` waits for it."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(decide())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    holder = _lb(sessionmaker, None)
    with sessionmaker() as other:
        other.execute(sa.insert(Reservation).values(key=key, resource_id=holder, created_at=utcnow()))
        deciding = threading.Thread(target=run)
        deciding.start()
        deadline = time.monotonic() + 10
        while not _waiting_on_a_lock(sessionmaker):
            assert time.monotonic() < deadline, "the accept never met the other transaction's reservation"
            assert deciding.is_alive(), f"the accept finished while the key was held: {outcome}"
            time.sleep(0.01)
        if commit:
            other.commit()
        else:
            other.rollback()
    deciding.join(10)
    assert not deciding.is_alive()
    return outcome[0]


def _lb(sessionmaker: orm.sessionmaker[orm.Session], vip: str | None) -> str:
    resource_id = str(uuid.uuid4())
    with sessionmaker.begin() as db:
        db.add(
            ResourceRecord(
                id=resource_id,
                type="loadbalancer",
                project_id="p",
                root_id=resource_id,
                provider="noop",
                attributes={"provider": "noop", "vip_address": vip},
                provisioning_status="ACTIVE",
                operating_status="ONLINE",
            )
        )
    return resource_id


@pytest.mark.parametrize("other_commits", [True, False], ids=["other-commits", "other-rolls-back"])
def test_two_replicas_reserving_one_vip_and_port_at_once_cannot_both_win(
    sessionmaker: orm.sessionmaker[orm.Session], other_commits: bool
) -> None:
    changes, writer = _lbaas_changes(sessionmaker)
    lb = _lb(sessionmaker, "10.9.0.1")
    body = {"loadbalancer_id": lb, "protocol": "TCP", "protocol_port": 80}

    def create() -> Any:
        ctx = RequestContext(project_id="p")
        return changes.create(ctx, changes.registry["listener"], body, lambda db, r, t: r.id).result(10)

    try:
        outcome = _held_by_another_replica(sessionmaker, "vip 10.9.0.1 tcp 80", other_commits, create)
    finally:
        writer.stop()
    if other_commits:
        assert isinstance(outcome, Conflict), outcome
        assert "10.9.0.1:80 is already in use by another load balancer" in str(outcome)
    else:
        assert isinstance(outcome, str), outcome


def test_a_replica_whose_vip_another_replica_took_meanwhile_is_given_the_next(
    sessionmaker: orm.sessionmaker[orm.Session],
) -> None:
    changes, writer = _lbaas_changes(sessionmaker)

    def create() -> Any:
        ctx = RequestContext(project_id="p")
        loadbalancer = changes.registry["loadbalancer"]
        return changes.create(
            ctx, loadbalancer, {"provider": "noop"}, lambda db, r, t: r.attributes["vip_address"]
        ).result(10)

    try:
        given = _held_by_another_replica(sessionmaker, "vip-address 10.1.0.1", True, create)
    finally:
        writer.stop()
    assert given == "10.1.0.2"
