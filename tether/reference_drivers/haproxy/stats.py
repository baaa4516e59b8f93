"""Reading operating status and counters from HAProxy's ``show stat`` CSV."""

from __future__ import annotations

from collections.abc import Mapping

from tether.common.states import OperatingStatus


def read_stats(
    lb_id: str,
    rows: list[dict[str, str]],
    statuses: dict[str, OperatingStatus],
    counters: dict[str, dict[str, float]],
) -> None:
    for row in rows:
        name, kind = row.get("pxname", ""), row.get("svname", "")
        if kind == "FRONTEND":
            statuses[name] = (
                OperatingStatus.ONLINE if row.get("status") == "OPEN" else OperatingStatus.OFFLINE
            )
            counters[name] = _counters(row)
        elif kind == "BACKEND":
            counters[name] = _counters(row)
        elif name and kind:
            state = row.get("status", "")
            statuses[kind] = (
                OperatingStatus.ONLINE
                if state.startswith("UP")
                else OperatingStatus.NO_MONITOR
                if state == "no check"
                else OperatingStatus.OFFLINE
            )
            counters[kind] = _counters(row)
    members_by_pool: dict[str, list[OperatingStatus]] = {}
    for row in rows:
        if row.get("svname") not in ("FRONTEND", "BACKEND") and row.get("svname") in statuses:
            members_by_pool.setdefault(row["pxname"], []).append(statuses[row["svname"]])
    for pool, found in members_by_pool.items():
        up = sum(s in (OperatingStatus.ONLINE, OperatingStatus.NO_MONITOR) for s in found)
        statuses[pool] = (
            OperatingStatus.ONLINE
            if up == len(found)
            else OperatingStatus.OFFLINE
            if up == 0
            else OperatingStatus.DEGRADED
        )
    statuses[lb_id] = OperatingStatus.ONLINE


def _counters(row: Mapping[str, str]) -> dict[str, float]:
    return {
        key: float(row.get(field) or 0)
        for key, field in (
            ("active_connections", "scur"),
            ("total_connections", "stot"),
            ("bytes_in", "bin"),
            ("bytes_out", "bout"),
        )
    }
