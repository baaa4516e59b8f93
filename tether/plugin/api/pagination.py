"""Query parameters of list endpoints: filters, ``limit`` and ``marker``."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from tether.common.exceptions import InvalidInput

PAGING = ("limit", "marker")


@dataclasses.dataclass(frozen=True)
class ListQuery:
    filters: dict[str, Any]
    limit: int
    marker: str | None


def parse(
    params: Mapping[str, str], allowed: Mapping[str, str], default_limit: int, max_limit: int
) -> ListQuery:
    """Read filters and paging from query parameters.

    :param allowed: query parameter name -> the column it filters on.
    :raises InvalidInput: for an unknown parameter or a bad limit.
    """
    unknown = sorted(set(params) - set(allowed) - set(PAGING))
    if unknown:
        raise InvalidInput(
            f"Unknown query parameter(s) {', '.join(unknown)}; accepted: "
            f"{', '.join(sorted(set(allowed) | set(PAGING)))}."
        )
    filters = {allowed[k]: v for k, v in params.items() if k in allowed}
    limit = default_limit
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            limit = 0
        if not 1 <= limit <= max_limit:
            raise InvalidInput(f"limit must be an integer from 1 to {max_limit}.")
    return ListQuery(filters, limit, params.get("marker") or None)


def next_link(path: str, params: Mapping[str, str], rows: list[Any], limit: int) -> list[dict[str, str]]:
    if len(rows) < limit:
        return []
    query = dict(params) | {"marker": rows[-1].id, "limit": str(limit)}
    return [{"rel": "next", "href": f"{path}?{urllib.parse.urlencode(query)}"}]
