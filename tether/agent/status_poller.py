"""Polling each driver's ``status()``: the operating status and counters of
what its device holds, every ``[agent] status_interval``.

The agent first asks the plugin which roots it reports on (RPC 1.7
``status_targets``): for a shared provider its share of the provider's
roots, so that each root is polled by one live agent and N agents do not
each ask the whole device; for a host-placed one the roots bound to it.
A driver whose ``status()`` takes no roots (written before it did) is
polled whole by one agent of a shared provider. What it answers is sent
like what drivers push from their own threads (:mod:`tether.agent.reports`).

Against a plugin of an earlier release every agent polls its whole device,
as agents of that release did, and its state reports carry the answers.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping

from tether.agent.plugin_api import PluginApi
from tether.agent.reports import Reports
from tether.common import rpc
from tether.common.periodic import Periodic
from tether.drivers.base import Driver

LOG = logging.getLogger(__name__)


class StatusPoller(Periodic):
    """Polls the status of one agent's devices every ``interval`` seconds."""

    name = "status-poll"
    outages = rpc.RECOVERABLE

    def __init__(
        self,
        drivers: Mapping[str, Driver],
        plugin: PluginApi,
        agent_id: str,
        interval: float,
        reports: Reports,
    ) -> None:
        super().__init__(interval)
        self.drivers = drivers
        self.plugin = plugin
        self.agent_id = agent_id
        self.reports = reports
        #: what each driver was last asked about, to log when that changes
        self._asked: dict[str, int | bool] = {}

    def tick(self) -> object:
        return self.poll()

    def poll(self) -> dict[str, list[str] | None]:
        """One poll of every driver that reports status: the roots each was
        asked about (None: its whole device)."""
        asked: dict[str, list[str] | None] = {}
        for name, driver in self.drivers.items():
            if not reports_status(driver):
                continue
            roots = self._roots(name, driver)
            if roots == []:
                continue
            try:
                found, counters = driver.status(roots) if roots is not None else driver.status()
            except Exception:
                LOG.exception("driver %s failed to report status", name)
                continue
            asked[name] = roots
            self._keep(name, found, counters)
        return asked

    def _roots(self, name: str, driver: Driver) -> list[str] | None:
        """The roots to ask ``driver`` about: None for all, [] for none."""
        if not self.plugin.status_reports:
            return None
        answer = self.plugin.status_targets(self.agent_id, name)
        if takes_roots(driver):
            roots = [str(root) for root in answer.get("roots") or []]
            self._note(name, len(roots), f"{len(roots)} root(s)")
            return roots
        whole = bool(answer.get("whole"))
        self._note(name, whole, "the whole device" if whole else "nothing; another agent polls the device")
        return None if whole else []

    def _note(self, name: str, share: int | bool, what: str) -> None:
        if self._asked.get(name) != share:
            LOG.info("status of provider %s: this agent polls %s", name, what)
        self._asked[name] = share

    def _keep(
        self, name: str, found: Mapping[str, object], counters: Mapping[str, Mapping[str, float]]
    ) -> None:
        refused = 0
        for resource_id, status in found.items():
            try:
                self.reports.status(name, resource_id, str(status))
            except ValueError:
                refused += 1
        for resource_id, values in counters.items():
            try:
                self.reports.stats(name, resource_id, values)
            except (TypeError, ValueError):
                refused += 1
        if refused:
            LOG.warning(
                "driver %s: status() answered %d status(es) or counters the plugin cannot take "
                "(an unknown operating status, counters that are not numbers); left out",
                name,
                refused,
            )


def reports_status(driver: Driver) -> bool:
    """Does ``driver`` implement :meth:`Driver.status`?"""
    return type(driver).status is not Driver.status


def takes_roots(driver: Driver) -> bool:
    """Does ``driver.status()`` take the roots to report on (or is it of the
    earlier form, without arguments)?"""
    try:
        parameters = inspect.signature(driver.status).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in parameters)
