"""What the conformance kit (:mod:`tether.drivers.testing`) hands a driver:
a sample desired state of each load-balancing type (typed models, so a
schema change that breaks one fails type checking), a tree and changes made
of them, callbacks that record what the driver reports, and a way to apply
a change as an agent does. A vendor's own tests may use them too."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from tether.common.states import OperatingStatus
from tether.drivers.base import Callbacks, Change, Driver, InProgress, Resource, Steps
from tether.drivers.lbaas_models import Healthmonitor, Listener, Loadbalancer, Member, Pool
from tether.drivers.models import Model, attributes_of

#: A sample desired state of each load-balancing type, parents first; the
#: kit gives each resource it makes of them fresh ids.
SAMPLES: dict[str, Model] = {
    "loadbalancer": Loadbalancer(
        id="sample",
        project_id="conformance",
        provider="?",
        name="web",
        vip_address="203.0.113.10",
        admin_state_up=True,
    ),
    "listener": Listener(
        id="sample",
        project_id="conformance",
        protocol="HTTP",
        protocol_port=80,
        connection_limit=-1,
        admin_state_up=True,
    ),
    "pool": Pool(
        id="sample",
        project_id="conformance",
        protocol="HTTP",
        lb_algorithm="ROUND_ROBIN",
        admin_state_up=True,
    ),
    "member": Member(
        id="sample",
        project_id="conformance",
        address="192.0.2.10",
        protocol_port=8080,
        weight=1,
        backup=False,
        admin_state_up=True,
    ),
    "healthmonitor": Healthmonitor(
        id="sample",
        project_id="conformance",
        type="HTTP",
        delay=5,
        timeout=3,
        max_retries=3,
        max_retries_down=3,
        admin_state_up=True,
    ),
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


def sample_attributes(type_name: str) -> dict[str, Any]:
    """The attributes of the sample of ``type_name``, as a resource holds them."""
    return attributes_of(SAMPLES[type_name])


def sample_tree(sample: Callable[[str], dict[str, Any]], provider: str) -> Resource:
    """A loadbalancer with one of each child type, every id fresh.

    :param sample: the attributes of each type (:func:`sample_attributes`, or a vendor's own).
    """
    ids = {t: str(uuid.uuid4()) for t in SAMPLES}
    lb = sample("loadbalancer") | {"provider": provider}

    def node(type_name: str, children: tuple[Resource, ...] = ()) -> Resource:
        attributes = lb if type_name == "loadbalancer" else sample(type_name)
        parent = PARENTS.get(type_name)
        return Resource(
            type_name, ids[type_name], "conformance", attributes, ids[parent] if parent else None, children
        )

    pool = node("pool", (node("member"), node("healthmonitor")))
    return node("loadbalancer", (node("listener"), pool))


def make_change(operation: str, resource: Resource, tree: Resource, generation: int = 1) -> Change:
    return Change(
        task_id=str(uuid.uuid4()),
        operation=operation,
        generation=generation,
        attempt=1,
        request_id=None,
        resource=resource,
        tree=tree,
    )


def run(driver: Driver, operation: str, change: Change, limit: float = 120.0) -> None:
    """Apply a change as an agent does: call, run its steps or poll while
    the device works on."""
    answer = getattr(driver, operation)(change)
    if isinstance(answer, Steps):
        for step in answer:
            step.apply()
        return
    deadline = time.monotonic() + limit
    while isinstance(answer, InProgress):
        assert time.monotonic() < deadline, f"{operation} still in progress after {limit:g} s"
        time.sleep(min(answer.poll_after, 0.5))
        answer = driver.poll(change, answer)


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
