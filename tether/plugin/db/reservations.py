"""Reservations: keys one resource holds alone (:class:`Reservation`).

A reservation is an insert under the key's primary key, in a savepoint of its
own: of two transactions reserving one key, the database lets one commit.
Within one group commit the second unit sees the first's row; between plugin
replicas on PostgreSQL the second insert waits for the first transaction and
fails once it commits (or succeeds if it rolled back). Either way the loser
only learns ``False`` and its unit answers for it.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy import orm

from tether.plugin.db.exceptions import DuplicateEntry
from tether.plugin.db.models import Reservation, utcnow

_INSERT = sa.insert(Reservation)


def reserve(session: orm.Session, key: str, resource_id: str) -> bool:
    """Reserve ``key`` for ``resource_id``; False when another holds it.
    One the same resource holds already counts as reserved."""
    holder = holder_of(session, key)
    if holder is not None:
        return holder == resource_id
    try:
        with session.begin_nested():
            session.execute(_INSERT, {"key": key, "resource_id": resource_id, "created_at": utcnow()})
    except DuplicateEntry:
        return False
    return True


def holder_of(session: orm.Session, key: str) -> str | None:
    """The id of the resource holding ``key``, if any."""
    return session.scalar(sa.select(Reservation.resource_id).where(Reservation.key == key))


def release(session: orm.Session, keys: Iterable[str]) -> None:
    """Give ``keys`` up before their holder is deleted (which releases them anyway)."""
    session.execute(sa.delete(Reservation).where(Reservation.key.in_(list(keys))))


def held(session: orm.Session, prefix: str) -> set[str]:
    """The keys held that start with ``prefix``."""
    # A range on the primary key, which LIKE would not use on every database.
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    query = sa.select(Reservation.key).where(Reservation.key >= prefix, Reservation.key < upper)
    return set(session.scalars(query))


def held_by(session: orm.Session, resource_ids: Iterable[str]) -> dict[str, str]:
    """What ``resource_ids`` hold: each key with its holder."""
    query = sa.select(Reservation.key, Reservation.resource_id).where(
        Reservation.resource_id.in_(list(resource_ids))
    )
    return {key: holder for key, holder in session.execute(query)}
