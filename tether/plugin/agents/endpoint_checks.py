"""Checks of the arguments agents send the plugin's RPC endpoint.

oslo.messaging hands an endpoint whatever a caller sent; a malformed call
is answered with MalformedMessage naming the argument, and logged on one
line, instead of failing deep inside with a traceback.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import json
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

from tether.common.exceptions import MalformedMessage
from tether.common.states import MAX_COUNTER_NAME, MAX_COUNTERS, OperatingStatus

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

_F = TypeVar("_F", bound=Callable[..., Any])

#: Longest identifier a call may carry (the database's widest id column).
_MAX_ID = 255
#: Seconds: more than any deadline tether sets, and far below datetime's range.
_MAX_SECONDS = 10 * 365 * 86400
_MAX_COUNTER = 2**31 - 1


def checked(method: _F) -> _F:
    """Answer a malformed call with MalformedMessage, not a traceback in the log."""
    signature = inspect.signature(method)
    expected = ", ".join(name for name in signature.parameters if name not in ("self", "ctxt"))

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as exc:
                raise MalformedMessage(
                    reason=f"RPC call {method.__name__}: {exc}; it takes {expected}"
                ) from exc
            return method(*args, **kwargs)
        except MalformedMessage as exc:
            LOG.warning("refused a malformed RPC call: %s", exc.msg)
            # oslo.messaging sends the original exception to the caller and
            # logs an expected one at debug level only.
            raise oslo_messaging.ExpectedException() from exc

    return cast(_F, wrapper)


def bad(method: str, name: str, wanted: str, value: Any) -> MalformedMessage:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:80]}… ({len(shown)} characters)"
    return MalformedMessage(
        reason=f"RPC call {method}: {name} must be {wanted}, not {type(value).__name__} {shown}"
    )


def identifier(method: str, name: str, value: Any, optional: bool = False) -> None:
    if optional and value is None:
        return
    wanted = f"a string of 1 to {_MAX_ID} characters without control characters"
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID:
        raise bad(method, name, wanted, value)
    if any(ord(c) < 0x20 for c in value) or not encodable(value):
        raise bad(method, name, wanted, value)


def encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def seconds(method: str, name: str, value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= _MAX_SECONDS
    ):
        raise bad(method, name, f"a number of seconds from 0 to {_MAX_SECONDS}", value)
    return float(value)


def text(method: str, name: str, value: Any, longest: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not isinstance(value, str) or len(value) > longest or not encodable(value):
        raise bad(method, name, f"a string of at most {longest} characters", value)


def counter(method: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_COUNTER:
        raise bad(method, name, f"an integer from 1 to {_MAX_COUNTER}", value)


def time(method: str, name: str, value: Any) -> datetime.datetime:
    wanted = "an ISO 8601 time with a UTC offset"
    if not isinstance(value, str) or len(value) > 64:
        raise bad(method, name, wanted, value)
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise bad(method, name, wanted, value) from None
    if parsed.tzinfo is None:
        # Compared with the database's aware times: a naive one would raise.
        raise bad(method, name, wanted, value)
    return parsed


def check_state(state: Any) -> None:
    method = "report_state"
    if not isinstance(state, dict):
        raise bad(method, "state", "a JSON object", state)
    identifier(method, "state.agent_id", state.get("agent_id"))
    time(method, "state.started_at", state.get("started_at"))
    if not isinstance(state.get("host"), str):
        raise bad(method, "state.host", "a string", state.get("host"))
    providers = state.get("providers")
    if not isinstance(providers, list) or not all(isinstance(p, str) for p in providers):
        raise bad(method, "state.providers", "a list of strings", providers)
    for name in ("workers", "in_flight"):
        value = state.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_COUNTER:
            raise bad(method, f"state.{name}", f"an integer from 0 to {_MAX_COUNTER}", value)
    for name in ("statuses", "stats"):
        if not isinstance(state.get(name) or {}, dict):
            raise bad(method, f"state.{name}", "a JSON object", state.get(name))
    audits = state.get("audits", [])
    if not isinstance(audits, list) or not all(isinstance(p, str) for p in audits):
        raise bad(method, "state.audits", "a list of provider names", audits)
    addresses = state.get("addresses") or {}
    if not isinstance(addresses, dict) or not all(
        isinstance(p, str) and isinstance(a, str) and len(a) <= 255 for p, a in addresses.items()
    ):
        raise bad(method, "state.addresses", "an object of {provider: address}", addresses)


#: Most resources one status report may name (agents send at most 2,000).
MAX_STATUS_REPORTED = 5000


def status_reports(reports: Any) -> None:
    """The argument of ``report_status``: by provider, ``statuses`` (resource
    id -> operating status) and ``stats`` (resource id -> counters)."""
    method = "report_status"
    if not isinstance(reports, dict):
        raise bad(method, "reports", 'an object of {provider: {"statuses": …, "stats": …}}', reports)
    named = 0
    for provider, report in reports.items():
        identifier(method, "reports provider", provider)
        if not isinstance(report, dict) or not set(report) <= {"statuses", "stats"}:
            raise bad(method, f"reports[{provider}]", 'an object of "statuses" and "stats"', report)
        statuses, stats = report.get("statuses") or {}, report.get("stats") or {}
        if not isinstance(statuses, dict) or not isinstance(stats, dict):
            raise bad(method, f"reports[{provider}]", "statuses and stats objects by resource id", report)
        for resource_id, status in statuses.items():
            identifier(method, "statuses id", resource_id)
            if status not in OperatingStatus.__members__:
                raise bad(method, "statuses[]", f"one of {', '.join(OperatingStatus)}", status)
        for resource_id, counters in stats.items():
            identifier(method, "stats id", resource_id)
            if not valid_counters(counters):
                raise bad(method, "stats[]", COUNTERS, counters)
        named += len(statuses) + len(stats)
    if named > MAX_STATUS_REPORTED:
        raise bad(method, "reports", f"at most {MAX_STATUS_REPORTED} statuses and stats", named)


COUNTERS = (
    f"an object of at most {MAX_COUNTERS} counters, each named by at most {MAX_COUNTER_NAME} "
    "characters, of finite numbers"
)


def valid_counters(value: Any) -> bool:
    """Counters a resource's ``stats`` may hold (a JSON column refuses NaN)."""
    return (
        isinstance(value, dict)
        and len(value) <= MAX_COUNTERS
        and all(
            isinstance(name, str) and 0 < len(name) <= MAX_COUNTER_NAME and _finite(number)
            for name, number in value.items()
        )
    )


def _finite(number: Any) -> bool:
    if isinstance(number, bool):
        return False
    if isinstance(number, int):
        return abs(number) < 2**63  # math.isfinite raises on a bigger one
    return isinstance(number, float) and math.isfinite(number)


#: Most resources one drift report may name, and the longest difference of one.
MAX_AUDITED = 100_000
MAX_DIFFERENCE = 20_000


def drift_report(audited: Any, drifted: Any, undesired: Any, repair: Any) -> None:
    """The arguments of ``report_drift``, each of the shape the agent sends."""
    method = "report_drift"
    if not isinstance(audited, dict) or len(audited) > MAX_AUDITED:
        raise bad(
            method, "audited", f"a mapping of at most {MAX_AUDITED} resource ids to generations", audited
        )
    for resource_id, generation in audited.items():
        identifier(method, "audited id", resource_id)
        counter(method, "audited generation", generation)
    if not isinstance(drifted, dict) or not set(drifted) <= set(audited):
        raise bad(method, "drifted", "a mapping of audited resource ids to their difference", drifted)
    for difference in drifted.values():
        if not _a_difference(difference):
            raise bad(
                method,
                "drifted[]",
                '{"missing": true} or {"attributes": {name: {"expected": ..., "found": ...}}} '
                f"of at most {MAX_DIFFERENCE} characters",
                difference,
            )
    if not isinstance(undesired, list) or len(undesired) > MAX_AUDITED:
        raise bad(method, "undesired", f"a list of at most {MAX_AUDITED} ids", undesired)
    for resource_id in undesired:
        identifier(method, "undesired id", resource_id)
    if not isinstance(repair, bool) and not (isinstance(repair, list) and set(repair) <= set(drifted)):
        raise bad(method, "repair", "true, false or a list of drifted resource ids", repair)


def _a_difference(value: Any) -> bool:
    if not isinstance(value, dict):
        return False
    if value.get("missing") is True:
        return len(value) == 1
    attributes = value.get("attributes")
    return (
        set(value) == {"attributes"}
        and isinstance(attributes, dict)
        and all(
            isinstance(k, str) and isinstance(v, dict) and set(v) <= {"expected", "found"}
            for k, v in attributes.items()
        )
        and len(json.dumps(value, default=str)) <= MAX_DIFFERENCE
    )
