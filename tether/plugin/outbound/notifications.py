"""oslo.messaging notifications of task and resource state changes.

Other services subscribe the OpenStack way: ``tether.task.<state>`` for every
task state change (``tether.task.pending``, ``.running``, ``.succeeded``,
``.failed``, ...) and ``tether.<type>.<status>`` for a resource's
provisioning status when a task finishes (``tether.loadbalancer.active``,
``tether.member.error``, ``tether.listener.deleted``).

Off by default; ``[oslo_messaging_notifications] driver = messagingv2`` turns
them on (topic ``notifications`` unless ``topics`` says otherwise). Events are
collected in the transaction that caused them and sent after it commits, by
a thread of their own, so a slow broker never holds a database transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from oslo_config import cfg
from sqlalchemy import orm

from tether.common import rpc
from tether.plugin.db.models import ResourceRecord, Row, Task
from tether.plugin.db.session import after_commit

LOG = logging.getLogger(__name__)

#: ``session.info`` key: (event type, payload) pairs to send after commit.
EVENTS = "tether.events"
#: ``session.info`` key set on the sessions of a plugin that sends notifications;
#: without it no payload is even built.
WANTED = "tether.notify"


def record(session: orm.Session, event_type: str, payload: dict[str, Any]) -> None:
    session.info.setdefault(EVENTS, []).append((event_type, payload))


def task_changed(session: orm.Session, task: Task | Row) -> None:
    if session.info.get(WANTED):
        record(session, f"tether.task.{task.state.lower()}", task_payload(task))


def resource_offline(session: orm.Session, resource: ResourceRecord, reason: str) -> None:
    """``resource``'s operating status became OFFLINE outside any task."""
    if session.info.get(WANTED):
        record(
            session,
            f"tether.{resource.type}.offline",
            {
                "resource_id": resource.id,
                "resource_type": resource.type,
                "status": "OFFLINE",
                "project_id": resource.project_id,
                "agent_id": resource.agent_id,
                "reason": reason,
            },
        )


def failed_over(session: orm.Session, root: ResourceRecord, dead: str, in_step: bool) -> None:
    """``root``'s standby agent became its active one, ``dead`` having died."""
    if session.info.get(WANTED):
        record(
            session,
            f"tether.{root.type}.failover",
            {
                "resource_id": root.id,
                "resource_type": root.type,
                "project_id": root.project_id,
                "agent_id": root.agent_id,
                "dead_agent_id": dead,
                "standby_agent_id": root.standby_agent_id,
                "in_step": in_step,
            },
        )


def resource_changed(
    session: orm.Session, task: Task, status: str, resource: ResourceRecord | None = None
) -> None:
    """:param resource: the resource that changed, when not the task's own
    (one under the target of a cascade delete)."""
    if session.info.get(WANTED):
        resource_type = resource.type if resource is not None else task.resource_type
        record(
            session,
            f"tether.{resource_type}.{status.lower()}",
            {
                "resource_id": resource.id if resource is not None else task.resource_id,
                "resource_type": resource_type,
                "status": status,
                "project_id": task.project_id,
                "task_id": task.id,
                "request_id": task.request_id,
            },
        )


def task_payload(task: Task | Row) -> dict[str, Any]:
    return {
        "task_id": task.id,
        "state": task.state,
        "operation": task.operation,
        "resource_type": task.resource_type,
        "resource_id": task.resource_id,
        "root_id": task.root_id,
        "provider": task.provider,
        "project_id": task.project_id,
        "request_id": task.request_id,
        "attempt": task.attempt,
        "agent_id": task.agent_id,
        "error_type": task.error_type,
        "error_message": task.error_message,
    }


class Notifications:
    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self._notifier = rpc.get_notifier(conf, f"tether.plugin.{conf.host}")
        drivers = [d for d in conf.oslo_messaging_notifications.driver if d != "noop"]
        self.enabled = bool(drivers)
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send, name="notifications", daemon=True)

    def install(self, sessionmaker: orm.sessionmaker[orm.Session]) -> None:
        if not self.enabled:
            return
        sessionmaker.configure(info={WANTED: True})
        after_commit(sessionmaker, [EVENTS], self._after_commit)
        self._thread.start()
        LOG.info("sending notifications of task and resource state changes")

    def stop(self) -> None:
        if self.enabled:
            self._queue.put(None)
            self._thread.join(10)

    def _after_commit(self, session: orm.Session) -> None:
        for item in session.info.pop(EVENTS, []):
            self._queue.put(item)

    def _send(self) -> None:
        while (item := self._queue.get()) is not None:
            event_type, payload = item
            try:
                self._notifier.info({}, event_type, payload)
            except Exception as exc:  # noqa: BLE001 - a lost notification must not stop the others
                LOG.warning("notification %s not sent: %s", event_type, exc)
