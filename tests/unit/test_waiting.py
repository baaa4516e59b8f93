"""?wait=N: answered the moment the task finishes, with no thread per waiter."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from typing import Any

import httpx2
import pytest
import uvicorn
from fastapi.testclient import TestClient

from tests.unit.conftest import finish
from tether.plugin import service
from tether.plugin.service import Plugin


def _later(seconds: float, fn: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(seconds), fn(*args)), daemon=True)
    thread.start()
    return thread


def test_a_task_wait_returns_as_soon_as_the_task_finishes(client: TestClient, plugin: Plugin) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    _later(0.3, finish, plugin, lb["task"]["id"])
    started = time.monotonic()
    task = client.get(f"/v1/tasks/{lb['task']['id']}?wait=20").json()
    assert task["state"] == "SUCCEEDED"
    assert time.monotonic() - started < 5


def test_a_resource_wait_follows_its_latest_task(client: TestClient, plugin: Plugin) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    _later(0.3, finish, plugin, lb["task"]["id"])
    body = client.get(f"/v1/loadbalancers/{lb['id']}?wait=20").json()
    assert (body["provisioning_status"], body["task"]["state"]) == ("ACTIVE", "SUCCEEDED")


def test_a_wait_that_runs_out_answers_with_the_task_as_it_is(client: TestClient) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    started = time.monotonic()
    task = client.get(f"/v1/tasks/{lb['task']['id']}?wait=0.5").json()
    assert task["state"] == "PENDING"
    assert 0.4 < time.monotonic() - started < 5


def test_a_wait_longer_than_the_limit_gets_400(client: TestClient) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    response = client.get(f"/v1/tasks/{lb['task']['id']}?wait=3600")
    assert response.status_code == 400
    assert "wait: Input should be less than or equal to 60" in response.json()["error"]["message"]


def test_a_thousand_waiters_cost_no_thread_each(client: TestClient, plugin: Plugin) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    url = f"/v1/tasks/{lb['task']['id']}?wait=60"
    threads_before = threading.active_count()

    async def wait_all() -> tuple[list[str], int, float]:
        transport = httpx2.ASGITransport(app=plugin.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://tether") as http:
            waiters = [asyncio.create_task(http.get(url)) for _ in range(1000)]
            deadline = time.monotonic() + 45
            while plugin.api.waiters.count < 1000 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            threads_while_waiting = threading.active_count()
            finished_at = time.monotonic()
            await asyncio.to_thread(finish, plugin, lb["task"]["id"])
            answers = await asyncio.gather(*waiters)
            return [a.json()["state"] for a in answers], threads_while_waiting, time.monotonic() - finished_at

    states, threads_while_waiting, latency = asyncio.run(wait_all())
    assert states == ["SUCCEEDED"] * 1000
    assert threads_while_waiting - threads_before < 60, "waiting must not hold a thread per waiter"
    # Woken by the commit, not by the end of their 60 s wait (a loose bound:
    # a loaded machine answers a thousand requests slowly).
    assert latency < 40


@pytest.mark.parametrize("bad", ["-1", "soon"])
def test_a_malformed_wait_gets_400(client: TestClient, bad: str) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    assert client.get(f"/v1/tasks/{lb['task']['id']}?wait={bad}").status_code == 400


def test_told_to_stop_the_server_answers_its_waiters_at_once_and_later_ones_without_waiting(
    plugin: Plugin,
) -> None:
    async def wait_then_stop() -> tuple[list[Any], float]:
        transport = httpx2.ASGITransport(app=plugin.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://tether") as http:
            lb_task = (await http.post("/v1/loadbalancers", json={"provider": "noop"})).json()["task"]["id"]
            url = f"/v1/tasks/{lb_task}?wait=60"
            waiting = [asyncio.create_task(http.get(url)) for _ in range(3)]
            while plugin.api.waiters.count < 3:
                await asyncio.sleep(0.01)
            server = service._Server(uvicorn.Config(plugin.app), [plugin.waiters.close])
            told = time.monotonic()
            server.handle_exit(signal.SIGTERM, None)
            answers = await asyncio.gather(*waiting)
            answers.append(await http.get(url))  # asked after the stop: not kept waiting either
            assert server.should_exit
            return [(a.status_code, a.json()["state"]) for a in answers], time.monotonic() - told

    answers, took = asyncio.run(wait_then_stop())
    assert answers == [(200, "PENDING")] * 4
    assert took < 10
