"""Idempotency keys: a retried request gets the first answer, not new work."""

from __future__ import annotations

import concurrent.futures
import datetime

import sqlalchemy as sa
from fastapi.testclient import TestClient

from tether.plugin.api import idempotency
from tether.plugin.db.models import IdempotencyKey, Task, utcnow
from tether.plugin.service import Plugin

KEY = {"Idempotency-Key": "order-42"}


def _tasks(plugin: Plugin) -> int:
    with plugin.sessionmaker() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(Task)) or 0)


def test_the_same_key_and_body_return_the_first_answer_and_do_no_new_work(
    client: TestClient, plugin: Plugin
) -> None:
    first = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY)
    again = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["task"]["id"] == first.json()["task"]["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    assert _tasks(plugin) == 1


def test_the_same_key_with_a_different_body_gets_422(client: TestClient) -> None:
    client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY)
    response = client.post("/v1/loadbalancers", json={"provider": "fake"}, headers=KEY)
    assert response.status_code == 422
    assert "was first used for POST /v1/loadbalancers" in response.json()["error"]["message"]


def test_a_key_is_scoped_to_its_project(client: TestClient, plugin: Plugin) -> None:
    mine = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY | {"X-Project-Id": "a"})
    theirs = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY | {"X-Project-Id": "b"})
    assert mine.json()["id"] != theirs.json()["id"]
    assert _tasks(plugin) == 2


def test_deletes_and_updates_honour_keys_too(client: TestClient, plugin: Plugin) -> None:
    lb = client.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    first = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "x"}, headers={"Idempotency-Key": "u1"})
    again = client.put(f"/v1/loadbalancers/{lb['id']}", json={"name": "x"}, headers={"Idempotency-Key": "u1"})
    assert again.json()["task"]["id"] == first.json()["task"]["id"]
    gone = client.delete(f"/v1/loadbalancers/{lb['id']}", headers={"Idempotency-Key": "d1"})
    gone_again = client.delete(f"/v1/loadbalancers/{lb['id']}", headers={"Idempotency-Key": "d1"})
    assert gone_again.status_code == 202
    assert gone_again.json()["task"]["id"] == gone.json()["task"]["id"]


def test_concurrent_requests_with_one_key_do_the_work_once(client: TestClient, plugin: Plugin) -> None:
    def post() -> str:
        return str(client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY).json()["id"])

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: post(), range(16)))
    assert len(ids) == 1
    assert _tasks(plugin) == 1


def test_an_expired_key_is_a_new_request_and_is_cleaned_away(client: TestClient, plugin: Plugin) -> None:
    first = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY).json()
    with plugin.sessionmaker.begin() as session:
        session.execute(sa.update(IdempotencyKey).values(expires_at=utcnow() - datetime.timedelta(seconds=1)))
        assert idempotency.purge_expired(session) == 1
    second = client.post("/v1/loadbalancers", json={"provider": "noop"}, headers=KEY).json()
    assert second["id"] != first["id"]


def test_a_malformed_key_gets_400(client: TestClient) -> None:
    response = client.post(
        "/v1/loadbalancers", json={"provider": "noop"}, headers={"Idempotency-Key": "k" * 300}
    )
    assert response.status_code == 400
