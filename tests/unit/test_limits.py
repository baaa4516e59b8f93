"""Every limit of the API answers with a clear 413 or 400, never a 5xx."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tether.plugin.service import Plugin

LB = {"provider": "noop"}


def _error(answer: Any, status: int) -> str:
    assert answer.status_code == status, answer.text
    return str(answer.json()["error"]["message"])


def test_a_body_over_the_size_limit_is_413_whether_declared_or_streamed(client: TestClient) -> None:
    big = json.dumps(LB | {"description": "x" * (2 * 1024 * 1024)})
    assert "larger than 1048576 bytes" in _error(client.post("/v1/loadbalancers", content=big), 413)

    def chunks() -> Any:  # no Content-Length: counted as it arrives
        for _ in range(300):
            yield b" " * 8192

    streamed = client.post(
        "/v1/loadbalancers", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "larger than" in _error(streamed, 413)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (LB | {"name": "n" * 256}, "$.name"),
        (LB | {"description": "d" * 1025}, "$.description"),
        (LB | {"metadata": {f"k{i}": "v" for i in range(65)}}, "metadata"),
        (LB | {"metadata": {"k": "v" * 256}}, "metadata"),
        (LB | {"metadata": {"k" * 256: "v"}}, "metadata"),
        (LB | {"surprise": 1}, "surprise"),
        (LB | {"name": "a\x00b"}, "NUL"),
        (LB | {"metadata": {"a": "b" * 5000}}, "at most 4096 are accepted"),
        (LB | {"metadata": {str(i): "v" for i in range(1001)}}, "at most 1000 are accepted"),
        (LB | {"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "nested deeper"),
    ],
)
def test_attributes_over_their_limits_are_400_naming_where(client: TestClient, body: Any, says: str) -> None:
    assert says in _error(client.post("/v1/loadbalancers", json=body), 400)


def test_deeply_nested_json_is_400(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    message = _error(client.post("/v1/loadbalancers", content=deep), 400)
    assert "nested" in message


def test_page_size_and_wait_have_ceilings(client: TestClient) -> None:
    assert "from 1 to 1000" in _error(client.get("/v1/loadbalancers?limit=1001"), 400)
    assert "from 1 to 1000" in _error(client.get("/v1/tasks?limit=0"), 400)
    lb = client.post("/v1/loadbalancers", json=LB).json()
    for url in (f"/v1/tasks/{lb['task']['id']}?wait=61", f"/v1/loadbalancers/{lb['id']}?wait=61"):
        assert "less than or equal to 60" in _error(client.get(url), 400)
    assert _error(client.get(f"/v1/tasks/{lb['task']['id']}?wait=-1"), 400)


def test_the_limits_are_options(conf: Any) -> None:
    conf.set_override("max_string_length", 300, group="api")
    conf.set_override("max_items", 64, group="api")
    with TestClient(Plugin(conf, migrate=True).app) as client:
        # The type allows a description of 1024; the deployment's ceiling is lower.
        long_value = client.post("/v1/loadbalancers", json=LB | {"description": "d" * 1000})
        assert "at most 300 are accepted" in _error(long_value, 400)
        too_many = client.post("/v1/loadbalancers", json=LB | {"x": list(range(65))})
        assert "at most 64 are accepted" in _error(too_many, 400)
