"""The compiled schemas (jsonschema-rs) pass exactly the bodies jsonschema
passes: a create body is judged by the first, and a refusal is worded by
the second, so the two must never disagree on what is valid."""

from __future__ import annotations

from typing import Any

import hypothesis
import jsonschema
import pytest
from hypothesis import strategies as st

from tether.common.resource_types import Registry, _holds_float

REGISTRY = Registry.load()

# Values near the edges of what the types' schemas allow.
strings = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "noop",
            "noop\n",
            "Noop",
            "a" * 64,
            "a" * 65,
            "x" * 255,
            "x" * 256,
            "nul\x00",
            "10.0.0.1",
            "10.0.0.256",
            "010.0.0.1",
            "::1",
            "fe80::1%eth0",
            "::ffff:1.2.3.4",
            "1.2.3",
            "HTTP",
            "TCP",
            "ROUND_ROBIN",
            "\ud800",
            "é" * 255,
        ]
    ),
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 80, 65535, 65536, -1, 2**31, 2**63, True, False]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([80.0, 0.5, 1e300]),
)
scalars = st.one_of(st.none(), st.booleans(), strings, numbers)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(strings, inner, max_size=3),
    max_leaves=6,
)


def plausible(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a property's schema takes, and some just past its edges."""
    if "enum" in schema:
        fitting: st.SearchStrategy[Any] = st.sampled_from(schema["enum"])
    elif "anyOf" in schema:
        fitting = st.sampled_from(["10.0.0.1", "::1", "fe80::1", "0.0.0.0", "10.0.0.256", "1.2.3"])
    elif schema.get("type") == "integer" or "integer" in schema.get("type", []):
        low, high = schema.get("minimum", -(2**40)), schema.get("maximum", 2**40)
        fitting = st.integers(low - 1, high + 1)
    elif schema.get("type") == "boolean":
        fitting = st.booleans()
    elif "object" in schema.get("type", []):
        inner = {k: plausible(v) for k, v in schema.get("properties", {}).items()}
        fitting = (
            st.fixed_dictionaries({}, optional=inner)
            if inner
            else st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3)
        )
    elif schema.get("pattern", "").startswith("^[a-z0-9]"):
        fitting = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,64}\Z")
    elif schema.get("pattern", "").startswith("^[0-9]{3}"):
        fitting = st.from_regex(r"\A[0-9]{2,3}([-,][0-9]{3})*\Z")
    elif schema.get("pattern", "").startswith("^/"):
        fitting = st.sampled_from(["/", "/healthz", "x", "/\x00"])
    else:
        fitting = st.text(max_size=10) | strings
    if "null" in schema.get("type", []):
        fitting = st.none() | fitting
    return fitting


@st.composite
def bodies(draw: Any, name: str) -> dict[str, Any]:
    schema = REGISTRY[name].schema
    body: dict[str, Any] = {}
    for key, prop in schema["properties"].items():
        if (key in schema["required"] and draw(st.integers(0, 19)) > 0) or draw(st.booleans()):
            # Now and then anything at all.
            body[key] = draw(values if draw(st.integers(0, 19)) == 0 else plausible(prop))
    if draw(st.integers(0, 9)) == 0:
        body[draw(strings)] = draw(values)
    return body


@pytest.mark.parametrize("name", sorted(REGISTRY))
@hypothesis.settings(max_examples=400, deadline=None, derandomize=True)
@hypothesis.given(data=st.data())
def test_the_compiled_schema_agrees_with_jsonschema(name: str, data: Any) -> None:
    rtype = REGISTRY[name]
    body = data.draw(bodies(name))
    slow = jsonschema.exceptions.best_match(REGISTRY._validators[name].iter_errors(body)) is None
    fast = REGISTRY._passes(rtype, body)
    if fast:
        assert slow, f"the compiled schema passed what jsonschema refuses: {body!r}"
    elif slow and not _holds_float(body):
        # Not wrong (jsonschema judges), but only what jsonschema-rs cannot
        # take from Python should miss the fast path: a lone surrogate.
        assert _lone_surrogate(body), f"the compiled schema refused what jsonschema passes: {body!r}"


def _lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_lone_surrogate(v) for v in value)
    return False


def test_a_body_the_compiled_schema_refuses_is_worded_by_jsonschema() -> None:
    rtype = REGISTRY["loadbalancer"]
    assert not REGISTRY._passes(rtype, {"provider": "noop", "vip_address": "10.0.0.256"})
    assert REGISTRY._passes(rtype, {"provider": "noop", "vip_address": "10.0.0.1"})
    # 80.0 is no integer to tether, whatever JSON Schema says.
    assert not REGISTRY._passes(
        REGISTRY["listener"], {"loadbalancer_id": "x", "protocol": "TCP", "protocol_port": 80.0}
    )
