"""What the conformance kit (:mod:`tether.drivers.testing`) hands a driver:
a sample desired state of each load-balancing type, a change of each, and
callbacks that record what the driver reports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.common.states import OperatingStatus
from tether.drivers.base import Callbacks

#: A sample desired state for each load-balancing type, parents first.
SAMPLES: dict[str, dict[str, Any]] = {
    "loadbalancer": {"provider": "?", "name": "web", "vip_address": "203.0.113.10", "admin_state_up": True},
    "listener": {"protocol": "HTTP", "protocol_port": 80, "connection_limit": -1, "admin_state_up": True},
    "pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "admin_state_up": True},
    "member": {
        "address": "192.0.2.10",
        "protocol_port": 8080,
        "weight": 1,
        "backup": False,
        "admin_state_up": True,
    },
    "healthmonitor": {
        "type": "HTTP",
        "delay": 5,
        "timeout": 3,
        "max_retries": 3,
        "max_retries_down": 3,
        "admin_state_up": True,
    },
}
PARENTS = {"listener": "loadbalancer", "pool": "loadbalancer", "member": "pool", "healthmonitor": "pool"}
#: An attribute each type can change in an update, and the value it changes to.
UPDATES: dict[str, tuple[str, Any]] = {
    "loadbalancer": ("name", "web-renamed"),
    "listener": ("connection_limit", 5000),
    "pool": ("lb_algorithm", "LEAST_CONNECTIONS"),
    "member": ("weight", 7),
    "healthmonitor": ("delay", 10),
}


class RecordingCallbacks(Callbacks):
    """Keeps what a driver reports, for the checks to read."""

    def __init__(self) -> None:
        self.statuses: dict[str, OperatingStatus] = {}
        self.progress_messages: list[str] = []
        self.counters: dict[str, dict[str, float]] = {}

    def operating_status(self, resource_id: str, status: OperatingStatus) -> None:
        self.statuses[resource_id] = OperatingStatus(status)

    def progress(self, message: str, task_id: str | None = None) -> None:
        self.progress_messages.append(message)

    def stats(self, resource_id: str, counters: Mapping[str, float]) -> None:
        self.counters[resource_id] = dict(counters)
