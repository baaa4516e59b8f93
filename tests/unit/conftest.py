"""Unit-test fixtures: a real plugin and real agents on SQLite and kombu's
in-memory transport, inside the test process."""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from kombu.transport import memory
from oslo_config import cfg

from tether.agent import driver_manager
from tether.agent import service as agent_service
from tether.common import config, messages, rpc
from tether.common.exceptions import ConfigError
from tether.common.states import Operation, Outcome
from tether.plugin import opts as plugin_opts
from tether.plugin.db.models import utcnow
from tether.plugin.service import Plugin

# An idle oslo.messaging RPC listener waits for messages in spells that grow
# to seconds, and stopping its server waits for the current spell to end: a
# second of the teardown of every test whose plugin heard an agent. The
# tests' listeners look more often instead; what they receive is the same.
# (Imported after tether, which quiets what eventlet's import warns about.)
importlib.import_module("oslo_messaging._drivers.amqpdriver").ACK_REQUEUE_EVERY_SECONDS_MAX = 0.05


@pytest.fixture(autouse=True)
def _fresh_memory_broker() -> Iterator[None]:
    # kombu's memory transport keeps queues in class attributes, shared by
    # every connection in the process; start each test with an empty broker.
    memory.Channel.queues = {}
    memory.Transport.global_state.clear()
    yield
    memory.Channel.queues = {}
    memory.Transport.global_state.clear()


@pytest.fixture
def conf(tmp_path: Any) -> Iterator[cfg.ConfigOpts]:
    # oslo.messaging reads some options from the global object only, so the
    # tests use it as the daemons do, and reset it after each test.
    conf = cfg.CONF
    config.register_opts(conf)
    plugin_opts.register_opts(conf)
    agent_service.register_opts(conf)
    driver_manager.register_driver_opts(conf, ["noop", "fake"])
    conf([], project="tether", default_config_files=[])
    rpc.register_opts(conf)
    conf.set_override("transport_url", "memory://")
    conf.set_override("state_path", str(tmp_path))
    conf.set_override("providers", ["noop", "fake"], group="agent")
    conf.set_override("report_interval", 0.2, group="agent")
    conf.set_override("relay_interval", 0.05, group="plugin")
    conf.set_override("reaper_interval", 0.2, group="plugin")
    yield conf
    conf.reset()


def make_plugin(conf: cfg.ConfigOpts) -> Plugin:
    """A plugin whose relay and result consumer are not running, though it
    has listened to agents long enough to judge their silence."""
    plugin = Plugin(conf, migrate=True)
    # As tether-allinone's plugin does: the drivers its agents will declare.
    plugin.providers.assume(declarations(["noop", "fake"]))
    plugin.pipeline.traffic.connected_since = time.monotonic() - plugin.agents.hearing_time
    return plugin


@pytest.fixture
def plugin(conf: cfg.ConfigOpts) -> Iterator[Plugin]:
    plugin = make_plugin(conf)
    yield plugin
    # Its database connections: a thousand tests' worth would run out of descriptors.
    plugin.dispose()


@pytest.fixture
def client(plugin: Plugin) -> Iterator[TestClient]:
    with TestClient(plugin.app) as test_client:
        yield test_client


@pytest.fixture
def pipeline(plugin: Plugin, conf: cfg.ConfigOpts) -> Iterator[list[agent_service.Agent]]:
    """The plugin's relay and result consumer, and two agents, all running."""
    agents = [agent_service.Agent(conf, agent_id=f"agent-{i}") for i in (1, 2)]
    plugin.start()
    for agent in agents:
        agent.start()
    yield agents
    for agent in agents:
        agent.stop()
    plugin.stop()


@pytest.fixture
def claim_server(plugin: Plugin) -> Iterator[Plugin]:
    """The plugin with its claims and results loop answering claims requests."""
    plugin.pipeline.traffic.start()
    assert plugin.pipeline.traffic.connected.wait(5)
    yield plugin
    plugin.pipeline.traffic.stop()


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout} s")


def accepted(client: TestClient, collection: str, body: dict[str, Any]) -> Any:
    """POST ``body`` to ``collection``, which must answer 202; the answer."""
    response = client.post(f"/v1/{collection}", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def task_view(client: TestClient, task_id: str) -> Any:
    return client.get(f"/v1/tasks/{task_id}").json()


def declarations(providers: list[str]) -> dict[str, Any]:
    """What agents serving ``providers`` declare of their drivers (those installed)."""
    declared = {}
    for name in providers:
        with contextlib.suppress(ConfigError):
            declared[name] = driver_manager.declaration(driver_manager.load_driver_class(name))
    return declared


def agent_state(agent_id: str, providers: list[str], **extra: Any) -> dict[str, Any]:
    """What an agent says of itself in a state report."""
    return {
        "agent_id": agent_id,
        "host": "h",
        "providers": providers,
        "version": "t",
        "workers": 1,
        "in_flight": 0,
        "started_at": utcnow().isoformat(),
        "drivers": declarations(providers),
    } | extra


def report(plugin: Plugin, agent_id: str, providers: list[str], **extra: Any) -> Any:
    """``agent_id``'s state report, as the plugin's RPC endpoint takes it."""
    return plugin.pipeline.endpoint.report_state({}, state=agent_state(agent_id, providers, **extra))


def claim(plugin: Plugin, task_id: str, agent_id: str = "test-agent", redelivered: bool = False) -> Any:
    """Claim a task as an agent would, through the plugin's RPC endpoint."""
    return plugin.pipeline.endpoint.claim(
        {},
        task_id=task_id,
        agent_id=agent_id,
        claim_id=f"claim-{time.monotonic()}",
        redelivered=redelivered,
        driver_timeout=60.0,
    )


def finish(plugin: Plugin, task_id: str, outcome: str = "SUCCEEDED", **result: Any) -> None:
    """Stand in for an agent: claim the task, then record its result."""
    answer = claim(plugin, task_id)
    assert answer["run"], answer
    plugin.pipeline.results.recorder.record(
        [
            messages.Result(
                task_id=task_id,
                attempt=answer["attempt"],
                outcome=Outcome(outcome),
                agent_id="test-agent",
                **result,
            )
        ]
    )


def sample_work(provider: str) -> messages.Work:
    """A valid work message: create loadbalancer ``r`` with ``provider``."""
    resource = messages.DesiredResource(
        type="loadbalancer",
        id="r",
        project_id="p",
        provisioning_status="PENDING_CREATE",
        applied_generation=0,
        attributes={},
    )
    task = messages.WorkTask(
        id="t",
        operation=Operation.CREATE,
        resource_type="loadbalancer",
        resource_id="r",
        root_id="r",
        generation=1,
        attempt=1,
        project_id="p",
        provider=provider,
    )
    return messages.Work(task=task, resource=resource, tree=resource)
