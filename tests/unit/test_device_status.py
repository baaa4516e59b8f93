"""Devices' status outside a task: which agent polls which roots, what the
plugin takes from whom, and a status a driver pushes from its own thread."""

from __future__ import annotations

import datetime
import random
import uuid
from collections.abc import Collection, Mapping
from typing import Any

import oslo_messaging
import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import agent_state, wait_for
from tether.agent.reports import Reports
from tether.agent.service import Agent as AgentService
from tether.agent.status_poller import StatusPoller, takes_roots
from tether.common.states import OperatingStatus
from tether.drivers.base import Callbacks
from tether.plugin.agents import status_polling
from tether.plugin.agents.endpoint import PluginEndpoint
from tether.plugin.db import queries
from tether.plugin.db.models import AgentRecord, ResourceRecord, utcnow
from tether.plugin.service import Plugin
from tether.reference_drivers.noop import NoopDriver

_TYPES = frozenset({"loadbalancer", "listener", "pool", "member", "healthmonitor"})


def _report(endpoint: PluginEndpoint, agent_id: str, providers: list[str], **extra: Any) -> Any:
    return endpoint.report_state({}, state=agent_state(agent_id, providers, **extra))


def _silence(plugin: Plugin, agent_id: str, seconds: float) -> None:
    with plugin.sessionmaker.begin() as session:
        agent = session.get(AgentRecord, agent_id)
        assert agent is not None
        agent.last_heartbeat = utcnow() - datetime.timedelta(seconds=seconds)


def _roots(client: TestClient, count: int, provider: str = "fake") -> list[str]:
    return [client.post("/v1/loadbalancers", json={"provider": provider}).json()["id"] for _ in range(count)]


def _resource(client: TestClient, resource_id: str) -> Any:
    return client.get(f"/v1/loadbalancers/{resource_id}").json()


# Which agent polls which root.


def test_every_root_goes_to_exactly_one_agent_and_each_agent_gets_a_share() -> None:
    roots = [str(uuid.uuid4()) for _ in range(3000)]
    shares = status_polling.assign(roots, ["agent-1", "agent-2", "agent-3"])
    assert sorted(r for share in shares.values() for r in share) == sorted(roots)
    assert all(800 < len(share) < 1200 for share in shares.values()), {a: len(s) for a, s in shares.items()}


def test_only_the_roots_of_an_agent_that_dies_or_joins_move() -> None:
    roots = [str(uuid.uuid4()) for _ in range(2000)]
    before = status_polling.assign(roots, ["a", "b", "c"])
    owner = {root: agent for agent, share in before.items() for root in share}
    # c dies: its roots go to a and b, nothing else moves.
    after = status_polling.assign(roots, ["a", "b"])
    moved = {root for agent, share in after.items() for root in share if owner[root] != agent}
    assert moved == set(before["c"])
    # d joins: it takes roots from each, and no root moves between the others.
    joined = status_polling.assign(roots, ["a", "b", "c", "d"])
    moved = {root for agent, share in joined.items() for root in share if owner[root] != agent}
    assert moved == set(joined["d"]) and all(joined["d"]) and len(joined["d"]) > 300


def test_the_shares_a_plugin_remembers_follow_the_live_agents_and_the_roots() -> None:
    shares = status_polling.RootShares()
    roots = [str(uuid.uuid4()) for _ in range(500)]
    for agents in (["a", "b"], ["a", "b", "c"], ["b", "c"]):
        expected = status_polling.assign(roots, agents)
        for agent in agents:
            assert shares.share("fake", roots, agents, agent) == sorted(expected[agent])
        roots = roots[50:] + [str(uuid.uuid4()) for _ in range(50)]  # some deleted, some created
    assert shares.share("fake", roots, ["b", "c"], "a") == []  # not live: nothing


def test_each_live_agent_polls_its_share_and_a_dead_agents_roots_move_to_the_others(
    client: TestClient, plugin: Plugin
) -> None:
    endpoint = plugin.pipeline.endpoint
    roots = _roots(client, 30)
    for agent_id in ("agent-1", "agent-2", "agent-3"):
        _report(endpoint, agent_id, ["noop", "fake"])
    _report(endpoint, "agent-noop", ["noop"])
    answers = {a: endpoint.status_targets({}, a, "fake") for a in ("agent-1", "agent-2", "agent-3")}
    shares = {a: set(answer["roots"]) for a, answer in answers.items()}
    assert sorted(r for share in shares.values() for r in share) == sorted(roots)
    assert [a for a, answer in answers.items() if answer["whole"]] == [status_polling.owner("fake", answers)]
    assert endpoint.status_targets({}, "agent-noop", "fake") == {"roots": [], "whole": False}
    # agent-3 falls silent for agent_down_time: its roots go to the others, theirs stay.
    _silence(plugin, "agent-3", plugin.conf.plugin.agent_down_time + 1)
    after = {a: set(endpoint.status_targets({}, a, "fake")["roots"]) for a in ("agent-1", "agent-2")}
    assert after["agent-1"] | after["agent-2"] == set(roots)
    assert shares["agent-1"] <= after["agent-1"] and shares["agent-2"] <= after["agent-2"]
    assert endpoint.status_targets({}, "agent-3", "fake") == {"roots": [], "whole": False}


def _host_placed(plugin: Plugin) -> PluginEndpoint:
    """The plugin's endpoint, to which agents report ``fake`` as a host-placed provider."""
    return _HostPlaced(plugin.sessionmaker, plugin.policy, plugin.agents, plugin.providers)


class _HostPlaced(PluginEndpoint):
    def report_state(self, ctxt: Any, state: dict[str, Any]) -> dict[str, Any]:
        declared = {"fake": {"placement": "host", "resource_types": sorted(_TYPES)}}
        return super().report_state(ctxt, state | {"drivers": state["drivers"] | declared})


def _bind(plugin: Plugin, root_id: str, agent_id: str) -> None:
    with plugin.sessionmaker.begin() as session:
        root = session.get(ResourceRecord, root_id)
        assert root is not None
        root.agent_id = agent_id


def test_a_host_placed_provider_is_polled_by_each_agent_for_the_trees_bound_to_it(
    client: TestClient, plugin: Plugin
) -> None:
    endpoint = _host_placed(plugin)
    mine, theirs = _roots(client, 2)
    _bind(plugin, mine, "agent-1")
    _bind(plugin, theirs, "agent-2")
    for agent_id in ("agent-1", "agent-2"):
        _report(endpoint, agent_id, ["fake"])
    assert endpoint.status_targets({}, "agent-1", "fake") == {"roots": [mine], "whole": True}
    answer = endpoint.report_status(
        {}, "agent-1", {"fake": {"statuses": {mine: "DEGRADED", theirs: "OFFLINE"}}}
    )
    assert answer == {
        "refused": {"fake": {theirs: "its tree is bound to agent agent-2, not this one"}},
        "busy": {},
    }
    assert (_resource(client, mine)["operating_status"], _resource(client, theirs)["operating_status"]) == (
        "DEGRADED",
        "UNKNOWN",
    )


# What the plugin takes from whom.


def test_a_report_on_what_the_agent_does_not_serve_is_refused_with_the_reason_and_the_rest_applied(
    client: TestClient, plugin: Plugin
) -> None:
    endpoint = plugin.pipeline.endpoint
    (fake,) = _roots(client, 1)
    (noop,) = _roots(client, 1, "noop")
    _report(endpoint, "agent-1", ["fake"])
    reports = {
        "fake": {
            "statuses": {fake: "DEGRADED", noop: "OFFLINE", "unknown": "ONLINE"},
            "stats": {fake: {"sessions": 7}},
        },
        "noop": {"statuses": {noop: "OFFLINE"}},
    }
    answer = endpoint.report_status({}, "agent-1", reports)
    assert answer == {
        "refused": {
            "fake": {noop: "it belongs to provider noop, not fake", "unknown": "no such resource"},
            "noop": {noop: "it belongs to provider noop, which this agent does not serve"},
        },
        "busy": {},
    }
    body = _resource(client, fake)
    assert (body["operating_status"], body["stats"]) == ("DEGRADED", {"sessions": 7})
    assert _resource(client, noop)["operating_status"] == "UNKNOWN"
    # Before its first state report an agent is nobody.
    assert endpoint.report_status({}, "agent-9", {"fake": {"statuses": {fake: "OFFLINE"}}})["refused"] == {
        "fake": {fake: "the agent has not reported its state yet"}
    }


@pytest.mark.parametrize(
    ("reports", "named"),
    [
        ([], "reports must be"),
        ({"fake": {"statuses": {"r": "SLEEPY"}}}, "statuses[] must be one of ONLINE"),
        ({"fake": {"stats": {"r": {"sessions": float("inf")}}}}, "stats[] must be an object of at most 100"),
        ({"fake": {"stats": {"r": {"x" * 65: 1}}}}, "stats[] must be"),
        ({"fake": {"health": {}}}, 'reports[fake] must be an object of "statuses" and "stats"'),
        ({"fake": {"statuses": {f"r{i}": "ONLINE" for i in range(5001)}}}, "at most 5000"),
    ],
)
def test_a_malformed_status_report_is_refused_naming_what_is_wrong(
    plugin: Plugin, reports: Any, named: str
) -> None:
    with pytest.raises(oslo_messaging.ExpectedException) as raised:
        plugin.pipeline.endpoint.report_status({}, "agent-1", reports)
    assert named in raised.value.__cause__.msg  # type: ignore[union-attr]


def test_a_tree_another_transaction_holds_is_handed_back_to_send_again(
    client: TestClient, plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = plugin.pipeline.endpoint
    busy, free = _roots(client, 2)
    _report(endpoint, "agent-1", ["fake"])
    real = queries.lock_trees
    monkeypatch.setattr(queries, "lock_trees", lambda s, roots, **kw: real(s, set(roots) - {busy}, **kw))
    answer = endpoint.report_status({}, "agent-1", {"fake": {"statuses": {busy: "OFFLINE", free: "OFFLINE"}}})
    assert answer == {"refused": {}, "busy": {"fake": [busy]}}
    assert [_resource(client, r)["operating_status"] for r in (busy, free)] == ["UNKNOWN", "OFFLINE"]


def test_a_state_report_of_an_earlier_release_still_carries_statuses_in_its_scope(
    client: TestClient, plugin: Plugin
) -> None:
    endpoint = plugin.pipeline.endpoint
    (fake,) = _roots(client, 1)
    (noop,) = _roots(client, 1, "noop")
    answer = _report(
        endpoint,
        "agent-old",
        ["fake"],
        statuses={fake: "DEGRADED", noop: "OFFLINE"},
        stats={fake: {"sessions": 2, "bad": float("nan")}},
    )
    assert answer["status_reports"] is True  # this plugin takes them by report_status
    assert _resource(client, fake)["operating_status"] == "DEGRADED"
    assert _resource(client, fake).get("stats") is None  # counters it cannot store are left out
    assert _resource(client, noop)["operating_status"] == "UNKNOWN"


# The agent's side: what it asks its drivers about.


class _PluginApi:
    timeout = 1.0

    def __init__(self, answer: dict[str, Any], status_reports: bool = True) -> None:
        self.answer = answer
        self.status_reports = status_reports

    def status_targets(self, agent_id: str, provider: str) -> dict[str, Any]:
        return self.answer


class _Device(NoopDriver):
    def status(
        self, roots: Collection[str] | None = None
    ) -> tuple[Mapping[str, OperatingStatus], Mapping[str, Mapping[str, float]]]:
        return {r: OperatingStatus.ONLINE for r in roots or ["everything"]}, {"r1": {"sessions": 1}}


class _OldDevice(NoopDriver):
    """A driver written before status() took roots."""

    def status(self) -> tuple[Mapping[str, OperatingStatus], Mapping[str, Mapping[str, float]]]:  # type: ignore[override]
        return {"everything": OperatingStatus.DEGRADED}, {}


def _poller(conf: cfg.ConfigOpts, plugin: _PluginApi) -> tuple[StatusPoller, Reports]:
    reports = Reports()
    drivers = {
        "new": _Device(conf, Callbacks()),
        "old": _OldDevice(conf, Callbacks()),
        "noop": NoopDriver(conf, Callbacks()),
    }
    return StatusPoller(drivers, plugin, "agent-1", 10, reports), reports  # type: ignore[arg-type]


def test_a_driver_is_asked_about_its_share_of_roots_and_one_of_the_earlier_form_only_by_one_agent(
    conf: cfg.ConfigOpts,
) -> None:
    assert takes_roots(_Device(conf, Callbacks())) and not takes_roots(_OldDevice(conf, Callbacks()))
    poller, reports = _poller(conf, _PluginApi({"roots": ["r1", "r2"], "whole": False}))
    # noop implements no status(): not polled.
    assert poller.poll() == {"new": ["r1", "r2"]}
    assert reports.take_device() == {
        ("statuses", "new", "r1"): "ONLINE",
        ("statuses", "new", "r2"): "ONLINE",
        ("stats", "new", "r1"): {"sessions": 1.0},
    }
    poller, reports = _poller(conf, _PluginApi({"roots": [], "whole": True}))
    assert poller.poll() == {"old": None}
    assert reports.take_device() == {("statuses", "old", "everything"): "DEGRADED"}


def test_against_a_plugin_of_an_earlier_release_every_agent_polls_its_whole_device(
    conf: cfg.ConfigOpts,
) -> None:
    poller, reports = _poller(conf, _PluginApi({}, status_reports=False))
    assert poller.poll() == {"new": None, "old": None}
    assert reports.take_flat()[0] == {"everything": "DEGRADED"}  # the newer driver's went first


# The whole pipeline in one process.


def test_a_status_a_driver_pushes_from_its_own_thread_reaches_the_resource_within_a_second(
    client: TestClient, pipeline: list[AgentService]
) -> None:
    metadata = {"fake.push_status": "DEGRADED", "fake.push_after_ms": "1500", "fake.stats": "sessions=3"}
    lb = client.post("/v1/loadbalancers", json={"provider": "fake", "metadata": metadata}).json()
    # Reported during the call, the status comes with the task's result.
    active = wait_for(lambda: (b := _resource(client, lb["id"]))["provisioning_status"] == "ACTIVE" and b)
    assert active["operating_status"] == "ONLINE"
    pushed = wait_for(lambda: (b := _resource(client, lb["id"]))["operating_status"] == "DEGRADED" and b, 5)
    assert pushed["stats"] == {"sessions": 3.0}
    # Not with the state reports: the plugin takes statuses by report_status.
    assert all(agent.plugin.status_reports for agent in pipeline)


def test_the_agents_of_a_shared_device_poll_each_root_once_between_them(
    client: TestClient, pipeline: list[AgentService]
) -> None:
    roots = _roots(client, 12)
    wait_for(lambda: all(_resource(client, r)["provisioning_status"] == "ACTIVE" for r in roots))
    asked = [agent.status_poller.poll().get("fake") or [] for agent in pipeline]
    assert sorted(r for share in asked for r in share) == sorted(roots)


def test_roots_are_shared_out_the_same_whatever_the_order_of_the_agents() -> None:
    roots = [str(uuid.uuid4()) for _ in range(100)]
    agents = [f"agent-{i}" for i in range(5)]
    shuffled = random.sample(agents, len(agents))
    assert status_polling.assign(roots, agents) == {
        a: status_polling.assign(roots, shuffled)[a] for a in agents
    }
