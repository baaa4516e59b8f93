"""Recording what agents report (DESIGN.md guarantee 3: no lost result).

:class:`ResultConsumer` takes result messages off the results queue and acks
them only after :class:`ResultRecorder` committed them. Recording is
idempotent: a result for a task that is already finished changes nothing, so
a redelivered result is harmless. A batch of results shares one commit.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence

import kombu
from oslo_config import cfg
from sqlalchemy import orm

from tether.common import backoff, connection, dead_lettering, log, messages, transport, wire
from tether.common.exceptions import MalformedMessage
from tether.common.publisher import Publisher
from tether.plugin.db import attempts, queries
from tether.plugin.db import session as session_lib
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.tasks import lifecycle

LOG = logging.getLogger(__name__)

OPTS: list[cfg.Opt] = [
    cfg.IntOpt(
        "result_batch_size",
        default=200,
        min=1,
        help="Results taken from the broker before recording them in one transaction "
        "(the consumer's prefetch).",
    ),
]


class ResultRecorder:
    """Applies results to tasks and resources, fenced by attempt."""

    def __init__(self, sessionmaker: orm.sessionmaker[orm.Session], policy: lifecycle.Policy) -> None:
        self.sessionmaker = sessionmaker
        self.policy = policy

    def record(
        self,
        results: Sequence[messages.Result],
        more: Callable[[], Sequence[messages.Result]] | None = None,
    ) -> set[str]:
        """Record results in one transaction.

        :param more: called once the transaction holds the write turn:
            results that arrived meanwhile, recorded with these.

        :returns: the ids of tasks that do not exist; their results changed nothing.
        """
        with self.sessionmaker.begin() as session:
            return self.record_in(session, session_lib.with_arrived(session, results, more))

    def record_in(self, session: orm.Session, results: Sequence[messages.Result]) -> set[str]:
        """:meth:`record` in ``session``'s transaction, which the caller commits."""
        if not results:
            return set()
        queries.lock_trees_of_tasks(session, [r.task_id for r in results])
        # Without the task's own lock, a claim taking the task over could
        # commit after this read, and the result of the attempt it
        # replaced would overwrite it.
        found = attempts.for_results(session, [r.task_id for r in results])
        busy = attempts.busy_trees(session, {task.root_id for task in found.values()})
        rest = lifecycle.settle_simply(
            session, self.policy, [(found[r.task_id], r) for r in results if r.task_id in found], busy
        )
        if rest:
            self._record(session, rest)
        return {r.task_id for r in results if r.task_id not in found}

    def _record(self, session: orm.Session, results: Sequence[messages.Result]) -> None:
        """Results that decide more than their task's end, one by one."""
        tasks = queries.tasks_for_update(session, [r.task_id for r in results])
        # One statement loads the batch's resources; applying each result
        # then finds its resource in the session instead of asking again.
        held = queries.get_resources(session, {task.resource_id for task in tasks.values()})
        history = queries.attempts_of(session, list(tasks))
        # Finishing a task looks for the next of its tree: one statement for all.
        queries.load_in_flight(session, {task.root_id for task in tasks.values()})
        for result in results:
            with log.request_context(result.request_id):
                lifecycle.record_result(session, self.policy, tasks[result.task_id], result, history)
        del held


class ResultConsumer(connection.ConnectionLoop):
    """The plugin's consumer of the results queue.

    Its steps are driven by :class:`~tether.plugin.tasks.agent_traffic.AgentTraffic`
    on its connection and, on SQLite, in a transaction shared with the claim
    server; it has no tick of its own.
    """

    def __init__(self, broker: transport.Broker, recorder: ResultRecorder, batch: int) -> None:
        super().__init__(broker, "result-consumer")
        self.recorder = recorder
        self.batch = batch
        # Under load one delivery per tick meant one commit per result.
        self.burst = batch
        self._pending: list[tuple[kombu.Message, messages.Result]] = []
        #: why a results message goes to the dead letters once its other
        #: results are recorded, by the message's id()
        self._refused: dict[int, list[str]] = {}
        self._publisher: Publisher | None = None
        self._db_failures = 0
        self._retry_at = 0.0
        self._dead_letters = dead_lettering.DeadLetters(broker, "result")
        self.consumer: kombu.Consumer | None = None

    def on_connect(self, connection: kombu.Connection) -> None:
        queue = self.broker.results_queue()
        self.broker.declare(connection, [queue])
        self._publisher = Publisher(connection, self.broker.confirm_timeout)
        self.consumer = consumer = kombu.Consumer(
            connection.channel(),
            queues=[queue],
            on_message=self._on_message,
            on_decode_error=self._on_undecodable,
            prefetch_count=self.batch,
        )
        consumer.consume()
        LOG.info("consuming results from %s on %s", queue.name, self.broker.url.masked)

    def on_disconnect(self) -> None:
        # Unacked results come back to some consumer; ours are void now.
        self._pending.clear()
        self._refused.clear()
        self._dead_letters.clear()
        self._publisher = None

    def flush_dead_letters(self) -> None:
        assert self._publisher is not None
        self._dead_letters.flush(self._publisher)

    def take(self) -> list[tuple[kombu.Message, messages.Result]]:
        """The results delivered and not yet recorded; none while a database
        outage is waited out."""
        if not self._pending or time.monotonic() < self._retry_at:
            return []
        batch, self._pending = self._pending, []
        return batch

    def record_alone(
        self, batch: list[tuple[kombu.Message, messages.Result]], connection: kombu.Connection | None = None
    ) -> None:
        """Record ``batch`` in a transaction of its own, with the results that
        arrive on ``connection`` while it waits for the write turn, and ack them."""
        arrived = None if connection is None else functools.partial(self._arrived, connection, batch)
        try:
            unknown = self.recorder.record([r for _, r in batch], arrived) or set()
            handled = batch
        except Exception as exc:
            if _transient(exc):
                self.retry_later(batch, exc)
                return
            LOG.exception("recording a batch of %d results failed; recording one by one", len(batch))
            handled, unknown = self._record_one_by_one(batch)
        self.settle(handled, unknown)

    def _arrived(
        self, connection: kombu.Connection, batch: list[tuple[kombu.Message, messages.Result]]
    ) -> list[messages.Result]:
        """Results that came while ``batch`` waited for the write turn, added to it."""
        if not self.take_arrived(connection):
            return []
        more, self._pending = self._pending, []
        batch.extend(more)
        return [result for _, result in more]

    def settle(self, handled: list[tuple[kombu.Message, messages.Result]], unknown: set[str]) -> None:
        """Ack each message whose results are recorded; dead-letter, with
        why, each that held one that changed nothing or was refused."""
        assert self._publisher is not None
        self._db_failures = 0
        settling: dict[int, tuple[kombu.Message, list[str]]] = {}
        for message, result in handled:
            key = id(message)
            if key not in settling:
                settling[key] = (message, self._refused.pop(key, []))
            if result.task_id in unknown:
                # Tasks are never deleted: a result for none came from
                # somewhere else (another deployment, a hand-made message).
                settling[key][1].append(
                    f"no task {result.task_id!r} exists; the result (attempt {result.attempt}, "
                    f"{result.outcome.value}, from agent {result.agent_id!r}) changed nothing"
                )
        for message, why in settling.values():
            if not why:
                message.ack()
            elif message.properties.get("type") == messages.RESULTS_TYPE:
                # Replaying it records nothing twice: recording is idempotent.
                self._dead_letters.add(message, "; ".join(why) + "; its other results were recorded")
            else:
                self._dead_letters.add(message, "; ".join(why))
        self._dead_letters.flush(self._publisher)

    def stop_waiting(self) -> None:
        """Record what is held at the next tick, even during a database outage's backoff."""
        self._retry_at = 0.0

    def retry_later(self, batch: list[tuple[kombu.Message, messages.Result]], exc: Exception) -> None:
        # The database is down or locked: keep the results unacked and try
        # again; acking now would lose them.
        self._pending = batch + self._pending
        self._db_failures += 1
        self._retry_at = time.monotonic() + backoff.DATABASE.delay(self._db_failures)
        LOG.warning("cannot record %d result(s), retrying: %s", len(batch), exc)

    def _record_one_by_one(
        self, batch: list[tuple[kombu.Message, messages.Result]]
    ) -> tuple[list[tuple[kombu.Message, messages.Result]], set[str]]:
        """Each result in a transaction of its own; what was handled (recorded
        or refused), and the unknown tasks."""
        handled: list[tuple[kombu.Message, messages.Result]] = []
        unknown: set[str] = set()
        for index, (message, result) in enumerate(batch):
            try:
                unknown |= self.recorder.record([result]) or set()
            except Exception as exc:  # noqa: BLE001
                if _transient(exc):
                    rest = batch[index:]
                    self.retry_later(rest, exc)
                    # A message is settled once, when all its results are.
                    waiting = {id(m) for m, _ in rest}
                    return [(m, r) for m, r in handled if id(m) not in waiting], unknown
                self._refused.setdefault(id(message), []).append(
                    f"recording the result of task {result.task_id!r} failed: {exc}"
                )
            handled.append((message, result))
        return handled, unknown

    def _on_undecodable(self, message: kombu.Message, exc: Exception) -> None:
        # See WorkConsumer: kombu fails before our callback on a lying
        # `compression` header, and would otherwise raise out of the loop.
        self._dead_letters.add(message, wire.undecodable_reason("result", message.headers, exc))

    def _on_message(self, message: kombu.Message) -> None:
        if message.properties.get("type") != messages.RESULTS_TYPE:
            result = self._dead_letters.read(message, wire.decode_result)
            if result is not None:
                self._pending.append((message, result))
            return
        results = self._dead_letters.read(message, wire.decode_results)
        if results is None:
            return
        refused = []
        taken = 0
        for index, raw in enumerate(results):
            try:
                self._pending.append((message, wire.decode_batched_result(raw, index)))
                taken += 1
            except MalformedMessage as exc:
                refused.append(exc.msg)
        if not taken:
            self._dead_letters.add(message, "; ".join(refused))
        elif refused:
            # Dead-lettered once the others are recorded.
            self._refused[id(message)] = refused


def _transient(exc: Exception) -> bool:
    """Will the same write succeed later (the database, not the data, failed)?"""
    return isinstance(exc, DatabaseUnavailable)
