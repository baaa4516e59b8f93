"""Requests to URLs that callers chose, without becoming their proxy.

A caller who names a callback URL must not be able to make the plugin reach
what only the plugin can reach: its loopback, the private network, the
cloud's metadata service. So a URL's host is resolved and *every* address it
resolves to must be public (or inside ``allowed_networks``); the check is
made when the URL is accepted and again at each delivery, and the
connection goes to the address that was checked, so a DNS answer that
changes in between (rebinding) cannot slip through. TLS still verifies the
certificate against the URL's host name. Redirects are never followed, the
answer is read only up to a bound and within a deadline.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterable, Mapping

from tether.common.exceptions import TetherError

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_ANSWER_BYTES = 64 * 1024


class Refused(TetherError):
    """The URL may not be called; the message says why, for the caller."""


def parse_networks(cidrs: Iterable[str]) -> list[Network]:
    return [ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip()]


def _refusal(address: Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if address.is_multicast or address.is_unspecified:
        return "not a unicast address"
    if not address.is_global:
        return "a private or reserved address"
    return None


def resolve(host: str, port: int, allowed: list[Network]) -> list[Address]:
    """The addresses of ``host``, all of them allowed; else :class:`Refused`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Refused(f"its host {host} does not resolve ({exc})") from exc
    addresses: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address in addresses:
            continue
        reason = _refusal(address)
        if reason is not None and not any(address in net for net in allowed):
            raise Refused(
                f"its host {host} resolves to {address}, {reason}; an operator may allow it in "
                "[callbacks] allowed_networks"
            )
        addresses.append(address)
    if not addresses:
        raise Refused(f"its host {host} has no address")
    return addresses


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    allowed: list[Network],
    context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` at a checked address; the answer's status.

    Raises :class:`Refused` for a URL that may not be called, ``OSError``
    (including timeouts) or ``http.client.HTTPException`` when the receiver
    cannot be reached or answers badly.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    address = resolve(host, port, allowed)[0]
    deadline = time.monotonic() + timeout
    connection: _Pinned
    if parts.scheme == "https":
        connection = _PinnedTLS(host, port, timeout=timeout, context=context or ssl.create_default_context())
    else:
        connection = _Pinned(host, port, timeout=timeout)
    connection.address = str(address)
    try:
        target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
        connection.request("POST", target, body=body, headers=dict(headers))
        answer = connection.getresponse()
        received = 0
        while received < MAX_ANSWER_BYTES and time.monotonic() < deadline:
            chunk = answer.read(min(8192, MAX_ANSWER_BYTES - received))
            if not chunk:
                break
            received += len(chunk)
        return answer.status
    finally:
        connection.close()


class _Pinned(http.client.HTTPConnection):
    """A connection to a checked address; the Host header and TLS (SNI and
    the certificate check) keep the URL's host name."""

    address: str

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedTLS(http.client.HTTPSConnection, _Pinned):
    pass


def describe(url: str) -> str:
    """``url`` for logs: without credentials or query, which may carry secrets."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.hostname or ""
    if ":" in netloc:
        netloc = f"[{netloc}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
