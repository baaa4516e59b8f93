"""What the API answers, as cliff's formatters take it: a table shows a
nested value in brief, ``-f json`` and ``-f yaml`` keep it whole."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from cliff.columns import FormattableColumn


class Nested(FormattableColumn[Any]):
    """A list or mapping inside an answer."""

    def human_readable(self) -> str:
        value = self._value
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            # Attempts and steps: their outcomes say what a table can.
            outcomes = ", ".join(str(v.get("outcome") or v.get("state") or "") for v in value)
            return f"{len(value)} item(s): {outcomes}" if outcomes.strip(", ") else f"{len(value)} item(s)"
        return json.dumps(value)


def cell(value: Any) -> Any:
    return Nested(value) if isinstance(value, (dict, list)) else value


def one(answer: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """A ShowOne's columns and values from one object of the API."""
    return tuple(answer), tuple(cell(v) for v in answer.values())


def many(
    items: Sequence[Mapping[str, Any]], columns: Sequence[str], parsed_args: Any
) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
    """A Lister's columns and rows: ``columns``, unless ``-c`` picks among
    every field the items have."""
    names = list(columns)
    if parsed_args.columns:
        names += sorted({k for item in items for k in item} - set(columns))
    return tuple(names), [tuple(cell(item.get(c)) for c in names) for item in items]
