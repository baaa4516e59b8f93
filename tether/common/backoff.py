"""How long to wait before trying again: one capped exponential backoff.

Every loop in tether that tries again after a failure (a broker connection,
a database that is away, a claim, a callback, a task's retry) waits
``first * 2 ** (failures - 1)`` seconds, at most ``cap``, and with ``jitter``
takes up to that fraction off at random so that processes which failed
together do not all come back together. The loops differ only in the
constants below.
"""

from __future__ import annotations

import dataclasses
import random


@dataclasses.dataclass(frozen=True)
class Backoff:
    first: float
    cap: float
    #: the fraction of each wait that may be taken off at random
    jitter: float = 0.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (1 for the first)."""
        # The exponent is bounded: past the cap it changes nothing, and 2.0 ** 1100 overflows.
        wait = min(self.cap, self.first * 2.0 ** min(max(failures - 1, 0), 64))
        return wait * random.uniform(1.0 - self.jitter, 1.0) if self.jitter else wait


#: a broker connection lost or refused: at most 2 s apart, as tether's RPC
#: connections (``[oslo_messaging_rabbit] rabbit_interval_max``), so that an
#: agent whose network heals consumes its work again as soon as it reports;
#: the jitter spreads the agents that lost the broker together. The first
#: try waits half a second at least, as oslo.messaging's: a cluster that lost
#: a node needs that long to elect the quorum queues' new leaders, and a
#: consumer that came back sooner was seen to hear nothing after.
RECONNECT = Backoff(first=1.0, cap=2.0, jitter=0.5)
#: the database away or locked, for a loop that keeps its broker connection meanwhile
DATABASE = Backoff(first=1.0, cap=30.0)
#: an agent's claim that got no answer (the plugin or the broker away)
CLAIM = Backoff(first=0.5, cap=10.0)
#: a webhook whose receiver did not answer 2xx
CALLBACK = Backoff(first=2.0, cap=300.0, jitter=0.5)
