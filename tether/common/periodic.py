"""A thread that does one pass of some work every few seconds, for ever."""

from __future__ import annotations

import logging
import threading

LOG = logging.getLogger(__name__)


class Periodic:
    """Calls :meth:`tick` every ``interval`` seconds on a daemon thread; a
    failed pass is logged and the next one comes anyway."""

    name = "periodic"
    #: failures of a pass that are outages, not bugs: one warning line each
    #: instead of a traceback
    outages: tuple[type[Exception], ...] = ()

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> object:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except self.outages as exc:
                LOG.warning("%s pass failed, trying again in %.1f s: %s", self.name, self.interval, exc)
            except Exception:
                LOG.exception("%s pass failed", self.name)
