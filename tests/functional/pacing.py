"""Load at a steady rate for the functional tests."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable


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
