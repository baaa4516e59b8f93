"""The web console's pages: who sees what, and why a resource is not settled."""

from __future__ import annotations

import datetime
import re

import pytest
from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, claim, finish, report
from tests.unit.console import ADMIN, node
from tether.common.messages import ReportedError
from tether.plugin.api.console.tree import usual_seconds
from tether.plugin.db.models import AgentRecord, Task
from tether.plugin.service import Plugin


def test_the_console_sends_a_member_to_its_resources(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["Location"] == "/console/resources"
    page = client.get("/console/resources")
    assert page.status_code == 200
    assert "No resources in project default yet." in page.text
    assert 'sse-connect="/console/events"' in page.text
    assert "/console/static/htmx-2.0.11.min.js" in page.text


def test_the_console_is_not_in_the_openapi_document(client: TestClient) -> None:
    assert not [p for p in client.get("/v1/openapi.json").json()["paths"] if p.startswith("/console")]


def test_the_vendored_scripts_are_served(client: TestClient) -> None:
    for name in ("htmx-2.0.11.min.js", "htmx-ext-sse-2.2.4.min.js", "console.css"):
        assert client.get(f"/console/static/{name}").status_code == 200


def test_a_member_sees_only_its_projects_trees_and_an_admin_sees_every_project(client: TestClient) -> None:
    mine = accepted(client, "loadbalancers", {"provider": "noop", "name": "mine"})
    listener = accepted(
        client, "listeners", {"loadbalancer_id": mine["id"], "protocol": "HTTP", "protocol_port": 80}
    )
    theirs = client.post(
        "/v1/loadbalancers", json={"provider": "noop", "name": "theirs"}, headers={"X-Project-Id": "other"}
    ).json()
    page = client.get("/console/resources").text
    assert mine["id"] in page and listener["id"] in page
    assert theirs["id"] not in page
    # The listener is drawn under its load balancer.
    assert page.index(mine["id"]) < page.index(listener["id"])
    admin = client.get("/console/resources", headers=ADMIN).text
    assert mine["id"] in admin and theirs["id"] in admin
    assert "project other" in admin
    only = client.get("/console/resources?project_id=other", headers=ADMIN).text
    assert theirs["id"] in only and mine["id"] not in only


def test_a_member_cannot_open_another_projects_task_or_the_fleet(client: TestClient, plugin: Plugin) -> None:
    theirs = client.post(
        "/v1/loadbalancers", json={"provider": "noop"}, headers={"X-Project-Id": "other"}
    ).json()
    response = client.get(f"/console/tasks/{theirs['task']['id']}")
    assert response.status_code == 404
    assert "was not found" in response.text
    assert theirs["task"]["id"] not in client.get("/console/tasks").text
    agents = client.get("/console/agents")
    assert agents.status_code == 403
    assert "policy tether:agent:list does not allow it" in agents.text
    assert "Agents &amp; providers" not in client.get("/console/resources").text


def test_a_pending_resource_says_no_agent_has_claimed_its_task(client: TestClient) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    why = node(client.get("/console/resources").text, lb["id"])
    assert "PENDING_CREATE" in why and "not in sync" in why
    assert lb["task"]["id"] in why
    assert "published, no agent has claimed it" in why
    assert "no finished create loadbalancer task to compare with yet" in why
    assert "Cancel…" in why and f"tether task cancel {lb['task']['id']}" in why


def test_a_retrying_resource_shows_its_attempt_agent_error_and_next_retry(
    client: TestClient, plugin: Plugin
) -> None:
    done = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, done["task"]["id"])
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    with plugin.sessionmaker.begin() as session:
        session.get(Task, lb["task"]["id"]).progress = "uploading certificates"  # type: ignore[union-attr]
    finish(
        plugin,
        lb["task"]["id"],
        "FAILED",
        host="lb-host-7",
        error=ReportedError(type="DeviceUnreachable", message="no route to 10.1.1.1", retryable=True),
    )
    why = node(client.get("/console/resources").text, lb["id"])
    assert "PENDING_CREATE" in why
    assert "claimed" in why and "test-agent" in why
    assert "uploading certificates" in why
    assert "next retry" in why and "UTC" in why
    assert "DeviceUnreachable" in why and "no route to 10.1.1.1" in why
    assert "usually" in why and "p95 of the last create loadbalancer tasks" in why


def test_a_failed_resource_shows_its_error_and_offers_a_retry(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(
        plugin,
        lb["task"]["id"],
        "FAILED",
        error=ReportedError(type="InvalidConfiguration", message="VIP in use"),
    )
    why = node(client.get("/console/resources").text, lb["id"])
    assert "ERROR" in why and "FAILED" in why
    assert "InvalidConfiguration" in why and "VIP in use" in why
    assert "took" in why
    assert f"tether task retry {lb['task']['id']}" in why


def test_a_settled_resource_shows_no_why(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    finish(plugin, lb["task"]["id"], statuses={lb["id"]: "ONLINE"})
    part = node(client.get("/console/resources").text, lb["id"])
    assert "ACTIVE" in part and "ONLINE" in part and ">in sync<" in part
    assert 'class="why' not in part


def test_the_usual_time_is_the_p95_of_the_last_finished_tasks_of_that_kind(
    client: TestClient, plugin: Plugin
) -> None:
    ids = [accepted(client, "loadbalancers", {"provider": "noop"})["task"]["id"] for _ in range(20)]
    for task_id in ids:
        finish(plugin, task_id)
    with plugin.sessionmaker.begin() as session:
        for n, task_id in enumerate(ids, 1):
            task = session.get(Task, task_id)
            assert task is not None and task.finished_at is not None
            task.created_at = task.finished_at - datetime.timedelta(seconds=n)
    with plugin.reader() as session:
        usual = usual_seconds(session, {("loadbalancer", "create"), ("pool", "create")})
    # Nearest rank: the 19th of 20 durations of 1..20 s.
    assert usual == {("loadbalancer", "create"): pytest.approx(19.0, abs=0.01)}


def test_the_tasks_page_filters_by_state_provider_resource_and_project(
    client: TestClient, plugin: Plugin
) -> None:
    a = accepted(client, "loadbalancers", {"provider": "noop"})
    b = accepted(client, "loadbalancers", {"provider": "fake"})
    finish(plugin, a["task"]["id"])
    other = client.post(
        "/v1/loadbalancers", json={"provider": "noop"}, headers={"X-Project-Id": "other"}
    ).json()

    def shown(query: str, headers: dict[str, str] | None = None) -> set[str]:
        page = client.get(f"/console/tasks?{query}", headers=headers or {})
        assert page.status_code == 200, page.text
        return {
            t for t in (a["task"]["id"], b["task"]["id"], other["task"]["id"]) if f'id="t-{t}"' in page.text
        }

    assert shown("") == {a["task"]["id"], b["task"]["id"]}
    assert shown("state=SUCCEEDED") == {a["task"]["id"]}
    assert shown("provider=fake") == {b["task"]["id"]}
    assert shown(f"resource_id={a['id']}") == {a["task"]["id"]}
    # A member's project filter is its own project, whatever it asks.
    assert shown("project_id=other") == {a["task"]["id"], b["task"]["id"]}
    assert shown("project_id=other", ADMIN) == {other["task"]["id"]}
    assert client.get("/console/tasks?state=LOST").status_code == 400


def test_a_tasks_page_shows_the_timeline_of_its_attempts(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    task_id = lb["task"]["id"]
    finish(
        plugin,
        task_id,
        "FAILED",
        error=ReportedError(type="DeviceUnreachable", message="no route", retryable=True),
    )
    finish(plugin, task_id)
    page = client.get(f"/console/tasks/{task_id}").text
    moments = re.findall(r"<b>([^<]+)</b> · ([^\n<]+)", page)
    what = [m[0] for m in moments]
    assert what[0] == "accepted" and "queued" not in what
    assert "retry scheduled" in what
    assert what.index("attempt 1 claimed") < what.index("attempt 1 FAILED") < what.index("attempt 2 claimed")
    assert what[-1] == "SUCCEEDED"
    assert "DeviceUnreachable: no route" in page


def test_the_fleet_page_shows_agents_and_each_providers_backlog(client: TestClient, plugin: Plugin) -> None:
    report(plugin, "agent-a", ["noop"], host="host-a", in_flight=1)
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    accepted(client, "loadbalancers", {"provider": "fake"})
    claim(plugin, lb["task"]["id"], agent_id="agent-a")
    page = client.get("/console/agents", headers=ADMIN).text
    agent = page[page.index('id="a-agent-a"') :]
    assert "host-a" in agent and ">alive<" in agent and "1 of 1" in agent
    assert "tether agent disable agent-a" in agent
    fake = page[page.index('id="p-fake"') : page.index("</tr>", page.index('id="p-fake"'))]
    assert "none: its work waits" in fake and "accepted" in fake
    noop = page[page.index('id="p-noop"') : page.index("</tr>", page.index('id="p-noop"'))]
    assert "agent-a" in noop


def test_the_dead_letters_page_says_when_the_api_cannot_list_them(client: TestClient) -> None:
    page = client.get("/console/dead-letters", headers=ADMIN)
    assert page.status_code == 200
    assert "They could not be listed" in page.text or "dead-letter queue is empty" in page.text


def test_what_callers_wrote_is_shown_as_text_never_as_markup(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop", "name": "<script>alert(1)</script>"})
    finish(
        plugin,
        lb["task"]["id"],
        "FAILED",
        error=ReportedError(type="X", message="<img src=x onerror=alert(2)>"),
    )
    page = client.get("/console/resources").text
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(2)&gt;" in page


def test_an_agent_that_fell_silent_shows_dead(client: TestClient, plugin: Plugin) -> None:
    report(plugin, "agent-a", ["noop"], host="host-a")
    report(plugin, "agent-b", ["noop"], host="host-b")
    with plugin.sessionmaker.begin() as session:
        agent = session.get(AgentRecord, "agent-b")
        assert agent is not None
        agent.last_heartbeat -= datetime.timedelta(minutes=5)
        agent.alive = False
    page = client.get("/console/agents", headers=ADMIN).text
    assert ">alive<" in page[page.index('id="a-agent-a"') : page.index('id="a-agent-b"')]
    dead = page[page.index('id="a-agent-b"') :]
    assert ">dead<" in dead[: dead.index("</tr>")] and "5 min ago" in dead[: dead.index("</tr>")]
    noop = page[page.index('id="p-noop"') : page.index("</tr>", page.index('id="p-noop"'))]
    assert "agent-a" in noop and "agent-b" not in noop
