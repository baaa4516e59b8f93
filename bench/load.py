"""Load for the plugin's API: closed loop with wrk, open loop at a set rate."""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any

WRK_HINT = "install Debian's wrk (tools/install-system-deps.sh bench does)"


def wrk(
    url: str, seconds: float, connections: int, body: dict[str, Any], threads: int = 1
) -> dict[str, float]:
    """POST ``body`` to ``url`` as fast as ``connections`` keep-alive
    connections allow; wrk, written in C, leaves the CPU to tether."""
    if shutil.which("wrk") is None:
        raise RuntimeError(f"wrk is missing: {WRK_HINT}")
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.TemporaryDirectory() as tmp:
        lua = pathlib.Path(tmp) / "post.lua"
        lua.write_text(script)
        run = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "-s", str(lua), url],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    requests = re.search(r"(\d+) requests in ([\d.]+)(m?s)", run.stdout)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    if not requests:
        raise RuntimeError(f"cannot read wrk's output:\n{run.stdout}\n{run.stderr}")
    duration = float(requests.group(2)) / (1000 if requests.group(3) == "ms" else 1)
    count = int(requests.group(1))
    failed = int(errors.group(1)) if errors else 0
    return {"requests": count, "seconds": duration, "per_s": (count - failed) / duration, "failed": failed}


def open_loop(url: str, rate: float, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    """Send ``rate`` requests a second for ``seconds``, each at its scheduled
    time whether or not earlier ones were answered: the load a population
    of independent clients makes.

    The requests are written as prepared bytes on keep-alive connections
    and only each answer's status line and length are read: an HTTP client
    library spends about a millisecond of CPU per request, which on a
    small machine is taken from the system being measured (wrk, the
    closed-loop load, is C for the same reason)."""
    return asyncio.run(_open_loop(url, rate, seconds, body))


async def _open_loop(url: str, rate: float, seconds: float, body: dict[str, Any]) -> dict[str, float]:
    target = urllib.parse.urlsplit(url)
    payload = json.dumps(body).encode()
    request = (
        f"POST {target.path or '/'} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload
    sender = _Sender(request, target.hostname or "127.0.0.1", target.port or 80, connections=64)
    total = int(rate * seconds)
    start = time.monotonic()
    for i in range(total):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        sender.send()
    await sender.drained(timeout=30)
    took = time.monotonic() - start
    sender.close()
    failed = sender.failed
    return {"requests": total, "seconds": took, "per_s": (total - failed) / took, "failed": failed}


class _Sender:
    """Keep-alive connections, one request in flight on each; a request due
    while all are busy goes out on the first one to be answered."""

    def __init__(self, request: bytes, host: str, port: int, connections: int) -> None:
        self.request, self.host, self.port = request, host, port
        self.limit = connections
        self.idle: list[_Connection] = []
        self.opened: list[_Connection] = []
        self.due = 0
        self.outstanding = 0
        self.failed = 0
        self._settled = asyncio.Event()
        self._opening: set[asyncio.Future[None]] = set()

    def send(self) -> None:
        self.outstanding += 1
        self._settled.clear()
        if self.idle:
            self.idle.pop().write(self.request)
        elif len(self.opened) < self.limit:
            connection = _Connection(self)
            self.opened.append(connection)
            self._opening.add(opening := asyncio.ensure_future(self._open(connection)))
            opening.add_done_callback(self._opening.discard)
        else:
            self.due += 1

    async def _open(self, connection: _Connection) -> None:
        try:
            await asyncio.get_running_loop().create_connection(lambda: connection, self.host, self.port)
        except OSError:
            self.opened.remove(connection)
            self.answered(None, ok=False)
            return
        connection.write(self.request)

    def answered(self, connection: _Connection | None, ok: bool) -> None:
        self.outstanding -= 1
        self.failed += not ok
        if connection is not None:
            if self.due:
                self.due -= 1
                connection.write(self.request)
            else:
                self.idle.append(connection)
        if not self.outstanding:
            self._settled.set()

    def lost(self, connection: _Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)
        if connection in self.opened:
            self.opened.remove(connection)
        if connection.busy:
            self.answered(None, ok=False)
        if self.due and len(self.opened) < self.limit:
            self.due -= 1
            self.outstanding -= 1
            self.send()

    async def drained(self, timeout: float) -> None:
        if self.outstanding:
            await asyncio.wait_for(self._settled.wait(), timeout)

    def close(self) -> None:
        for connection in list(self.opened):
            connection.close()


class _Connection(asyncio.Protocol):
    def __init__(self, sender: _Sender) -> None:
        self.sender = sender
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def write(self, request: bytes) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        length = _CONTENT_LENGTH.search(head)
        size = end + 4 + (int(length.group(1)) if length else 0)
        if len(self.buffer) < size:
            return
        self.buffer = self.buffer[size:]
        self.busy = False
        self.sender.answered(self, ok=head[9:12] == b"202")

    def connection_lost(self, exc: Exception | None) -> None:
        self.sender.lost(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")
