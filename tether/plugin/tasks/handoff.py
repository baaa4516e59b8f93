"""Committed outbox rows handed to the relay, so that it need not read them back.

An accept commits its outbox row; the relay used to learn of it by a wake-up
and then read it from the database. On SQLite, where one relay serves the
file, the API hands the rows of new roots (the accepts clients send at a
rate) to the relay once their transaction has committed, ids and payloads
included: the relay publishes them as they are and deletes them by id.

The outbox stays the truth. A hand-over that is lost (the link's socket was
full, the pipeline restarted) leaves its rows where the relay's scan finds
them; a row handed over after the scan already published it is recognised
by its id and skipped (ids are never reused).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec
from sqlalchemy import orm

from tether.plugin.db.models import Row
from tether.plugin.db.session import after_commit

#: ``session.info`` key: the outbox rows of this transaction to hand over
ROWS = "tether.outbox-handoff"

#: a datagram of the link stays below this many bytes
MAX_BYTES = 48 * 1024

_Wire = tuple[int, str, str, str | None, str]
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[_Wire])


def note(session: orm.Session, row: dict[str, Any]) -> None:
    """Hand ``row`` (an outbox row due now) over once the transaction commits;
    its ``id`` is filled in by the insert."""
    session.info.setdefault(ROWS, []).append(row)


def install(sessionmaker: orm.sessionmaker[orm.Session], hand: Callable[[list[Row]], None]) -> None:
    """Call ``hand`` with the rows each committed transaction of ``sessionmaker`` noted."""

    def committed(session: orm.Session) -> None:
        rows = session.info.pop(ROWS, None)
        if rows:
            hand([Row(**row) for row in rows])

    after_commit(sessionmaker, [ROWS], committed)


def encode(rows: Sequence[Row]) -> list[bytes]:
    """``rows`` in datagrams of at most :data:`MAX_BYTES`; a row too large
    for one is left out, for the relay's scan to find."""
    datagrams: list[bytes] = []
    batch: list[_Wire] = []
    size = 0
    for row in rows:
        wire = (row.id, row.task_id, row.routing_key, row.request_id, row.payload)
        length = len(row.payload) + 200
        if length > MAX_BYTES:
            continue
        if size + length > MAX_BYTES:
            datagrams.append(_ENCODER.encode(batch))
            batch, size = [], 0
        batch.append(wire)
        size += length
    if batch:
        datagrams.append(_ENCODER.encode(batch))
    return datagrams


def decode(body: bytes) -> list[Row]:
    return [
        Row(id=id_, task_id=task_id, routing_key=key, request_id=request_id, payload=payload)
        for id_, task_id, key, request_id, payload in _DECODER.decode(body)
    ]
