"""Claims of concurrent workers travel together: one call, one transaction."""

from __future__ import annotations

import threading
import warnings
from typing import Any
from unittest import mock

from fastapi.testclient import TestClient
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.agent.plugin_api import ClaimFailed, PluginApi, _Batcher
from tether.plugin.service import Plugin

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import oslo_messaging


def _claim(task_id: str, claim_id: str = "c1", **extra: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "agent_id": "agent-a",
        "claim_id": claim_id,
        "redelivered": False,
        "driver_timeout": 30.0,
    } | extra


def test_a_batch_claims_each_task_in_one_transaction_and_answers_in_order(
    client: TestClient, plugin: Plugin
) -> None:
    tasks = [
        client.post("/v1/loadbalancers", json={"provider": "noop"}).json()["task"]["id"] for _ in range(3)
    ]
    commits = []
    real = plugin.pipeline.endpoint._sessionmaker.begin

    def counted() -> Any:
        commits.append(1)
        return real()

    claims = [
        _claim(tasks[0]),
        {"task_id": tasks[1], "agent_id": "agent-a"},  # missing arguments
        _claim(tasks[2], "c2"),
        _claim(tasks[2], "c3"),  # a second copy of the same task, another claim
        _claim("no-such-task"),
    ]
    with mock.patch.object(plugin.pipeline.endpoint._sessionmaker, "begin", counted):
        answers = plugin.pipeline.endpoint.claim_batch({}, claims=claims)
    assert len(commits) == 1
    assert answers[0]["run"] is True and answers[0]["attempt"] == 1
    assert answers[1]["error"]["type"] == "MalformedMessage"
    assert "claim_id" in answers[1]["error"]["message"]
    assert answers[2]["run"] is True
    assert answers[3] == {"run": False, "reason": f"task {tasks[2]} is running on agent agent-a"}
    assert answers[4]["unknown"] is True
    states = {t: client.get(f"/v1/tasks/{t}").json()["state"] for t in tasks}
    assert states == {tasks[0]: "RUNNING", tasks[1]: "PENDING", tasks[2]: "RUNNING"}


def test_concurrent_claims_share_calls_and_each_worker_gets_its_own_answer() -> None:
    calls: list[int] = []
    release = threading.Event()

    def send(batch: list[dict[str, Any]]) -> list[Any]:
        calls.append(len(batch))
        if len(calls) == 1:
            release.wait(5)  # the first call is slow: the others gather meanwhile
        return [{"run": True, "task": claim["task_id"]} for claim in batch]

    batcher = _Batcher(send, most=64)
    answers: dict[str, Any] = {}

    def worker(name: str) -> None:
        answers[name] = batcher.claim({"task_id": name})

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(20)]
    threads[0].start()
    wait_for(lambda: calls == [1])  # the first call is out ...
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: len(batcher._waiting) == 19)  # ... and the others gather meanwhile
    release.set()
    for thread in threads:
        thread.join(5)
    assert {name: answer["task"] for name, answer in answers.items()} == {f"t{i}": f"t{i}" for i in range(20)}
    assert calls == [1, 19], calls


def test_a_failed_call_reaches_every_worker_of_its_batch_and_the_next_call_goes_out() -> None:
    attempts: list[int] = []

    def send(batch: list[dict[str, Any]]) -> list[Any]:
        attempts.append(len(batch))
        if len(attempts) == 1:
            raise oslo_messaging.MessagingTimeout("no reply")
        return [{"run": True}] * len(batch)

    batcher = _Batcher(send, most=64)
    try:
        batcher.claim({"task_id": "a"})
    except oslo_messaging.MessagingTimeout:
        pass
    else:
        raise AssertionError("the timeout did not reach the worker")
    assert batcher.claim({"task_id": "a"}) == {"run": True}


def test_a_malformed_claim_in_a_batch_fails_only_its_worker(conf: cfg.ConfigOpts) -> None:
    api = PluginApi(conf)
    answers = [{"run": True, "attempt": 1}, {"error": {"type": "MalformedMessage", "message": "bad id"}}]
    with mock.patch.object(api, "_call", return_value=answers):
        sent = api._send_claims([_claim("a"), _claim("b")])
    assert sent[0] == {"run": True, "attempt": 1}
    assert isinstance(sent[1], ClaimFailed) and sent[1].error == "MalformedMessage: bad id"


def test_against_a_plugin_without_claim_batch_each_claim_is_its_own_call(conf: cfg.ConfigOpts) -> None:
    api = PluginApi(conf)
    old = oslo_messaging.RemoteError("UnsupportedVersion", "Endpoint does not support RPC version 1.2")

    def call(method: str, version: str, **kwargs: Any) -> Any:
        if method == "claim_batch":
            raise old
        assert (method, version) == ("claim", "1.0")
        assert "published_for" not in kwargs
        return {"run": True, "task": kwargs["task_id"]}

    with mock.patch.object(api, "_call", side_effect=call) as calls:
        assert api._send_claims([_claim("a", published_for=1), _claim("b")]) == [
            {"run": True, "task": "a"},
            {"run": True, "task": "b"},
        ]
        assert api._send_claims([_claim("c")]) == [{"run": True, "task": "c"}]
    # 1.3, then 1.2, then one call per claim from then on.
    calls_made = [(c.args[0], c.args[1]) for c in calls.call_args_list]
    assert calls_made == [("claim_batch", "1.3"), ("claim_batch", "1.2"), *[("claim", "1.0")] * 3]


def test_against_a_plugin_of_api_1_2_claims_go_without_published_for(conf: cfg.ConfigOpts) -> None:
    api = PluginApi(conf)
    sent: list[tuple[str, list[dict[str, Any]]]] = []

    def call(method: str, version: str, **kwargs: Any) -> Any:
        sent.append((version, kwargs["claims"]))
        if version == "1.3":
            raise oslo_messaging.RemoteError(
                "UnsupportedVersion", "Endpoint does not support RPC version 1.3"
            )
        return [{"run": True}]

    with mock.patch.object(api, "_call", side_effect=call):
        assert api._send_claims([_claim("a", published_for=2)]) == [{"run": True}]
    assert [version for version, _ in sent] == ["1.3", "1.2"]
    assert sent[0][1][0]["published_for"] == 2 and "published_for" not in sent[1][1][0]
