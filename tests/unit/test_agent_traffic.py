"""Claims and results on one connection: one transaction a tick, and each
apart when that transaction fails; driven with stand-in broker messages."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import kombu
import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from tests.unit.test_consumers import StandInMessage
from tether.common import claims, messages, wire
from tether.common.claims import Claim, ClaimAnswer
from tether.common.states import Outcome
from tether.plugin.db.exceptions import DatabaseUnavailable
from tether.plugin.service import Plugin
from tether.plugin.tasks.agent_traffic import AgentTraffic

REPLIES = "test-claim-replies"


@pytest.fixture
def traffic(plugin: Plugin) -> Iterator[tuple[AgentTraffic, kombu.Connection]]:
    traffic = plugin.pipeline.traffic
    with plugin.broker.connect() as conn:
        kombu.Queue(REPLIES, auto_delete=True)(conn.default_channel).declare()
        traffic.on_connect(conn)
        yield traffic, conn
        traffic.on_disconnect()


@pytest.fixture
def commits(plugin: Plugin) -> Iterator[list[int]]:
    counted: list[int] = []

    def count(*_: Any) -> None:
        counted.append(1)

    sa.event.listen(plugin.engine, "commit", count)
    yield counted
    sa.event.remove(plugin.engine, "commit", count)


def _task(client: TestClient) -> str:
    return str(client.post("/v1/loadbalancers", json={"provider": "noop"}).json()["task"]["id"])


def _claim(task_id: str, claim_id: str = "c1") -> Claim:
    return Claim(task_id, "agent-1", claim_id, redelivered=False, driver_timeout=60.0)


def _request(claim: Claim) -> StandInMessage:
    message = StandInMessage(claims.encode_request([claim]))
    message.properties.update(reply_to=REPLIES, correlation_id="c")
    return message


def _result(task_id: str, attempt: int = 1) -> StandInMessage:
    return StandInMessage(
        messages.encode(
            messages.Result(task_id=task_id, attempt=attempt, outcome=Outcome.SUCCEEDED, agent_id="agent-1")
        )
    )


def _reply(conn: kombu.Connection) -> list[ClaimAnswer]:
    message = kombu.Queue(REPLIES)(conn.default_channel).get(no_ack=True)
    assert message is not None, "no claim was answered"
    return wire.decode_claim_reply(message.body)


def _running(plugin: Plugin, client: TestClient) -> str:
    """A task an agent has claimed, whose result may be recorded."""
    task_id = _task(client)
    [answer] = plugin.pipeline.claims.decider.decide([_claim(task_id, "c0")])
    assert answer.run, answer
    return task_id


def _one_of_each(
    plugin: Plugin, client: TestClient, loop: AgentTraffic
) -> tuple[str, str, StandInMessage, StandInMessage]:
    """A result of one running task and a claim of a new one, delivered to
    ``loop``: the task finishing, the task claimed, and their messages."""
    finishing, claimed = _running(plugin, client), _task(client)
    request, result = _request(_claim(claimed)), _result(finishing)
    loop.claims._on_message(request)
    loop.results._on_message(result)
    return finishing, claimed, request, result


def _state(client: TestClient, task_id: str) -> str:
    return str(client.get(f"/v1/tasks/{task_id}").json()["state"])


@pytest.mark.parametrize(("shared", "transactions"), [(True, 1), (False, 2)])
def test_a_tick_records_results_and_decides_claims_in_one_transaction_where_writers_take_turns(
    plugin: Plugin,
    client: TestClient,
    traffic: tuple[AgentTraffic, kombu.Connection],
    commits: list[int],
    shared: bool,
    transactions: int,
) -> None:
    """SQLite shares one; where rows are locked one by one, two, one after the other."""
    loop, conn = traffic
    loop.shared = shared
    finishing, claimed, request, result = _one_of_each(plugin, client, loop)
    commits.clear()
    loop.on_tick(conn)
    assert len(commits) == transactions
    [answer] = _reply(conn)
    assert answer.run and answer.attempt == 1
    assert (request.acked, result.acked) == (1, 1)
    assert (_state(client, claimed), _state(client, finishing)) == ("RUNNING", "SUCCEEDED")


def test_a_result_goes_before_a_claim_of_its_task_in_the_same_tick(
    plugin: Plugin, client: TestClient, traffic: tuple[AgentTraffic, kombu.Connection]
) -> None:
    """A redelivery another agent claims as the first agent reports: the
    task is finished, not run again."""
    loop, conn = traffic
    task_id = _running(plugin, client)
    taking_over = Claim(task_id, "agent-2", "c2", redelivered=True, driver_timeout=60.0)
    loop.claims._on_message(_request(taking_over))
    result = _result(task_id, attempt=1)
    loop.results._on_message(result)
    loop.on_tick(conn)
    [answer] = _reply(conn)
    assert not answer.run
    assert answer.reason == f"task {task_id} is already SUCCEEDED"
    task = client.get(f"/v1/tasks/{task_id}").json()
    assert (task["state"], task["attempt"]) == ("SUCCEEDED", 1)
    assert result.acked == 1


def test_a_failing_claim_decision_does_not_hold_up_the_results_of_its_tick(
    plugin: Plugin,
    client: TestClient,
    traffic: tuple[AgentTraffic, kombu.Connection],
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop, conn = traffic
    finishing, claimed, request, result = _one_of_each(plugin, client, loop)
    with mock.patch.object(loop.claims.decider, "decide_in", side_effect=KeyError("a bug")):
        loop.on_tick(conn)
    [answer] = _reply(conn)
    assert (answer.error_type, answer.run) == ("KeyError", False)
    assert (request.acked, result.acked) == (1, 1)
    assert (_state(client, claimed), _state(client, finishing)) == ("PENDING", "SUCCEEDED")
    assert "recording 1 result(s) and deciding 1 claims request(s) together failed; each apart" in caplog.text


def test_during_a_database_outage_claims_are_answered_and_results_kept_unacked(
    plugin: Plugin, client: TestClient, traffic: tuple[AgentTraffic, kombu.Connection]
) -> None:
    loop, conn = traffic
    finishing, claimed, request, result = _one_of_each(plugin, client, loop)
    down = DatabaseUnavailable(detail="disk I/O error", retry_after=1)
    with mock.patch.object(loop.results.recorder, "record_in", side_effect=down):
        loop.on_tick(conn)
    [answer] = _reply(conn)
    assert answer.error_type == "ServiceUnavailable"
    assert "claim again shortly" in (answer.error_message or "")
    assert (request.acked, result.acked) == (1, 0)
    # Nothing of the tick was written; the result is recorded once the database is back.
    assert _state(client, claimed) == "PENDING"
    loop.results.stop_waiting()
    loop.on_tick(conn)
    assert result.acked == 1
    assert _state(client, finishing) == "SUCCEEDED"
