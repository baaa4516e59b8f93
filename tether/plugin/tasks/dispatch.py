"""The outbox relay (DESIGN.md guarantee 2: no lost dispatch).

The accepting transaction leaves a row in ``outbox``; the relay publishes
unsent rows as persistent messages, waits for the broker's confirms, and only
then deletes them. A crash between the confirm and the delete publishes the
row again on restart; agents treat the duplicate as the redelivery it is.

The API wakes the relay after each commit, so a change leaves within
milliseconds; a periodic scan catches rows whose wake-up was lost (another
process, a restart). On SQLite the rows of new roots are handed over with
the wake-up (:mod:`tether.plugin.tasks.handoff`) and published without being read
back.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Sequence

import kombu
from oslo_config import cfg
from sqlalchemy import orm

from tether.common import backoff, connection, faults, transport
from tether.common.publisher import Envelope, Publisher, Unroutable
from tether.plugin.db import queries
from tether.plugin.db.exceptions import DatabaseError
from tether.plugin.db.models import Outbox, Row, utcnow

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "relay_batch_size",
        default=200,
        min=1,
        help="Outbox rows published per confirm window; larger windows cost fewer round "
        "trips to the broker, smaller ones republish less after a failure.",
    ),
    cfg.FloatOpt(
        "relay_interval",
        default=1.0,
        min=0.01,
        help="Seconds between scans of the outbox for rows nobody announced (left by "
        "another plugin process or by a crash).",
    ),
]


#: published outbox ids a relay remembers, and handed rows it holds; more
#: than a link's socket holds
_REMEMBERED = 20_000


class OutboxRelay(connection.ConnectionLoop):
    """Publishes committed outbox rows to the work exchange."""

    def __init__(
        self,
        broker: transport.Broker,
        sessionmaker: orm.sessionmaker[orm.Session],
        reader: orm.sessionmaker[orm.Session],
        providers: list[str],
        batch_size: int,
        interval: float,
    ) -> None:
        super().__init__(broker, "outbox-relay")
        #: other plugin processes may relay the same outbox (not on SQLite)
        self.shared = sessionmaker.kw["bind"].dialect.name != "sqlite"
        self.sessionmaker = sessionmaker
        self.reader = reader
        self.providers = providers
        self.batch_size = batch_size
        self.interval = interval
        self._wake = threading.Event()
        # Bounded: while the broker is away the accepts go on, and a row
        # pushed out here is still in the outbox for the scan.
        self._handed: collections.deque[Row] = collections.deque(maxlen=_REMEMBERED)
        # Ids of rows published lately, so that a row both scanned and
        # handed over is published once; ids are never reused.
        self._published: collections.deque[int] = collections.deque(maxlen=_REMEMBERED)
        self._published_ids: set[int] = set()
        #: ids published and not yet deleted, and since when
        self._deleting: list[int] = []
        self._deleting_since: float | None = None
        self._clock = time.monotonic
        self._publisher: Publisher | None = None
        self._declared: set[str] = set()
        self._db_failures = 0
        self.drain_timeout = 10.0

    def wake(self) -> None:
        self._wake.set()

    def hand(self, rows: list[Row]) -> None:
        """Committed outbox rows due now, to publish without reading them
        back; for a relay that is alone on its outbox (SQLite)."""
        self._handed.extend(rows)
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self._wake.set()
        super().stop(timeout)

    def on_connect(self, connection: kombu.Connection) -> None:
        # Queues exist before the first publish: a message routed to no queue is dropped.
        self.broker.declare(connection, [self.broker.work_queue(p) for p in self.providers])
        self._declared = set(self.providers)
        self._publisher = Publisher(connection, self.broker.confirm_timeout)
        LOG.info(
            "relaying the outbox to %s for providers %s", self.broker.url.masked, ", ".join(self.providers)
        )

    def on_disconnect(self) -> None:
        self._publisher = None
        self._declared = set()

    def wait(self, connection: kombu.Connection) -> None:
        # Sleep on the wake-up event, but read the socket often enough that
        # the broker's heartbeats are seen: py-amqp counts only frames read.
        timeout = self.interval
        if self.broker.heartbeat and not self.broker.url.in_memory:
            timeout = min(timeout, self.broker.heartbeat / 4)
        self._wake.wait(timeout)
        self._wake.clear()
        self.take_arrived(connection)

    def on_tick(self, connection: kombu.Connection) -> None:
        try:
            while not self.stopping.is_set() and self.relay_once(connection) == self.batch_size:
                pass
            self._db_failures = 0
        except DatabaseError as exc:
            # The database is away: keep the broker connection and try again;
            # what is committed stays in the outbox until then.
            self._db_failures += 1
            delay = backoff.DATABASE.delay(self._db_failures)
            LOG.warning("cannot read the outbox (%s); retrying in %.1f s", exc, delay)
            self._wake.wait(delay)

    def on_stop(self, connection: kombu.Connection) -> None:
        # Drain: publish what is already committed and due before closing.
        deadline = time.monotonic() + self.drain_timeout
        try:
            while time.monotonic() < deadline and self.relay_once(connection) == self.batch_size:
                pass
            self._delete_published(force=True)
        except Exception as exc:  # noqa: BLE001 - stopping anyway; the rows stay for the next start
            LOG.warning("stopped before the outbox was drained: %s", exc)

    def relay_once(self, connection: kombu.Connection) -> int:
        """Publish one window of unsent rows; return how many rows it held."""
        if not self.shared:
            # One relay per SQLite file (one plugin, whose pipeline runs it).
            handed = self._take_handed()
            rows: Sequence[Outbox | Row] = handed
            if not rows:
                # Read without the write lock, so the API's commits never
                # wait for the broker's confirms.
                with self.reader() as session:
                    rows = queries.unsent_outbox(session, self.batch_size, utcnow())
            fresh = list({r.id: r for r in rows if r.id not in self._published_ids}.values())
            if fresh:
                self._publish(connection, fresh)
                self._remember([r.id for r in fresh])
            # Rows published before (scanned, then handed over late) go too.
            self._deleting.extend(r.id for r in rows)
            self._delete_published(force=bool(rows) and not handed)
            return len(rows)
        # Plugin replicas share the outbox: each takes a window of rows
        # the others do not hold and keeps them locked until they are
        # confirmed and deleted, so no row is published twice.
        with self.sessionmaker.begin() as session:
            rows = queries.unsent_outbox(session, self.batch_size, utcnow(), skip_locked=True)
            if rows:
                self._publish(connection, rows)
                queries.delete_outbox(session, [r.id for r in rows])
        return len(rows)

    def _delete_published(self, force: bool = False) -> None:
        """Delete the published rows, a window's worth or an interval's at once.

        Claims delete their tasks' rows, so most of these are gone by now: a
        write turn per handed window would cost the other writers more than
        it clears. Until deleted, a row is in the published set, so a scan
        skips it; after a crash it is published again, and the claim fences
        the copy off.
        """
        if not self._deleting:
            return
        now = self._clock()
        if self._deleting_since is None:
            self._deleting_since = now
        if force or len(self._deleting) >= self.batch_size or now - self._deleting_since >= self.interval:
            with self.sessionmaker.begin() as session:
                queries.delete_outbox(session, self._deleting)
            self._deleting, self._deleting_since = [], None

    def _take_handed(self) -> list[Row]:
        rows: list[Row] = []
        with contextlib.suppress(IndexError):
            while len(rows) < self.batch_size:
                rows.append(self._handed.popleft())
        return rows

    def _remember(self, ids: list[int]) -> None:
        for id_ in ids:
            if len(self._published) == self._published.maxlen:
                self._published_ids.discard(self._published[0])
            self._published.append(id_)
            self._published_ids.add(id_)

    def _publish(self, connection: kombu.Connection, rows: Sequence[Outbox | Row]) -> None:
        assert self._publisher is not None
        new_keys = {r.routing_key for r in rows} - self._declared
        if new_keys:
            self.broker.declare(connection, [self.broker.work_queue(k) for k in new_keys])
            self._declared |= new_keys
        envelopes = [
            Envelope(
                exchange=self.broker.work_exchange,
                routing_key=row.routing_key,
                body=row.payload.encode(),
                message_id=row.task_id,
                headers={"request_id": row.request_id} if row.request_id else {},
            )
            for row in rows
        ]
        faults.point("relay.before_publish")
        try:
            self._publisher.publish(envelopes)
        except Unroutable:
            # Someone deleted a queue we declared: declare again, then retry.
            self._declared.clear()
            raise
        LOG.debug("relayed %d outbox row(s)", len(rows))
