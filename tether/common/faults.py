"""Fault injection for the chaos tests: off unless ``TETHER_FAULTS`` is set.

``TETHER_FAULTS="relay.before_publish:25"`` makes the process SIGKILL itself
the 25th time it reaches that point. Points:

``relay.before_publish``
    the outbox relay has read committed rows and is about to publish them:
    the plugin dies between the commit and the publish.

Production deployments never set the variable; the check costs one
dictionary lookup.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

LOG = logging.getLogger(__name__)

ENV = "TETHER_FAULTS"


def _parse(spec: str) -> dict[str, int]:
    points = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, count = item.partition(":")
        points[name] = int(count or 1)
    return points


_armed = _parse(os.environ.get(ENV, ""))
_lock = threading.Lock()


def point(name: str) -> None:
    """Die here if a test armed this point and its count ran out."""
    if name not in _armed:
        return
    with _lock:
        _armed[name] -= 1
        if _armed[name] > 0:
            return
    LOG.warning("fault injection: killing this process (pid %d) at %s", os.getpid(), name)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)
