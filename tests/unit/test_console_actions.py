"""The web console's sign-in, its actions through the API, and its live events."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from tests.unit.conftest import accepted, report
from tests.unit.console import ADMIN, form_token
from tether.plugin.api.console.events import LiveEvents
from tether.plugin.service import Plugin


def test_cancelling_from_the_console_goes_through_the_api(client: TestClient, plugin: Plugin) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    token = form_token(client)
    answer = client.post(
        f"/console/tasks/{lb['task']['id']}/cancel",
        data={"form_token": token, "confirm": "yes", "reason": "wrong VIP"},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "CANCELLED"


def test_an_action_needs_its_confirmation_and_the_form_token(client: TestClient) -> None:
    lb = accepted(client, "loadbalancers", {"provider": "noop"})
    url = f"/console/tasks/{lb['task']['id']}/cancel"
    unconfirmed = client.post(url, data={"form_token": form_token(client)})
    assert unconfirmed.status_code == 400 and "not confirmed" in unconfirmed.text
    forged = client.post(url, data={"form_token": "0" * 64, "confirm": "yes"})
    assert forged.status_code == 403
    elsewhere = client.post(
        url,
        data={"form_token": form_token(client), "confirm": "yes"},
        headers={"Origin": "https://evil.example"},
    )
    assert elsewhere.status_code == 403 and "another site" in elsewhere.text
    assert client.get(f"/v1/tasks/{lb['task']['id']}").json()["state"] == "PENDING"


def test_an_action_on_another_projects_task_answers_as_the_api_does(client: TestClient) -> None:
    theirs = client.post(
        "/v1/loadbalancers", json={"provider": "noop"}, headers={"X-Project-Id": "other"}
    ).json()
    answer = client.post(
        f"/console/tasks/{theirs['task']['id']}/cancel",
        data={"form_token": form_token(client), "confirm": "yes"},
    )
    assert answer.status_code == 404
    assert "was not found" in answer.text


def test_disabling_an_agent_from_the_console(client: TestClient, plugin: Plugin) -> None:
    report(plugin, "agent-a", ["noop"])
    answer = client.post(
        "/console/agents/agent-a/disable",
        data={"form_token": form_token(client, ADMIN), "confirm": "yes"},
        headers=ADMIN,
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text
    assert client.get("/v1/agents/agent-a", headers=ADMIN).json()["admin_state_up"] is False


def test_signing_in_under_noauth_keeps_project_and_roles_in_a_strict_cookie(client: TestClient) -> None:
    assert 'name="project"' in client.get("/console/login").text
    answer = client.post(
        "/console/login",
        data={"project": "ops", "role_admin": "1", "next": "/console/agents"},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/agents"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    assert client.get("/console/agents").status_code == 200
    client.post("/console/logout")
    assert client.get("/console/agents").status_code == 403


@pytest.fixture
def token_client(plugin: Plugin, tmp_path: Any) -> Any:
    from tether.plugin.api import auth

    path = tmp_path / "tokens.yaml"
    token = auth.add_token(path, "acme", ["member"])
    object.__setattr__(plugin.api, "auth", auth.TokenFile(path))
    with TestClient(plugin.app) as client:
        yield client, token


def test_with_tokens_the_console_asks_to_sign_in_and_refuses_an_unknown_token(token_client: Any) -> None:
    client, token = token_client
    answer = client.get("/console/resources", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["Location"].startswith("/console/login?next=")
    assert 'name="token"' in client.get(answer.headers["Location"]).text
    refused = client.post("/console/login", data={"token": "tether_nope"})
    assert refused.status_code == 401 and "not known here" in refused.text
    live = client.get("/console/resources", headers={"HX-Request": "true"})
    assert live.status_code == 204 and live.headers["HX-Redirect"].startswith("/console/login?next=")
    client.post("/console/login", data={"token": token})
    assert "project <b>acme</b>" in client.get("/console/resources").text


def test_a_commit_wakes_the_live_stream(plugin: Plugin) -> None:
    events: LiveEvents = plugin.app.state.console_events
    events.min_interval = 0.0
    got: list[str] = []

    async def listen() -> None:
        stream = await events.stream()
        async for chunk in stream:
            got.append(chunk)
            if chunk.startswith("event: changed") and len([c for c in got if "changed" in c]) == 2:
                break
            if len([c for c in got if "changed" in c]) == 1:
                # The first event is sent at once; the second must come from the commit.
                threading.Thread(target=_commit, args=(plugin,)).start()

    asyncio.run(asyncio.wait_for(listen(), 10))
    assert got[0].startswith("retry:")
    assert [c for c in got if c.startswith("event: changed")] == ["event: changed\ndata: \n\n"] * 2
    assert events.streams == 0


def _commit(plugin: Plugin) -> None:
    with plugin.sessionmaker.begin() as session:
        session.execute(sa.text("SELECT 1"))


def test_a_finished_task_heard_from_elsewhere_wakes_the_live_stream(plugin: Plugin) -> None:
    events: LiveEvents = plugin.app.state.console_events
    events.min_interval = 0.0
    changed = 0

    async def listen() -> None:
        nonlocal changed
        async for chunk in await events.stream():
            if chunk.startswith("event: changed"):
                changed += 1
                if changed == 2:
                    return
                # As the link from the pipeline process or NOTIFY would.
                asyncio.get_running_loop().call_later(0.05, plugin.waiters.notify, "some-task")

    asyncio.run(asyncio.wait_for(listen(), 10))
    assert changed == 2


def test_closing_ends_every_stream_and_the_number_of_streams_is_bounded(plugin: Plugin) -> None:
    events = LiveEvents(max_streams=1)

    async def run() -> list[str]:
        first = await events.stream()
        with pytest.raises(Exception, match="already serves 1 live pages"):
            await events.stream()
        chunks = [await anext(first), await anext(first)]
        events.close()
        chunks += [chunk async for chunk in first]
        return chunks

    chunks = asyncio.run(asyncio.wait_for(run(), 10))
    assert chunks == ["retry: 1000\n\n", "event: changed\ndata: \n\n"]
    assert events.streams == 0


def _stand_in(plugin: Plugin, method: str, path: str, answer: dict[str, Any], seen: list[Any]) -> None:
    """A route of the API put first, standing in for one the console calls:
    it records what the console sent and answers ``answer``."""
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def endpoint(request: Request) -> JSONResponse:
        seen.append((request.url.path, await request.json(), request.headers.get("x-roles")))
        return JSONResponse(answer, status_code=202 if method == "POST" else 200)

    plugin.app.router.routes.insert(0, Route(path, endpoint, methods=[method]))


def test_retrying_from_the_console_shows_the_new_task(plugin: Plugin) -> None:
    seen: list[Any] = []
    _stand_in(plugin, "POST", "/v1/tasks/{task_id}/retry", {"id": "new-task", "state": "PENDING"}, seen)
    with TestClient(plugin.app) as client:
        answer = client.post(
            "/console/tasks/old-task/retry",
            data={"form_token": form_token(client), "confirm": "yes", "reason": "device fixed"},
            follow_redirects=False,
        )
    assert answer.status_code == 303 and answer.headers["Location"] == "/console/tasks/new-task"
    # No credentials in, none out: the API's noauth defaults, as for the console.
    assert seen == [("/v1/tasks/old-task/retry", {"reason": "device fixed"}, None)]


def test_re_applying_from_the_console_sends_the_request_of_the_cli(plugin: Plugin) -> None:
    seen: list[Any] = []
    _stand_in(plugin, "POST", "/v1/loadbalancers/{rid}/reapply", {"id": "reapply-task"}, seen)
    with TestClient(plugin.app) as client:
        lb = accepted(client, "loadbalancers", {"provider": "noop"})
        page = client.get("/console/resources", headers=ADMIN).text
        assert f"tether loadbalancer reapply {lb['id']}" in page
        assert "Re-apply…" not in client.get("/console/resources").text  # an administrator's action
        answer = client.post(
            f"/console/resources/loadbalancer/{lb['id']}/reapply",
            data={"form_token": form_token(client, ADMIN), "confirm": "yes", "reason": "device replaced"},
            headers=ADMIN,
            follow_redirects=False,
        )
    assert answer.headers["Location"] == "/console/tasks/reapply-task"
    assert seen == [(f"/v1/loadbalancers/{lb['id']}/reapply", {"reason": "device replaced"}, "admin")]


def test_dead_letters_are_grouped_by_error_and_replayed_by_error(plugin: Plugin) -> None:
    letters = {
        "dead_letters": [
            {"id": "m1", "queue": "tether.work", "error": "undecodable", "task_id": None, "size": 3},
            {"id": "m2", "queue": "tether.work", "error": "undecodable", "task_id": None, "size": 4},
            {
                "id": "m3",
                "queue": "tether.results",
                "error": "unknown version 9",
                "task_id": "t-1",
                "size": 5,
            },
        ],
        "groups": [{"error": "undecodable", "count": 2}, {"error": "unknown version 9", "count": 1}],
        "total": 3,
    }
    listed: list[Any] = []
    replayed: list[Any] = []

    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def listing(request: Request) -> JSONResponse:
        listed.append(request.headers.get("x-roles"))
        return JSONResponse(letters)

    plugin.app.router.routes.insert(0, Route("/v1/dead-letters", listing, methods=["GET"]))
    _stand_in(plugin, "POST", "/v1/dead-letters/replay", {"replayed": 2}, replayed)
    with TestClient(plugin.app) as client:
        page = client.get("/console/dead-letters", headers=ADMIN).text
        assert "2 \N{MULTIPLICATION SIGN} undecodable" in page
        assert "1 \N{MULTIPLICATION SIGN} unknown version 9" in page
        assert page.index("m1") < page.index("unknown version 9") < page.index("m3")
        assert "tether dead-letter replay --error undecodable" in page
        assert "tether dead-letter purge --error &#39;unknown version 9&#39;" in page
        answer = client.post(
            "/console/dead-letters/replay",
            data={"form_token": form_token(client, ADMIN), "confirm": "yes", "error": "undecodable"},
            headers=ADMIN,
            follow_redirects=False,
        )
    assert answer.headers["Location"] == "/console/dead-letters"
    assert listed == ["admin"]
    assert replayed == [("/v1/dead-letters/replay", {"error": "undecodable", "reason": ""}, "admin")]
