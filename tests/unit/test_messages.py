from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from tests.unit.conftest import sample_work
from tether.agent import runner
from tether.common import messages, wire
from tether.common.exceptions import MalformedMessage
from tether.common.states import Outcome


def _work() -> dict[str, Any]:
    return dict(msgspec.to_builtins(sample_work("noop")))


def test_work_survives_an_encode_decode_round_trip() -> None:
    work = sample_work("noop")
    assert wire.decode_work(messages.encode(work)) == work


def test_result_survives_an_encode_decode_round_trip() -> None:
    result = messages.Result(
        task_id="t",
        attempt=2,
        outcome=Outcome.FAILED,
        agent_id="a",
        error=messages.ReportedError(type="DriverError", message="no"),
        statuses={"r": "ONLINE"},
    )
    assert wire.decode_result(messages.encode(result)) == result


def test_messages_keep_the_version_1_wire_format() -> None:
    # What the release before msgspec wrote and read: the same keys and shapes.
    work = json.loads(messages.encode(sample_work("noop")))
    assert work == {
        "version": 1,
        "kind": "work",
        "task": {
            "id": "t",
            "operation": "create",
            "resource_type": "loadbalancer",
            "resource_id": "r",
            "root_id": "r",
            "generation": 1,
            "attempt": 1,
            "project_id": "p",
            "request_id": None,
            "provider": "noop",
            # Added with cascade deletes, which are sent as version 2: an
            # agent before them ignores the key and refuses version 2.
            "cascade": False,
        },
        "resource": work["tree"],
        "tree": {
            "type": "loadbalancer",
            "id": "r",
            "project_id": "p",
            "parent_id": None,
            # Added with provisioning status in the tree; agents before it
            # read work without them (unknown fields are ignored).
            "provisioning_status": "PENDING_CREATE",
            "applied_generation": 0,
            "attributes": {},
            "children": [],
        },
    }
    result = messages.Result(
        task_id="t",
        attempt=1,
        outcome=Outcome.FAILED,
        agent_id="a",
        error=messages.ReportedError(type="DeviceUnreachable", message="m", retryable=True),
    )
    assert json.loads(messages.encode(result)) == {
        "version": 1,
        "kind": "result",
        "task_id": "t",
        "attempt": 1,
        "outcome": "FAILED",
        "agent_id": "a",
        "host": None,
        "request_id": None,
        "statuses": {},
        "error": {"type": "DeviceUnreachable", "message": "m", "retryable": True},
        "started_at": None,
        "finished_at": None,
        # Added with steps; plugins before them read results without it
        # (their schema allowed keys it did not name).
        "undone": False,
    }


def test_work_as_the_previous_release_wrote_it_is_read() -> None:
    # json.dumps(sort_keys=True) of the old Work.to_body(): no children on the resource.
    resource = {
        "attributes": {"name": "lb"},
        "id": "r",
        "parent_id": None,
        "project_id": "p",
        "type": "loadbalancer",
    }
    body = {
        "kind": "work",
        "resource": resource,
        "task": dict(msgspec.to_builtins(sample_work("noop").task)) | {"request_id": "req-1"},
        "tree": resource | {"children": [resource | {"id": "c", "parent_id": "r", "type": "listener"}]},
        "version": 1,
    }
    work = wire.decode_work(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
    assert (work.task_id, work.request_id, work.resource.children) == ("t", "req-1", [])
    assert [child.id for child in work.tree.children] == ["c"]
    # Nothing said of the device: the agent passes that on as unknown.
    assert (work.tree.provisioning_status, work.tree.children[0].applied_generation) == (None, None)
    change = runner._change(work, 1)
    assert (change.tree.provisioning_status, change.tree.on_device, change.tree.create_failed) == (
        None,
        None,
        False,
    )


class _PreviousDesired(msgspec.Struct, frozen=True, kw_only=True):
    """DesiredResource as the release before provisioning status in the tree declared it."""

    type: str
    id: str
    project_id: str
    parent_id: str | None = None
    attributes: dict[str, Any]
    children: list[_PreviousDesired] = []


class _PreviousWork(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    kind: str
    task: messages.WorkTask
    resource: _PreviousDesired
    tree: _PreviousDesired


def test_an_agent_of_the_previous_release_reads_work_carrying_provisioning_status() -> None:
    child = messages.DesiredResource(
        type="listener",
        id="c",
        project_id="p",
        parent_id="r",
        provisioning_status="ERROR",
        applied_generation=0,
        attributes={"protocol": "HTTP"},
    )
    tree = messages.DesiredResource(
        type="loadbalancer",
        id="r",
        project_id="p",
        provisioning_status="ACTIVE",
        applied_generation=3,
        attributes={},
        children=[child],
    )
    work = messages.Work(task=sample_work("noop").task, resource=tree, tree=tree)
    old = msgspec.json.decode(messages.encode(work), type=_PreviousWork)
    assert old.tree.children[0] == _PreviousDesired(
        type="listener", id="c", project_id="p", parent_id="r", attributes={"protocol": "HTTP"}
    )


def test_a_provisioning_status_this_release_does_not_know_reads_as_unknown() -> None:
    body = _work()
    body["tree"] |= {"provisioning_status": "PENDING_MIGRATION", "applied_generation": 2}
    change = runner._change(wire.decode_work(json.dumps(body)), 1)
    assert (change.tree.provisioning_status, change.tree.on_device) == (None, True)


def test_a_previous_release_body_without_optional_fields_is_read() -> None:
    body = {
        "version": 1,
        "kind": "result",
        "task_id": "t",
        "attempt": 1,
        "outcome": "FAILED",
        "agent_id": "a",
        "error": {"type": "DriverError", "message": "no"},
        "later": {"field": True},
    }
    result = wire.decode_result(json.dumps(body, sort_keys=True))
    assert result.error == messages.ReportedError(type="DriverError", message="no", retryable=False)


def test_a_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="not JSON"):
        wire.decode_work(b"\x00\xff garbage")


def test_an_unknown_schema_version_is_malformed_and_says_so() -> None:
    body = _work() | {"version": 99}
    with pytest.raises(MalformedMessage, match="version 99 is unknown"):
        wire.decode_work(json.dumps(body))


@pytest.mark.parametrize("field", ["version", "kind"])
def test_a_body_leaving_out_its_version_or_kind_is_malformed(field: str) -> None:
    body = _work()
    del body[field]
    with pytest.raises(MalformedMessage, match=f"no schema version|missing required field `{field}`"):
        wire.decode_work(json.dumps(body))


def test_a_message_breaking_its_schema_names_where() -> None:
    body = _work()
    body["task"]["generation"] = "one"
    with pytest.raises(MalformedMessage, match=r"breaks its schema at \$\.task\.generation"):
        wire.decode_work(json.dumps(body))


def test_a_tree_nested_too_deeply_is_malformed_not_a_crash() -> None:
    node = '{"type": "x", "id": "i", "project_id": "p", "attributes": {}'
    depth = 3000
    tree = (node + ', "children": [') * depth + node + "}" + "]}" * depth
    body = json.dumps(_work()).replace('"tree": {', '"tree": ' + tree + ', "unused": {', 1)
    with pytest.raises(MalformedMessage, match="nested too deeply"):
        wire.decode_work(body)


def _results_body(*results: Any) -> bytes:
    return json.dumps({"version": 1, "kind": "results", "results": list(results)}).encode()


def test_results_in_one_message_are_read_each_on_its_own() -> None:
    good = messages.Result(task_id="t1", attempt=2, outcome=Outcome.SUCCEEDED, agent_id="a")
    body = messages.encode(messages.Results(results=[good, good]))
    raws = wire.decode_results(body, "application/json", "utf-8")
    assert [wire.decode_batched_result(raw, i) for i, raw in enumerate(raws)] == [good, good]

    bad = {
        "version": 1,
        "kind": "result",
        "task_id": "t2",
        "attempt": 0,
        "outcome": "SUCCEEDED",
        "agent_id": "a",
    }
    raws = wire.decode_results(_results_body(json.loads(messages.encode(good)), bad))
    assert wire.decode_batched_result(raws[0], 0) == good
    with pytest.raises(MalformedMessage) as refused:
        wire.decode_batched_result(raws[1], 1)
    assert "results[1] of the results message breaks its schema at $.attempt" in refused.value.msg


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (_results_body(), "breaks its schema at $.results"),
        (_results_body(*[{}] * (messages.MAX_RESULTS + 1)), "breaks its schema at $.results"),
        (json.dumps({"version": 9, "kind": "results", "results": [{}]}).encode(), "version 9 is unknown"),
    ],
)
def test_a_results_message_that_cannot_be_read_as_a_whole_says_why(body: bytes, says: str) -> None:
    with pytest.raises(MalformedMessage) as refused:
        wire.decode_results(body)
    assert says in refused.value.msg


def test_version_2_is_work_that_deletes_a_subtree_and_no_other_kind() -> None:
    work = wire.decode_work(json.dumps(_work() | {"version": messages.CASCADE_VERSION}))
    assert work.version == 2
    result = {
        "version": 2,
        "kind": "result",
        "task_id": "t",
        "attempt": 1,
        "outcome": "FAILED",
        "agent_id": "a",
    }
    with pytest.raises(MalformedMessage, match="result message schema version 2 is unknown"):
        wire.decode_result(json.dumps(result))
