"""The drift audit, the agent's side: what each device holds against what it
should hold.

Every ``[agent] audit_interval`` the agent asks each driver that can list its
device (:meth:`tether.drivers.base.Driver.inventory`) what it holds, asks the
plugin what the resources placed on this agent should hold, and reports the
differences (:mod:`tether.plugin.tasks.lifecycle.drift` keeps them). With
``[agent] repair_drift`` the plugin then re-applies each drifted resource.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from typing import Any

from tether.agent.plugin_api import PluginApi
from tether.common.periodic import Periodic
from tether.drivers.base import Driver

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)


def compare(
    desired: Mapping[str, Mapping[str, Any]], held: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], list[str]]:
    """The drift of each desired resource, and the ids held that none desires.

    An attribute is compared only where the device reports it; values are
    compared as JSON carries them (a tuple as a list).
    """
    drifted: dict[str, Any] = {}
    for resource_id, target in desired.items():
        found = held.get(resource_id)
        if found is None:
            drifted[resource_id] = {"missing": True}
            continue
        expected = target.get("attributes") or {}
        found = json.loads(json.dumps(dict(found), default=str))
        differences = {
            name: {"expected": expected[name], "found": value}
            for name, value in found.items()
            if name in expected and expected[name] != value
        }
        if differences:
            drifted[resource_id] = {"attributes": differences}
    return drifted, sorted(set(held) - set(desired))


class Auditor(Periodic):
    """Audits the devices of one agent's drivers every ``interval`` seconds."""

    name = "drift-audit"

    def __init__(
        self, drivers: Mapping[str, Driver], plugin: PluginApi, agent_id: str, interval: float, repair: bool
    ) -> None:
        super().__init__(interval)
        self.drivers = drivers
        self.plugin = plugin
        self.agent_id = agent_id
        self.repair = repair
        self._unsupported = False
        #: the difference each resource had when its repair was asked for
        self._repaired: dict[tuple[str, str], Any] = {}
        self._given_up: set[tuple[str, str]] = set()

    def start(self) -> None:
        if self.interval > 0:
            super().start()

    def tick(self) -> object:
        return self.audit()

    def audit(self) -> dict[str, dict[str, Any]]:
        """One audit of every device that can be listed; what each found."""
        found: dict[str, dict[str, Any]] = {}
        for name, driver in self.drivers.items():
            if not lists_its_device(driver):
                continue
            try:
                report = self._audit(name, driver)
            except Exception:
                LOG.exception("drift audit of the %s device failed", name)
                continue
            if report is not None:
                found[name] = report
        return found

    def _audit(self, name: str, driver: Driver) -> dict[str, Any] | None:
        # What should be there first, then what is: a change that lands in
        # between bumps its resource's generation, which the plugin then
        # does not take the report for; the other order would report it.
        try:
            answer = self.plugin.audit_targets(self.agent_id, name)
        except oslo_messaging.RemoteError as exc:
            if exc.exc_type != "UnsupportedVersion":
                raise
            if not self._unsupported:
                LOG.warning("the plugin does not take drift audits yet (upgrade it); auditing nothing")
            self._unsupported = True
            return None
        self._unsupported = False
        if not answer.get("audit"):
            return None  # another agent audits this shared device
        held = driver.inventory() or {}
        desired: dict[str, Any] = answer.get("resources") or {}
        drifted, undesired = compare(desired, held)
        audited = {resource_id: int(target["generation"]) for resource_id, target in desired.items()}
        repair = self._to_repair(name, drifted) if self.repair else []
        reply = self.plugin.report_drift(self.agent_id, name, audited, drifted, undesired, repair)
        if drifted or undesired:
            LOG.warning(
                "drift audit of the %s device: %d of %d resource(s) differ, %d held that none desires%s",
                name,
                len(drifted),
                len(desired),
                len(undesired),
                f"; repairing {len(reply.get('repairing') or [])}" if self.repair else "",
            )
        return {"audited": audited, "drifted": drifted, "undesired": undesired, **reply}

    def _to_repair(self, name: str, drifted: dict[str, Any]) -> list[str]:
        """The drifted resources to repair: not those whose repair left the
        very same difference (the driver lists them otherwise than it applies
        them, and repairing again would loop for ever)."""
        repair = []
        for resource_id, difference in drifted.items():
            key = (name, resource_id)
            if self._repaired.get(key) == difference:
                if key not in self._given_up:
                    self._given_up.add(key)
                    LOG.error(
                        "%s %s still differs the same way after its repair (%s): the %s driver's "
                        "inventory() seems to list it otherwise than it applies it; not repairing it "
                        "again until the difference changes",
                        name,
                        resource_id,
                        difference,
                        name,
                    )
                continue
            self._repaired[key] = difference
            self._given_up.discard(key)
            repair.append(resource_id)
        for key in [k for k in self._repaired if k[0] == name and k[1] not in drifted]:
            del self._repaired[key]  # as desired again: a later drift may be repaired
            self._given_up.discard(key)
        return repair


def lists_its_device(driver: Driver) -> bool:
    """Does ``driver`` implement :meth:`Driver.inventory`?"""
    return type(driver).inventory is not Driver.inventory
