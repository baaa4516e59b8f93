"""Random bodies against the message schemas, and the consumers' answers to
messages the broker client itself cannot read (see also
tests/functional/test_message_fuzz.py, which fuzzes a real deployment)."""

from __future__ import annotations

import json
import time
from typing import Any

import hypothesis
import kombu
import msgspec
import pytest
from hypothesis import strategies as st
from oslo_config import cfg

from tests.unit.conftest import sample_work, wait_for
from tether.agent.consumer import WorkConsumer
from tether.agent.runner import Runner
from tether.common import messages, transport, wire
from tether.common.exceptions import MalformedMessage
from tether.common.states import Outcome

SETTINGS = hypothesis.settings(max_examples=300, deadline=None, derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _decode_results(raw: bytes) -> messages.Results:
    """A results message read as the plugin reads it: as a whole, then each result."""
    return messages.Results(
        results=[wire.decode_batched_result(r, i) for i, r in enumerate(wire.decode_results(raw))]
    )


DECODERS = {"work": wire.decode_work, "result": wire.decode_result, "results": _decode_results}


def _valid(kind: str) -> dict[str, Any]:
    if kind == "work":
        return dict(msgspec.to_builtins(sample_work("noop")))
    result = messages.Result(task_id="t", attempt=1, outcome=Outcome.FAILED, agent_id="a")
    if kind == "results":
        return dict(msgspec.to_builtins(messages.Results(results=[result, result])))
    return dict(msgspec.to_builtins(result))


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*path, index))
    return found


def _decode_or_refuse(kind: str, raw: bytes) -> Any:
    """Decode; a refusal must be MalformedMessage with a reason fit for a header."""
    try:
        return DECODERS[kind](raw)
    except MalformedMessage as exc:
        assert exc.msg.startswith("Malformed message: ")
        exc.msg.encode("utf-8")  # it goes into an AMQP header
        return None


@pytest.mark.parametrize("kind", DECODERS)
@SETTINGS
@hypothesis.given(raw=st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_reason_and_nothing_else(kind: str, raw: bytes) -> None:
    assert _decode_or_refuse(kind, raw) is None


@pytest.mark.parametrize("kind", DECODERS)
@SETTINGS
@hypothesis.given(value=json_values)
def test_random_json_is_refused_unless_it_is_a_message(kind: str, value: Any) -> None:
    assert _decode_or_refuse(kind, json.dumps(value).encode()) is None


@pytest.mark.parametrize("kind", DECODERS)
@SETTINGS
@hypothesis.given(data=st.data())
def test_a_message_with_one_value_replaced_is_refused_or_can_be_carried_on(kind: str, data: Any) -> None:
    body = _valid(kind)
    path = data.draw(st.sampled_from(_paths(body)))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = data.draw(json_values)
    decoded = _decode_or_refuse(kind, json.dumps(body).encode())
    if decoded is not None:
        # Whatever is accepted can be stored and sent on without surprises.
        messages.encode(decoded).decode("utf-8")


@pytest.mark.parametrize("kind", DECODERS)
@SETTINGS
@hypothesis.given(data=st.data())
def test_a_truncated_message_is_refused_as_not_json(kind: str, data: Any) -> None:
    raw = json.dumps(_valid(kind)).encode()
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(MalformedMessage, match=r"not JSON|is empty"):
        DECODERS[kind](raw[:cut])


@pytest.mark.parametrize(
    ("version", "words"),
    [
        (3, "version 3 is unknown"),
        ("1", "version '1' is unknown"),
        (True, "version True is unknown"),
        ([1], r"version \[1\] is unknown"),
        ({"v": 1}, r"version \{'v': 1\} is unknown"),
        (None, "has no schema version"),
    ],
)
def test_a_wrong_version_of_any_type_is_named(version: Any, words: str) -> None:
    body = _valid("work") | {"version": version}
    with pytest.raises(MalformedMessage, match=words):
        wire.decode_work(json.dumps(body).encode())


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\xef\xbb\xbf{}", "not JSON"),
        ('{"version": 1}'.encode("utf-16"), "not UTF-8"),
        (b'{"version": 1, "n": NaN}', "NaN is not a JSON number"),
        (b'{"version": 1, "kind": "work", "s": "\xed\xa0\x80"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON object but a JSON array"),
        (b"   ", "is empty"),
        (b"[]", "not a JSON object but a JSON array"),
    ],
)
def test_bodies_json_loads_would_take_or_choke_on_are_refused_with_a_reason(raw: bytes, words: str) -> None:
    with pytest.raises(MalformedMessage, match=words):
        wire.decode_work(raw)


def test_a_lone_surrogate_is_refused_naming_where_it_is() -> None:
    raw = json.dumps(_valid("work")).replace('"id": "t"', '"id": "t\\udc00"').encode()
    with pytest.raises(MalformedMessage, match=r"lone UTF-16 surrogate in a string at \$\.task\.id"):
        wire.decode_work(raw)


def test_a_paired_surrogate_escape_is_an_ordinary_character() -> None:
    raw = json.dumps(_valid("work")).replace('"id": "t"', '"id": "t\\ud83d\\ude00"').encode()
    assert wire.decode_work(raw).task_id == "t\N{GRINNING FACE}"


def test_an_oversized_body_is_refused_before_it_is_parsed() -> None:
    raw = b"{" + b" " * wire.MAX_BODY_BYTES + b"}"
    with pytest.raises(MalformedMessage, match=f"more than the {wire.MAX_BODY_BYTES}"):
        wire.decode_result(raw)


@pytest.mark.parametrize(
    ("content_type", "content_encoding", "words"),
    [
        ("text/plain", None, "content type 'text/plain'"),
        ("application/json", "utf-16", "content encoding 'utf-16'"),
        ("application/json", "gzip", "content encoding 'gzip'"),
    ],
)
def test_properties_that_say_the_body_is_not_utf8_json_are_named(
    content_type: str, content_encoding: str | None, words: str
) -> None:
    with pytest.raises(MalformedMessage, match=words):
        wire.decode_work(json.dumps(_valid("work")).encode(), content_type, content_encoding)


@pytest.mark.parametrize(
    ("content_type", "content_encoding"),
    [(None, None), ("application/json", "utf-8"), ("Application/JSON; charset=utf-8", "binary")],
)
def test_what_tether_and_plain_kombu_publishers_send_is_read(
    content_type: str | None, content_encoding: str | None
) -> None:
    assert (
        wire.decode_work(json.dumps(_valid("work")).encode(), content_type, content_encoding).task_id == "t"
    )


class UnknownTaskPlugin:
    """Answers claims as the plugin does for a task it never created."""

    timeout = 1.0

    def claim_until_answered(self, task_id: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"run": False, "unknown": True, "reason": f"task {task_id} does not exist"}


def _dead_letter(conn: kombu.Connection, timeout: float = 5.0) -> Any:
    # The channel's own basic_get: Queue.get would raise kombu's decoding
    # error again for a message dead-lettered because of it.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = conn.default_channel.basic_get(transport.DEAD_LETTER_QUEUE, no_ack=True)
        if message is not None:
            return message
        time.sleep(0.01)
    raise AssertionError("nothing was dead-lettered")


@pytest.fixture
def consumer_on_memory(conf: cfg.ConfigOpts) -> Any:
    broker = transport.Broker(conf)
    runner = Runner({}, UnknownTaskPlugin(), "agent-1", "host", 30.0)  # type: ignore[arg-type]
    consumer = WorkConsumer(broker, runner, ["noop"], workers=1, prefetch=1, shutdown_timeout=1)
    with broker.connect() as conn:
        consumer.on_connect(conn)
        yield broker, consumer, conn
        consumer.held.stop()


def _publish(broker: transport.Broker, conn: kombu.Connection, body: bytes, **headers: Any) -> None:
    kombu.Producer(conn.channel()).publish(
        body,
        exchange=broker.work_exchange,
        routing_key="noop",
        content_type="application/json",
        content_encoding="utf-8",
        headers=headers,
    )


def _turn(consumer: WorkConsumer, conn: kombu.Connection, until: Any) -> None:
    def tick() -> bool:
        consumer.wait(conn)
        consumer.on_tick(conn)
        return bool(until())

    wait_for(tick)


def test_a_lying_compression_header_is_dead_lettered_instead_of_raising_out_of_the_loop(
    consumer_on_memory: Any,
) -> None:
    broker, consumer, conn = consumer_on_memory
    _publish(broker, conn, json.dumps(_valid("work")).encode(), compression="application/x-bogus")
    consumer.wait(conn)  # kombu fails to decompress here, before our callback
    consumer.on_tick(conn)
    reason = _dead_letter(conn).headers[transport.DEAD_LETTER_REASON]
    assert "cannot be decoded" in reason
    assert "'compression' header says 'application/x-bogus'" in reason


def test_work_for_a_task_the_plugin_never_created_is_dead_lettered_not_dropped(
    consumer_on_memory: Any,
) -> None:
    broker, consumer, conn = consumer_on_memory
    _publish(broker, conn, json.dumps(_valid("work")).encode())
    found: list[Any] = []

    def dead_lettered() -> bool:
        message = kombu.Queue(transport.DEAD_LETTER_QUEUE)(conn.default_channel).get(no_ack=True)
        if message is not None:
            found.append(message)
        return bool(found)

    _turn(consumer, conn, dead_lettered)
    reason = found[0].headers[transport.DEAD_LETTER_REASON]
    assert reason.startswith("the plugin has no task 't' (task t does not exist)")
