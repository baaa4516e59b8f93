"""Load at a steady rate, and waiting for what must happen, for the functional tests."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable
from typing import Any


def steady(count: int, seconds: float, send: Callable[[int], None], senders: int = 8) -> None:
    """Call ``send(i)`` for i in ``range(count)``, request i at its slot of
    ``seconds`` (not as fast as possible), from ``senders`` threads; return
    once every call returned, raising the first error."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(senders) as pool:
        futures = []
        for i in range(count):
            delay = start + i * seconds / count - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, i))
        for future in futures:
            future.result()


def eventually(
    predicate: Callable[[], Any], timeout: float, what: str, detail: Callable[[], str] = str
) -> Any:
    """``predicate()``'s first true answer within ``timeout`` seconds; else
    fail naming ``what``, with ``detail()`` (the daemons' logs, say)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g} s: {what}\n{detail()}")
