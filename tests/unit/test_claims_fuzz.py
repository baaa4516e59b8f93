"""Random claims requests: refused with a reason or decided, never a crash
(the claims queue is a consumer of whatever reaches the broker)."""

from __future__ import annotations

import json
from typing import Any

import hypothesis
import kombu
import pytest
from hypothesis import strategies as st
from oslo_config import cfg

from tests.unit.conftest import wait_for
from tether.common import claims, transport, wire
from tether.common.claims import Claim
from tether.common.exceptions import MalformedMessage
from tether.plugin.service import Plugin

SETTINGS = hypothesis.settings(max_examples=300, deadline=None, derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

VALID = json.loads(claims.encode_request([Claim("t", "a", "c", redelivered=False, driver_timeout=30.0)]))


def _read(raw: bytes) -> list[Claim | None]:
    """What the claim server reads of a request: its claims, or None for a
    refused one; a refused request raises MalformedMessage with a reason fit
    for an AMQP header."""
    try:
        found: list[Claim | None] = []
        for index, item in enumerate(wire.decode_claims(raw)):
            try:
                found.append(wire.decode_claim(item, index))
            except MalformedMessage as exc:
                assert exc.msg.startswith("Malformed message: claims[")
                found.append(None)
        return found
    except MalformedMessage as exc:
        assert exc.msg.startswith("Malformed message: ")
        exc.msg.encode("utf-8")
        raise


@SETTINGS
@hypothesis.given(raw=st.binary(max_size=512))
def test_random_bytes_are_refused_with_a_reason(raw: bytes) -> None:
    with pytest.raises(MalformedMessage):
        _read(raw)


@SETTINGS
@hypothesis.given(value=json_values)
def test_random_json_is_refused_unless_it_is_a_claims_request(value: Any) -> None:
    with pytest.raises(MalformedMessage):
        _read(json.dumps(value).encode())


@SETTINGS
@hypothesis.given(field=st.sampled_from(sorted(VALID["claims"][0])), value=json_values)
def test_a_claim_with_any_value_in_any_field_is_decided_or_refused_alone(field: str, value: Any) -> None:
    request = json.loads(json.dumps(VALID))
    request["claims"] = [{**request["claims"][0], field: value}, request["claims"][0]]
    first, second = _read(json.dumps(request).encode())
    assert second is not None
    if first is not None:
        assert getattr(first, field) == value or field == "driver_timeout"


def test_deep_nesting_and_lone_surrogates_are_refused_not_raised() -> None:
    for deep in (
        b'{"version": 1, "kind": "claims", "claims": [' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"version": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ):
        with pytest.raises(MalformedMessage, match="nested too deeply"):
            _read(deep)
    surrogate = json.dumps(VALID).replace('"a"', '"\\ud800"').encode()
    with pytest.raises(
        MalformedMessage, match=r"lone UTF-16 surrogate in a string at \$\.claims\[0\]\.agent_id"
    ):
        _read(surrogate)


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    # The server runs on for every example: that it outlives them all is the point.
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    bodies=st.lists(st.binary(max_size=64) | json_values.map(lambda v: json.dumps(v).encode()), max_size=5)
)
def test_the_claim_server_outlives_whatever_reaches_its_queue(
    claim_server: Plugin, conf: cfg.ConfigOpts, bodies: list[bytes]
) -> None:
    broker = transport.Broker(conf)
    replies: list[bytes] = []
    with broker.connect() as conn:
        replies_queue = kombu.Queue("tether.reply.fuzz", auto_delete=True, no_ack=True)
        kombu.Consumer(
            conn.channel(), [replies_queue], no_ack=True, on_message=lambda m: replies.append(m.body)
        ).consume()
        producer = kombu.Producer(conn.channel())
        for body in [*bodies, claims.encode_request([Claim("no-such-task", "a", "c", False, 30.0)])]:
            producer.publish(
                body,
                exchange=broker.claims_exchange,
                routing_key=transport.CLAIMS_QUEUE,
                reply_to="tether.reply.fuzz",
                content_type="application/json",
            )

        def answered() -> bool:
            try:
                conn.drain_events(timeout=0.05)
            except TimeoutError:
                pass
            return any(b'"unknown":true' in reply for reply in replies)

        wait_for(answered, timeout=10)
    assert claim_server.pipeline.traffic.connected.is_set()
