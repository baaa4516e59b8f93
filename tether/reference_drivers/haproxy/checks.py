"""Health monitors as HAProxy checks.

A pool's monitor becomes lines of its backend (the check's kind, what an
HTTP check asks and expects) and words of each server line (how often, how
many results flip the state, where the check goes). PING is refused at
accept: HAProxy sends no ICMP, only its external checks could, by forking a
``ping`` per check with the privilege to open a raw socket.
"""

from __future__ import annotations

import re

from tether.drivers.base import InvalidConfiguration
from tether.drivers.lbaas_models import Healthmonitor, Member

#: The monitor types haproxy.cfg renders.
TYPES = frozenset({"HTTP", "HTTPS", "TCP", "TLS-HELLO"})

# Characters of a configuration word that need no quoting.
_PLAIN = re.compile(r"^[A-Za-z0-9/._~:@!&()*+,;=%?-]+$")


def backend_lines(monitor: Healthmonitor | None) -> list[str]:
    """What a backend says of its check."""
    if monitor is None:
        return []
    lines = []
    if monitor.type in ("HTTP", "HTTPS"):
        lines.append(f"    option httpchk {monitor.http_method or 'GET'} {word(monitor.url_path or '/')}")
        lines.append(f"    http-check expect {expectation(monitor.expected_codes)}")
    elif monitor.type == "TLS-HELLO":
        lines.append("    option ssl-hello-chk")
    lines.append(f"    timeout check {monitor.timeout}s")
    return lines


def server_words(monitor: Healthmonitor | None, member: Member, proxy: bool) -> str:
    """What a server line says of its check: nothing without a monitor
    (``monitor_address`` and ``monitor_port`` wait for one)."""
    if monitor is None:
        return ""
    words = f" check inter {monitor.delay}s fall {monitor.max_retries_down} rise {monitor.max_retries}"
    if member.monitor_address is not None:
        words += f" addr {member.monitor_address}"
    if member.monitor_port is not None:
        words += f" port {member.monitor_port}"
    if monitor.type == "HTTPS":
        # A check of the member's own TLS: its certificate is the member's business, not the check's.
        words += " check-ssl verify none"
    if proxy:
        words += " check-send-proxy"
    return words


def expectation(codes: str | None) -> str:
    """``http-check expect`` of ``expected_codes``: one code, a list
    (``200,202``), a range (``200-204``) or a list of both."""
    if not codes:
        return "status 200"
    wanted: list[int] = []
    for part in codes.split(","):
        low, _, high = part.partition("-")
        first, last = int(low), int(high or low)
        if last < first:
            raise InvalidConfiguration(
                f"health monitor expected_codes {codes!r}: the range {part} runs backwards; "
                f"write {high}-{low}."
            )
        wanted += [code for code in range(first, last + 1) if code not in wanted]
    if len(wanted) == 1:
        return f"status {wanted[0]}"
    return "rstatus " + word("^(" + "|".join(_patterns(wanted)) + ")$")


def _patterns(codes: list[int]) -> list[str]:
    """``codes`` as few regular expressions, so that a wide range stays a
    short line (``200-299`` is ``2[0-9][0-9]``), in the order given."""
    held = set(codes)
    patterns: list[str] = []
    for code in codes:
        hundred, ten = code // 100 * 100, code // 10 * 10
        if all(c in held for c in range(hundred, hundred + 100)):
            pattern = f"{hundred // 100}[0-9][0-9]"
        elif all(c in held for c in range(ten, ten + 10)):
            pattern = f"{ten // 10}[0-9]"
        else:
            pattern = str(code)
        if pattern not in patterns:
            patterns.append(pattern)
    return patterns


def word(value: str) -> str:
    """``value`` as one word of haproxy.cfg: as is when nothing in it means
    something to HAProxy's parser, else in single quotes, which take every
    character as written (a quote itself ends them, is escaped, and they
    reopen)."""
    if _PLAIN.match(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"
