"""SQLAlchemy models: desired state, tasks and the outbox.

Only portable SQL lives here: the same models run on SQLite (the embedded
default) and PostgreSQL. Timestamps are stored as naive UTC and read back
timezone-aware, because SQLite keeps no time zone.
"""

from __future__ import annotations

import datetime
import json
import types
from typing import Any

import sqlalchemy as sa
from sqlalchemy import orm


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime.datetime]):
    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime.datetime | None, dialect: Any) -> Any:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(datetime.UTC).replace(tzinfo=None)
        return value

    def bind_processor(self, dialect: Any) -> Any:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        # SQLite's DATETIME text, as SQLAlchemy's own processor writes it
        # ("2026-12-05 21:00:00.000000"), made by one C call: its %-format of
        # seven attributes was an eighth of the plugin's time in bulk writes.
        # The rows of a batch share their time: the last text is kept, as one
        # tuple so that threads sharing the statement never see half of it.
        last: list[tuple[datetime.datetime | None, str | None]] = [(None, None)]

        def process(value: datetime.datetime | None) -> str | None:
            if value is None:
                return None
            seen, text = last[0]
            if value == seen:
                return text
            naive = value.astimezone(datetime.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
            text = naive.isoformat(" ", "microseconds")
            last[0] = (value, text)
            return text

        return process

    def process_result_value(self, value: Any, dialect: Any) -> datetime.datetime | None:
        if value is None:
            return None
        stored: datetime.datetime = value
        return stored if stored.tzinfo else stored.replace(tzinfo=datetime.UTC)


class EncodedJSON(str):
    """A value of a JSON column already serialised: stored as it is.

    The plugin's engines serialise JSON columns with :func:`json_serializer`,
    which passes these through, so a document encoded once for a message is
    not encoded again for each column that stores it.
    """


def json_serializer(value: Any) -> str:
    return value if isinstance(value, EncodedJSON) else json.dumps(value)


class Row(types.SimpleNamespace):
    """A row built as plain values for a bulk insert, read as its ORM object is."""


class Base(orm.DeclarativeBase):
    type_annotation_map = {datetime.datetime: UTCDateTime, dict[str, Any]: sa.JSON}


class ResourceRecord(Base):
    """The desired state of one resource and what is known of the device."""

    __tablename__ = "resources"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    type: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    parent_id: orm.Mapped[str | None] = orm.mapped_column(
        sa.String(36), sa.ForeignKey("resources.id", name="fk_resources_parent_id")
    )
    root_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    provider: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    name: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    attributes: orm.Mapped[dict[str, Any]]
    provisioning_status: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    operating_status: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    #: bumped by every accepted change; the driver is told which one it applies
    generation: orm.Mapped[int] = orm.mapped_column(default=1)
    #: the newest generation a driver reported applied
    applied_generation: orm.Mapped[int] = orm.mapped_column(default=0)
    last_error: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    #: for a root of a host-placed provider: the agent whose host holds it
    agent_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    #: for a root of topology ACTIVE_STANDBY: the agent whose host holds it
    #: ready to take over (:mod:`tether.plugin.agents.standby_pairs`)
    standby_agent_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    #: the digest of the tree the standby last reported holding
    standby_digest: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    #: counters the driver last reported (sessions, bytes ...)
    stats: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON)
    #: the desired attributes of ``applied_generation``: what the device holds
    applied_attributes: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON)
    #: how the device differs from ``applied_attributes``, as the last drift
    #: audit found it (None: no difference, or never audited)
    drift: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.Index("ix_resources_type_project_created", "type", "project_id", "created_at", "id"),
        sa.Index("ix_resources_parent_id", "parent_id"),
        sa.Index("ix_resources_root_id", "root_id"),
        sa.Index("ix_resources_agent_id", "agent_id"),
        sa.Index("ix_resources_standby_agent_id", "standby_agent_id"),
    )


class Task(Base):
    """One accepted change of one resource and its journey to a device."""

    __tablename__ = "tasks"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    # No foreign key: a deleted resource's tasks stay as its history.
    resource_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    resource_type: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    root_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    provider: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    operation: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    #: a delete that removes the resource with everything under it
    cascade: orm.Mapped[bool] = orm.mapped_column(default=False, server_default=sa.false())
    generation: orm.Mapped[int]
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    #: the number of the latest claim; 0 until an agent claims the task
    attempt: orm.Mapped[int] = orm.mapped_column(default=0)
    #: the agent's id for its current claim, so a retried claim call is idempotent
    claim_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    #: the attempt the message behind the current claim was published for
    #: (None from agents older than RPC API 1.3): only that message's
    #: redelivery says the current holder died
    claimed_for: orm.Mapped[int | None]
    #: when the reaper looks at this task next, if it is still not terminal
    deadline: orm.Mapped[datetime.datetime | None]
    #: the resource's desired attributes as this change left them
    desired: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON)
    #: where to POST the task when it finishes (the request's Callback-URL)
    callback_url: orm.Mapped[str | None] = orm.mapped_column(sa.String(2048))
    #: what the device reported last about a long operation
    progress: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    #: the task that carried this one's change to the device (SUPERSEDED)
    superseded_by: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    #: what the plugin tells people about how it accepted the change (e.g.
    #: unchecked: no agent had reported what the provider supports)
    notes: orm.Mapped[list[str] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    agent_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    host: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    error_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    error_message: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    queued_at: orm.Mapped[datetime.datetime | None]
    pending_at: orm.Mapped[datetime.datetime | None]
    running_at: orm.Mapped[datetime.datetime | None]
    finished_at: orm.Mapped[datetime.datetime | None]
    updated_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow, onupdate=utcnow)

    __table_args__ = (
        sa.Index("ix_tasks_resource_created", "resource_id", "created_at"),
        sa.Index("ix_tasks_root_state", "root_id", "state"),
        sa.Index("ix_tasks_project_created", "project_id", "created_at", "id"),
        sa.Index("ix_tasks_state_updated", "state", "updated_at"),
        sa.Index("ix_tasks_state_deadline", "state", "deadline"),
        sa.Index("ix_tasks_agent_state", "agent_id", "state"),
        sa.Index("ix_tasks_provider_state", "provider", "state"),
    )


class TaskAttempt(Base):
    """One claim of a task by an agent, and what became of it.

    A result from an attempt that is no longer current is kept here with
    ``applied`` false: history, not state.
    """

    __tablename__ = "task_attempts"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    task_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    attempt: orm.Mapped[int]
    agent_id: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    redelivered: orm.Mapped[bool] = orm.mapped_column(default=False)
    claimed_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    finished_at: orm.Mapped[datetime.datetime | None]
    #: SUCCEEDED or FAILED as the agent reported it, or ABANDONED by the reaper
    outcome: orm.Mapped[str | None] = orm.mapped_column(sa.String(16))
    applied: orm.Mapped[bool] = orm.mapped_column(default=False)
    error_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    error_message: orm.Mapped[str | None] = orm.mapped_column(sa.Text)

    __table_args__ = (sa.Index("ix_task_attempts_task_attempt", "task_id", "attempt"),)


class TaskStep(Base):
    """One step of a task's operation, as its agents reported it.

    A driver that splits an operation into steps has the agent report the
    list before the first, and each step as it starts and ends; a later
    attempt skips the steps recorded ``DONE``. ``attempt`` and ``agent_id``
    are those of the last report.
    """

    __tablename__ = "task_steps"

    task_id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    #: the step's place in the operation, from 0
    position: orm.Mapped[int] = orm.mapped_column(primary_key=True)
    name: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    #: a :class:`~tether.common.states.StepState`
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    attempt: orm.Mapped[int | None]
    agent_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    started_at: orm.Mapped[datetime.datetime | None]
    finished_at: orm.Mapped[datetime.datetime | None]
    error_type: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    error_message: orm.Mapped[str | None] = orm.mapped_column(sa.Text)


class AgentRecord(Base):
    """An agent as its heartbeats describe it."""

    __tablename__ = "agents"

    id: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    host: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    providers: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)
    version: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    workers: orm.Mapped[int] = orm.mapped_column(default=0)
    in_flight: orm.Mapped[int] = orm.mapped_column(default=0)
    started_at: orm.Mapped[datetime.datetime]
    last_heartbeat: orm.Mapped[datetime.datetime]
    #: what the reaper last concluded, so that death and return are logged once
    alive: orm.Mapped[bool] = orm.mapped_column(default=True)
    admin_state_up: orm.Mapped[bool] = orm.mapped_column(default=True)
    #: what its last drift audit found on its devices that no resource
    #: desires there: ids by provider
    undesired: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    #: the providers whose devices it audits for drift (it lists them and audits at all)
    audits: orm.Mapped[list[str] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    #: what each provider's driver declared it supports, as the agent last
    #: reported it (None: an agent that reports none, of an older release)
    capabilities: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    #: by provider, the address its driver's peers on other hosts reach it
    #: at (e.g. for VRRP), as the agent last reported it
    addresses: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    #: by provider, its driver's placement and resource types as the agent
    #: last reported them (None: an agent of a release that reports none)
    drivers: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)


class Outbox(Base):
    """A message committed with its task and not yet confirmed by the broker."""

    __tablename__ = "outbox"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    task_id: orm.Mapped[str] = orm.mapped_column(sa.String(36))
    exchange: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    routing_key: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    payload: orm.Mapped[str] = orm.mapped_column(sa.Text)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    #: not published before this time (a retry's backoff)
    not_before: orm.Mapped[datetime.datetime | None]

    __table_args__ = (
        sa.Index("ix_outbox_task_id", "task_id"),
        sa.Index("ix_outbox_not_before_id", "not_before", "id"),
        # Never reuse an id: the relay deletes the rows it published by id,
        # and a reused id would delete a newer row unpublished.
        {"sqlite_autoincrement": True},
    )


class IdempotencyKey(Base):
    """The answer given to a request that carried an ``Idempotency-Key``."""

    __tablename__ = "idempotency_keys"

    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    key: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    #: method, path and a hash of the body: the same key must mean the same request
    fingerprint: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    status: orm.Mapped[int]
    response: orm.Mapped[dict[str, Any]] = orm.mapped_column(sa.JSON)
    location: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    expires_at: orm.Mapped[datetime.datetime]

    __table_args__ = (sa.Index("ix_idempotency_keys_expires_at", "expires_at"),)


class Callback(Base):
    """A finished task to be POSTed to its callback URL, until it is delivered or given up."""

    __tablename__ = "callbacks"

    task_id: orm.Mapped[str] = orm.mapped_column(sa.String(36), primary_key=True)
    url: orm.Mapped[str] = orm.mapped_column(sa.String(2048))
    #: PENDING, DELIVERED or FAILED
    state: orm.Mapped[str] = orm.mapped_column(sa.String(16))
    attempts: orm.Mapped[int] = orm.mapped_column(default=0)
    next_attempt_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    last_error: orm.Mapped[str | None] = orm.mapped_column(sa.Text)
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)
    delivered_at: orm.Mapped[datetime.datetime | None]

    __table_args__ = (sa.Index("ix_callbacks_state_next", "state", "next_attempt_at"),)


class OperatorAction(Base):
    """What someone asked for by hand (a cancel, a retry, a re-apply, an
    agent disabled, dead letters replayed), who asked and why: the task
    history's record of people, beside the tasks' own."""

    __tablename__ = "operator_actions"

    id: orm.Mapped[int] = orm.mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    #: cancel, retry, reapply, disable, enable, replay, purge
    action: orm.Mapped[str] = orm.mapped_column(sa.String(32))
    #: what it acted on: ``task``, ``agent``, ``dead-letters`` or a resource type
    target_type: orm.Mapped[str] = orm.mapped_column(sa.String(64))
    target_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    #: the task it made (retry, reapply) or ended (cancel)
    task_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(36))
    project_id: orm.Mapped[str] = orm.mapped_column(sa.String(255))
    roles: orm.Mapped[list[str]] = orm.mapped_column(sa.JSON)
    request_id: orm.Mapped[str | None] = orm.mapped_column(sa.String(64))
    reason: orm.Mapped[str | None] = orm.mapped_column(sa.String(255))
    #: what it did, where a task does not say (dead letters: counts)
    outcome: orm.Mapped[dict[str, Any] | None] = orm.mapped_column(sa.JSON(none_as_null=True))
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)

    __table_args__ = (
        sa.Index("ix_operator_actions_task_id", "task_id"),
        sa.Index("ix_operator_actions_target", "target_type", "target_id"),
    )


class Reservation(Base):
    """A key that one resource holds alone, such as the VIP address and port
    a listener serves. The primary key makes the database the arbiter: of two
    accepts that reserve one key at once, in one group commit or on two plugin
    replicas, one commits and the other is refused. Deleting the resource
    releases what it held."""

    __tablename__ = "reservations"

    key: orm.Mapped[str] = orm.mapped_column(sa.String(255), primary_key=True)
    resource_id: orm.Mapped[str] = orm.mapped_column(
        sa.String(36),
        sa.ForeignKey("resources.id", name="fk_reservations_resource_id", ondelete="CASCADE"),
    )
    created_at: orm.Mapped[datetime.datetime] = orm.mapped_column(default=utcnow)

    __table_args__ = (sa.Index("ix_reservations_resource_id", "resource_id"),)
