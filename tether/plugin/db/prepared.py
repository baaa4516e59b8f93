"""Inserts and updates run in batches through the DB-API's ``executemany``,
compiled once per dialect.

For a batch, Core processes every row's parameters in Python: it builds a
dictionary per row, runs each value through its type's processor and adds
each column's default, which cost more than the statement itself on the
hot paths (a sixth of the pipeline process, sampled at full load). Here a
statement is compiled once per dialect into the driver's SQL, the order of
its parameters and the processor of each, and a batch becomes one list of
tuples (or of dictionaries, for drivers that name their parameters) for
``Connection.exec_driver_sql``: still one statement counted, still in the
caller's transaction.

The rows are mappings of the statement's bind parameter names, less a prefix
the statement gives them; a parameter they leave out takes the statement's
own value or its column's Python-side ``onupdate``, made once per batch.
An insert's rows give every column they want written; a column they leave
out takes its Python-side default, made once per batch, or the database's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

#: a parameter of a prepared statement: its name, the rows' key for it (None
#: when they do not give it), its value ready for the driver when they do not
#: (None for a column's onupdate, made per batch), and the processor of a
#: given or made value
_Bind = tuple[str, str | None, Any, Any]
#: the driver's SQL, whether its parameters are positional, its parameters,
#: the columns whose default or onupdate a batch makes, and how it makes one
_Plan = tuple[str, bool, list[_Bind], dict[str, sa.Column[Any]], Callable[[sa.Column[Any]], Any]]

_plans: dict[tuple[sa.Update | sa.Table, tuple[str, ...], sa.Dialect], _Plan] = {}


def execute(
    connection: sa.Connection, statement: sa.Update, rows: Sequence[Mapping[str, Any]], prefix: str = ""
) -> int:
    """Run ``statement`` for each of ``rows`` (all with the same keys); the
    rows it changed, as the driver counts them.

    :param prefix: what the statement's bind names add to the rows' keys
        (an update may not name a bind after a column it sets).
    """
    keys = tuple(rows[0])
    plan = _plans.get((statement, keys, connection.dialect)) or _plan(
        statement, keys, prefix, connection.dialect
    )
    return _run(connection, plan, rows)


def insert(connection: sa.Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys, named after ``table``'s columns)."""
    keys = tuple(rows[0])
    plan = _plans.get((table, keys, connection.dialect))
    if plan is None:
        statement = table.insert()
        compiled = statement.compile(dialect=connection.dialect, column_keys=list(keys))
        made_by = {column.key: column for column in compiled.insert_prefetch if column.key not in keys}
        plan = _compiled_plan(compiled, {key: key for key in keys}, made_by, connection.dialect, _default)
        _plans[(table, keys, connection.dialect)] = plan
    _run(connection, plan, rows)


def _run(connection: sa.Connection, plan: _Plan, rows: Sequence[Mapping[str, Any]]) -> int:
    sql, positional, binds, made_by, make = plan
    made = {name: make(column) for name, column in made_by.items()}
    params: list[Any] = []
    for row in rows:
        values = [
            (row[key] if process is None else process(row[key]))
            if key is not None
            else (fixed if name not in made else (made[name] if process is None else process(made[name])))
            for name, key, fixed, process in binds
        ]
        params.append(tuple(values) if positional else {b[0]: v for b, v in zip(binds, values, strict=True)})
    return int(connection.exec_driver_sql(sql, params).rowcount)


def _onupdate(column: sa.Column[Any]) -> Any:
    return _made(column.onupdate)


def _default(column: sa.Column[Any]) -> Any:
    return _made(column.default)


def _made(default: Any) -> Any:
    # Zero-argument callables (utcnow) are wrapped to take Core's execution context.
    return default.arg(None) if callable(default.arg) else default.arg


def _plan(statement: sa.Update, keys: tuple[str, ...], prefix: str, dialect: sa.Dialect) -> _Plan:
    compiled = statement.compile(dialect=dialect)
    given = {f"{prefix}{key}": key for key in keys}
    made_by = {column.key: column for column in compiled.update_prefetch if column.key not in given}
    plan = _compiled_plan(compiled, given, made_by, dialect, _onupdate)
    _plans[(statement, keys, dialect)] = plan
    return plan


def _compiled_plan(
    compiled: Any,
    given: dict[str, str],
    made_by: dict[str, sa.Column[Any]],
    dialect: sa.Dialect,
    make: Callable[[sa.Column[Any]], Any],
) -> _Plan:
    names = compiled.positiontup if compiled.positional else list(dict.fromkeys(compiled.bind_names.values()))
    binds: list[_Bind] = []
    for name in names or []:
        bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if name in given or name in made_by:
            binds.append((name, given.get(name), None, process))
        else:
            value = bind.effective_value
            binds.append((name, None, value if process is None else process(value), None))
    return (compiled.string, bool(compiled.positional), binds, made_by, make)
