"""Claims: one attempt at a time, fenced, bounded."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.unit.conftest import claim, finish
from tether.plugin.db.models import Task
from tether.plugin.service import Plugin
from tether.plugin.tasks import lifecycle


def _task(client: TestClient) -> Any:
    return client.post("/v1/loadbalancers", json={"provider": "noop"}).json()


def test_a_claim_moves_the_task_to_running_with_attempt_one(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    answer = claim(plugin, lb["task"]["id"], agent_id="agent-a")
    assert answer == {"run": True, "attempt": 1, "max_attempts": 3}
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["agent_id"], task["attempt"]) == ("RUNNING", "agent-a", 1)
    assert [h["agent_id"] for h in task["history"]] == ["agent-a"]


def test_the_same_claim_retried_is_the_same_attempt(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    args = {
        "task_id": lb["task"]["id"],
        "agent_id": "a",
        "claim_id": "c1",
        "redelivered": False,
        "driver_timeout": 10.0,
    }
    assert plugin.pipeline.endpoint.claim({}, **args)["attempt"] == 1
    assert plugin.pipeline.endpoint.claim({}, **args)["attempt"] == 1


def test_a_finished_task_is_skipped(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    finish(plugin, lb["task"]["id"])
    answer = claim(plugin, lb["task"]["id"], redelivered=True)
    assert answer["run"] is False
    assert "already SUCCEEDED" in answer["reason"]


def test_a_second_copy_of_a_running_task_is_skipped(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    claim(plugin, lb["task"]["id"], agent_id="agent-a")
    answer = claim(plugin, lb["task"]["id"], agent_id="agent-b")
    assert answer["run"] is False
    assert "running on agent agent-a" in answer["reason"]


def test_a_redelivery_takes_over_and_closes_the_earlier_attempt(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    claim(plugin, lb["task"]["id"], agent_id="agent-a")
    assert claim(plugin, lb["task"]["id"], agent_id="agent-b", redelivered=True)["attempt"] == 2
    history = client.get(f"/v1/tasks/{lb['task']['id']}").json()["history"]
    assert [(h["agent_id"], h["outcome"], h["redelivered"]) for h in history] == [
        ("agent-a", "ABANDONED", False),
        ("agent-b", None, True),
    ]
    assert history[0]["error"]["message"] == "agent agent-a died during attempt 1"


def test_a_task_whose_agents_keep_dying_fails_after_max_attempts(client: TestClient, plugin: Plugin) -> None:
    lb = _task(client)
    for agent in ("a", "b", "c"):
        assert claim(plugin, lb["task"]["id"], agent_id=agent, redelivered=True)["run"]
    answer = claim(plugin, lb["task"]["id"], agent_id="d", redelivered=True)
    assert answer["run"] is False
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert task["state"] == "FAILED"
    assert task["error"] == {"type": "AgentLost", "message": "agent c died during attempt 3 (attempt 3 of 3)"}
    resource = client.get(f"/v1/loadbalancers/{lb['id']}").json()
    assert (resource["provisioning_status"], resource["last_error"]) == ("ERROR", task["error"]["message"])


def test_a_restarted_agent_gets_its_running_tasks_dispatched_again(
    client: TestClient, plugin: Plugin
) -> None:
    lb = _task(client)
    claim(plugin, lb["task"]["id"], agent_id="agent-a")
    answer = plugin.pipeline.endpoint.resync({}, agent_id="agent-a", started_at="2999-01-01T00:00:00+00:00")
    assert answer == {"redispatched": [lb["task"]["id"]]}
    task = client.get(f"/v1/tasks/{lb['task']['id']}").json()
    assert (task["state"], task["attempt"]) == ("PENDING", 1)
    assert task["history"][0]["outcome"] == "ABANDONED"
    # A claim after the restart starts attempt 2 at once: no backoff.
    assert claim(plugin, lb["task"]["id"], agent_id="agent-a")["attempt"] == 2


def _claim_for(plugin: Plugin, task_id: str, agent_id: str, published_for: int, redelivered: bool) -> Any:
    claim = {
        "task_id": task_id,
        "agent_id": agent_id,
        "claim_id": f"{agent_id}-{published_for}-{redelivered}",
        "redelivered": redelivered,
        "driver_timeout": 60.0,
        "published_for": published_for,
    }
    return plugin.pipeline.endpoint.claim_batch({}, claims=[claim])[0]


def test_a_redelivered_copy_of_an_older_attempts_message_does_not_take_over(
    client: TestClient, plugin: Plugin
) -> None:
    # Agent a was declared dead (attempt 1 retried, attempt 2 running on b)
    # before the broker closed its connection: then a's delivery of the
    # first message comes back, redelivered, to c.
    task_id = _task(client)["task"]["id"]
    assert _claim_for(plugin, task_id, "a", 1, False)["attempt"] == 1
    with plugin.sessionmaker.begin() as session:
        task = session.get(Task, task_id)
        assert task is not None
        lifecycle.abandon(session, plugin.policy, task, "AgentLost", "agent a died during attempt 1")
    assert _claim_for(plugin, task_id, "b", 2, False)["attempt"] == 2
    stale = _claim_for(plugin, task_id, "c", 1, True)
    assert stale["run"] is False and "published for attempt 1" in stale["reason"], stale
    task_view = client.get(f"/v1/tasks/{task_id}").json()
    assert (task_view["state"], task_view["agent_id"], task_view["attempt"]) == ("RUNNING", "b", 2)
    # b's own delivery coming back does mean b is gone.
    assert _claim_for(plugin, task_id, "c", 2, True)["attempt"] == 3


def test_a_redelivery_in_the_same_batch_as_the_first_claim_fences_that_attempt_off(
    client: TestClient, plugin: Plugin
) -> None:
    # Agent a claims and dies at once; its message comes back to b before
    # a's claim was even decided: both claims arrive in one batch.
    task_id = _task(client)["task"]["id"]
    first = {
        "task_id": task_id,
        "agent_id": "a",
        "claim_id": "ca",
        "redelivered": False,
        "driver_timeout": 60.0,
    }
    again = {**first, "agent_id": "b", "claim_id": "cb", "redelivered": True}
    answers = plugin.pipeline.endpoint.claim_batch({}, claims=[first, again])
    assert [a["attempt"] for a in answers] == [1, 2]
    task = client.get(f"/v1/tasks/{task_id}").json()
    assert (task["state"], task["agent_id"], task["attempt"]) == ("RUNNING", "b", 2)
    history = {h["attempt"]: h for h in task["history"]}
    assert (
        history[1]["outcome"] == "ABANDONED"
        and "agent a died during attempt 1" in history[1]["error"]["message"]
    )
    assert history[2]["outcome"] is None and history[2]["agent_id"] == "b"
