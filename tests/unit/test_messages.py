from __future__ import annotations

import json

import pytest

from tests.unit.conftest import sample_work
from tether.common import messages
from tether.common.exceptions import MalformedMessage
from tether.common.states import Outcome


def _work() -> dict[str, object]:
    return sample_work("noop").to_body()


def test_work_survives_an_encode_decode_round_trip() -> None:
    work = messages.decode_work(messages.encode(_work()))
    assert work.task_id == "t"


def test_result_survives_an_encode_decode_round_trip() -> None:
    result = messages.Result(
        task_id="t",
        attempt=2,
        outcome=Outcome.FAILED,
        agent_id="a",
        error_type="DriverError",
        error_message="no",
        statuses={"r": "ONLINE"},
    )
    assert messages.decode_result(messages.encode(result.to_body())) == result


def test_a_body_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedMessage, match="not JSON"):
        messages.decode_work(b"\x00\xff garbage")


def test_an_unknown_schema_version_is_malformed_and_says_so() -> None:
    body = _work() | {"version": 99}
    with pytest.raises(MalformedMessage, match="version 99 is unknown"):
        messages.decode_work(json.dumps(body))


def test_a_message_breaking_its_schema_names_where() -> None:
    body = _work()
    body["task"]["generation"] = "one"  # type: ignore[index]
    with pytest.raises(MalformedMessage, match=r"\$\.task\.generation"):
        messages.decode_work(json.dumps(body))


def test_a_tree_nested_too_deeply_is_malformed_not_a_crash() -> None:
    node = '{"type": "x", "id": "i", "project_id": "p", "attributes": {}'
    depth = 3000
    tree = (node + ', "children": [') * depth + node + "}" + "]}" * depth
    body = json.dumps(_work()).replace('"tree": {', '"tree": ' + tree + ', "unused": {', 1)
    with pytest.raises(MalformedMessage):
        messages.decode_work(body)
