"""``/v1/dead-letters`` on the in-memory broker: listed grouped by error,
replayed to where they came from, purged, by id, by error or all; each
replay and purge recorded with who asked and why."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import kombu
import pytest
from fastapi.testclient import TestClient

from tether.common import transport
from tether.common.exceptions import TransportError
from tether.plugin.db.models import OperatorAction
from tether.plugin.service import Plugin

ADMIN = {"X-Roles": "admin"}
BAD_VERSION = "message version 9 is unknown to this agent"
UNREADABLE = "unreadable work message: ValueError: not JSON"


@pytest.fixture
def broker(plugin: Plugin) -> Iterator[kombu.Connection]:
    connection = plugin.broker.connect()
    plugin.broker.declare(connection, [plugin.broker.work_queue("noop")])
    yield connection
    connection.release()


def _dead(connection: kombu.Connection, message_id: str, reason: str, body: bytes = b"{}") -> None:
    """A work message for provider noop, dead-lettered by tether with ``reason``."""
    headers = {
        transport.DEAD_LETTER_REASON: reason,
        transport.DEAD_LETTERED_AT: "2026-12-06T10:00:00+00:00",
        transport.ORIGINAL_EXCHANGE: transport.WORK_EXCHANGE,
        transport.ORIGINAL_ROUTING_KEY: "noop",
    }
    kombu.Producer(connection.channel()).publish(
        body,
        exchange=transport.DEAD_LETTER_EXCHANGE,
        routing_key=transport.DEAD_LETTER_QUEUE,
        message_id=message_id,
        headers=headers,
        content_type="application/json",
        content_encoding="utf-8",
    )


def _work_ids(connection: kombu.Connection) -> list[str]:
    queue = kombu.Queue("tether.work.noop", no_declare=True).bind(connection.channel())
    ids = []
    while (message := queue.get(no_ack=True)) is not None:
        ids.append(message.properties["message_id"])
    return ids


def _listed(client: TestClient) -> Any:
    answer = client.get("/v1/dead-letters", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_dead_letters_are_listed_with_their_queue_error_time_and_task_and_grouped_by_error(
    client: TestClient, broker: kombu.Connection
) -> None:
    _dead(broker, "m1", BAD_VERSION, b'{"task": {"id": "t-1"}}')
    _dead(broker, "m2", BAD_VERSION)
    _dead(broker, "m3", UNREADABLE, b"not json")
    listed = _listed(client)
    assert listed["total"] == 3
    first = listed["dead_letters"][0]
    assert first | {"size": 0, "preview": ""} == {
        "id": "m1",
        "queue": "tether.work.noop",
        "error": BAD_VERSION,
        "first_death_at": "2026-12-06T10:00:00+00:00",
        "task_id": "t-1",
        "exchange": transport.WORK_EXCHANGE,
        "routing_key": "noop",
        "size": 0,
        "preview": "",
        "unreadable": None,
    }
    assert listed["groups"] == [{"error": BAD_VERSION, "count": 2}, {"error": UNREADABLE, "count": 1}]
    # Listing takes nothing away.
    assert _listed(client)["total"] == 3


def test_replaying_one_error_sends_its_dead_letters_back_and_leaves_the_others(
    client: TestClient, broker: kombu.Connection
) -> None:
    _dead(broker, "m1", BAD_VERSION)
    _dead(broker, "m2", UNREADABLE)
    _dead(broker, "m3", BAD_VERSION)
    answer = client.post(
        "/v1/dead-letters/replay", json={"error": BAD_VERSION, "reason": "agents upgraded"}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"replayed": 2, "left": [], "missing": [], "stopped": None}
    assert sorted(_work_ids(broker)) == ["m1", "m3"]
    assert [d["id"] for d in _listed(client)["dead_letters"]] == ["m2"]


def test_replaying_by_id_names_the_ids_no_dead_letter_has(
    client: TestClient, broker: kombu.Connection
) -> None:
    _dead(broker, "m1", BAD_VERSION)
    _dead(broker, "m2", BAD_VERSION)
    answer = client.post("/v1/dead-letters/replay", json={"ids": ["m2", "gone"]}, headers=ADMIN)
    assert answer.json() == {"replayed": 1, "left": [], "missing": ["gone"], "stopped": None}
    assert _work_ids(broker) == ["m2"]


def test_purging_by_id_by_error_and_all_deletes_what_was_selected(
    client: TestClient, broker: kombu.Connection
) -> None:
    for number, reason in enumerate((BAD_VERSION, UNREADABLE, UNREADABLE, BAD_VERSION, BAD_VERSION)):
        _dead(broker, f"m{number}", reason)
    purge = "/v1/dead-letters/purge"
    assert client.post(purge, json={"ids": ["m0", "nope"]}, headers=ADMIN).json() == {
        "purged": 1,
        "missing": ["nope"],
    }
    assert client.post(purge, json={"error": UNREADABLE}, headers=ADMIN).json() == {
        "purged": 2,
        "missing": [],
    }
    assert [d["id"] for d in _listed(client)["dead_letters"]] == ["m3", "m4"]
    assert client.post(purge, json={"all": True, "reason": "seen"}, headers=ADMIN).json() == {
        "purged": 2,
        "missing": [],
    }
    assert _listed(client) == {"dead_letters": [], "groups": [], "total": 0}
    assert _work_ids(broker) == []


def test_replays_and_purges_are_recorded_with_who_asked_and_why(
    client: TestClient, broker: kombu.Connection, plugin: Plugin, caplog: pytest.LogCaptureFixture
) -> None:
    _dead(broker, "m1", BAD_VERSION)
    with caplog.at_level("INFO", logger="tether.plugin.tasks.operator_actions"):
        client.post(
            "/v1/dead-letters/purge",
            json={"all": True, "reason": "known junk"},
            headers=ADMIN | {"X-Project-Id": "ops"},
        )
    assert "purge of dead-letters asked by project ops (roles admin): 'known junk'" in caplog.text
    with plugin.reader() as session:
        (row,) = session.query(OperatorAction).all()
        assert (row.action, row.reason, row.project_id) == ("purge", "known junk", "ops")
        assert row.outcome == {"selection": {"all": True}, "purged": 1, "missing": []}


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"reason": "nothing selected"},
        {"ids": ["a"], "all": True},
        {"ids": ["a"], "error": "x"},
        {"all": False},
        {"ids": []},
        {"ids": "m1"},
        {"error": ""},
        {"all": True, "reason": "x" * 256},
        {"all": True, "force": True},
        [],
    ],
)
def test_a_replay_or_purge_must_select_by_ids_error_or_all_exactly(
    client: TestClient, broker: kombu.Connection, body: Any
) -> None:
    _dead(broker, "m1", BAD_VERSION)
    for action in ("replay", "purge"):
        answer = client.post(f"/v1/dead-letters/{action}", json=body, headers=ADMIN)
        assert answer.status_code == 400, (action, body, answer.text)
        message = answer.json()["error"]["message"]
        assert "body" in message or f"Say which dead letters to {action}" in message, message
    assert _listed(client)["total"] == 1


def test_dead_letters_are_for_admins_only(client: TestClient, broker: kombu.Connection) -> None:
    assert client.get("/v1/dead-letters").status_code == 403
    assert client.post("/v1/dead-letters/purge", json={"all": True}).status_code == 403
    assert client.post("/v1/dead-letters/replay", json={"all": True}).status_code == 403


def test_a_broker_that_cannot_be_reached_answers_503_naming_it(
    client: TestClient, plugin: Plugin, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> Any:
        raise TransportError("cannot reach the broker at rabbit://x: refused; check [DEFAULT] transport_url")

    monkeypatch.setattr(plugin.broker, "connect", unreachable)
    answer = client.get("/v1/dead-letters", headers=ADMIN)
    assert answer.status_code == 503
    assert "cannot reach the broker" in answer.json()["error"]["message"]
