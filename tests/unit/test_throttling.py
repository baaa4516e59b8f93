"""Throttling (429) and backpressure (503), both with Retry-After."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from oslo_config import cfg

from tether.plugin.service import Plugin


def _client(conf: cfg.ConfigOpts, **api: Any) -> TestClient:
    for name, value in api.items():
        conf.set_override(name, value, group="api")
    return TestClient(Plugin(conf).app)


def test_a_project_over_its_rate_gets_429_with_retry_after(conf: cfg.ConfigOpts, plugin: Plugin) -> None:
    with _client(conf, rate_limit=1.0, rate_burst=3) as client:
        answers = [client.get("/v1/loadbalancers").status_code for _ in range(4)]
        refused = client.get("/v1/loadbalancers")
        other_project = client.get("/v1/loadbalancers", headers={"X-Project-Id": "other"})
    assert answers == [200, 200, 200, 429]
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) >= 1
    assert "over its rate limit of 1 requests/s" in refused.json()["error"]["message"]
    assert other_project.status_code == 200


def test_a_provider_with_a_full_backlog_gets_503_with_retry_after(
    conf: cfg.ConfigOpts, plugin: Plugin
) -> None:
    with _client(conf, max_backlog=3) as client:
        for _ in range(3):
            assert client.post("/v1/loadbalancers", json={"provider": "noop"}).status_code == 202
        plugin_app = client.app
        plugin_api = plugin_app.state.api  # type: ignore[attr-defined]
        plugin_api.changes.backpressure.CACHE = 0  # see the backlog as it is now
        refused = client.post("/v1/loadbalancers", json={"provider": "noop"})
        elsewhere = client.post("/v1/loadbalancers", json={"provider": "fake"})
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "5"
    assert "Provider noop has 3 tasks waiting (the limit is 3)" in refused.json()["error"]["message"]
    assert elsewhere.status_code == 202
    assert plugin_api.changes.backpressure.refused["noop"] == 1
