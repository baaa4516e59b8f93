"""Several producers for a baseline, so no single confirm round trip bounds it.

A producer that commits a task and then waits for the broker's confirm of
its message, one task at a time, is bound by that round trip however idle
the machine is. The baselines' "plugins" run ``producers`` such loops in
threads instead, each with its own database and broker connection (the
waits release the GIL), taking tasks from one shared count.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Callable

from bench.baselines import BaselineError

#: producer threads by default: enough to keep the two cores busy while
#: each waits for its commit's fsync and its publish's confirm
PRODUCERS = 8

Sender = Callable[[], contextlib.AbstractContextManager[Callable[[], None]]]


def run(producers: int, tasks: int, deadline: float, sender: Sender) -> None:
    """Call the send function each thread's ``sender()`` yields ``tasks`` times in all.

    :raises BaselineError: the deadline passed, or a producer failed.
    """
    counter = itertools.count()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            with sender() as send:
                # itertools.count's next() is atomic under the GIL.
                while next(counter) < tasks and not errors:
                    send()
                    if time.monotonic() > deadline:
                        raise BaselineError(f"timed out producing {tasks} tasks")
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            errors.append(exc)

    threads = [threading.Thread(target=loop, name=f"producer-{n}") for n in range(max(1, producers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        if isinstance(errors[0], BaselineError):
            raise errors[0]
        raise BaselineError(f"a producer failed: {errors[0]!r}") from errors[0]
