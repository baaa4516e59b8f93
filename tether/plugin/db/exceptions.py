"""Database errors as tether's own, translated where they enter.

Every statement, commit and connection of the plugin's engines goes through
SQLAlchemy's ``handle_error`` hook, which replaces the driver's exception
(sqlite3, psycopg, wrapped by SQLAlchemy) with one of these, so that callers
above ``db/`` (the API, claims, results, the relay, the reaper) catch
tether's exceptions and never import SQLAlchemy's, as oslo.db's exception
filters do for OpenStack services.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy import event

from tether.common.exceptions import UNSAID, Conflict, ServiceUnavailable, TetherError


class DatabaseError(TetherError):
    """A statement failed for a reason retrying will not cure (a bug, or a schema out of date).

    The messages say nothing of the database's own words, which may name its
    host or the statement's values; ``detail`` keeps them for the log.
    """

    message = "The database refused a statement; the operator's log has its reason."

    @property
    def detail(self) -> str:
        return str(self.kwargs.get("detail", UNSAID))


class DatabaseUnavailable(DatabaseError, ServiceUnavailable):
    """The database is locked, busy or unreachable: the same statement may succeed shortly."""

    message = "The database is busy or unreachable; retry in a moment."
    status = 503


class DuplicateEntry(DatabaseError, Conflict):
    """A row broke a unique or foreign-key constraint: another writer got there first."""

    message = "Another request changed the same data at the same time; retry."
    status = 409


def translate(exc: BaseException, invalidated: bool = False) -> DatabaseError | None:
    """The tether error ``exc`` stands for; None for one that is not the database's."""
    if isinstance(exc, DatabaseError):
        return exc
    orig = getattr(exc, "orig", None)
    detail = _first_line(orig or exc)
    if isinstance(exc, sa.exc.IntegrityError):
        return DuplicateEntry(detail=detail)
    if invalidated or (
        isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError) and _transient_in_sqlite(orig)
    ):
        return DatabaseUnavailable(detail=detail, retry_after=1)
    if isinstance(exc, sa.exc.DBAPIError):
        return DatabaseError(detail=detail)
    return None


def install(engine: sa.Engine) -> None:
    """Translate every error of ``engine``'s connections, statements and commits."""

    @event.listens_for(engine, "handle_error")
    def _translate(context: sa.engine.ExceptionContext) -> BaseException | None:
        # SQLAlchemy raises the answer from the driver's own exception.
        return translate(context.sqlalchemy_exception or context.original_exception, context.is_disconnect)


#: SQLite's result codes of a database that is busy or cannot be reached now;
#: it raises OperationalError for a missing table or a syntax error too.
_SQLITE_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_FULL")


def _transient_in_sqlite(orig: object) -> bool:
    """False for an SQLite error that retrying cannot cure; True for any other driver's."""
    name = getattr(orig, "sqlite_errorname", None)
    return name is None or name.startswith(_SQLITE_TRANSIENT)


def _first_line(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
