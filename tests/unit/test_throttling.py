"""Throttling (429) and backpressure (503), both with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from oslo_config import cfg

from tether.plugin.service import Plugin
from tether.plugin.tasks import throttle


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


def test_the_rate_limiter_keeps_only_the_projects_that_asked_lately(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(throttle.time, "monotonic", lambda: clock[0])
    limiter = throttle.RateLimiter(rate=10.0, burst=5)  # a bucket refills in 0.5 s
    for i in range(100_000):
        limiter.take(f"project-{i}")
        clock[0] += 0.001
    # 100 s of projects asking once each, a token each, back 0.1 s later: only
    # the projects of the last 0.1 s are kept.
    assert 95 <= len(limiter) <= 105
    # A project over its limit is kept while its bucket refills, however many others ask.
    for _ in range(5):
        limiter.take("busy")
    with pytest.raises(throttle.TooManyRequests):
        limiter.take("busy")
    clock[0] += 0.2  # two tokens back
    for i in range(1000):
        limiter.take(f"late-{i}")
    limiter.take("busy")
    limiter.take("busy")
    with pytest.raises(throttle.TooManyRequests):
        limiter.take("busy")
    # Once everyone has been quiet for long enough, nothing is kept.
    clock[0] += 1.0
    limiter.take("last")
    assert len(limiter) == 1
