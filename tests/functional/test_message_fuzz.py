"""Malformed messages against a real deployment (DESIGN.md guarantee 7).

Random, truncated, oversized, wrongly versioned and wrongly typed bodies, and
lying or huge headers, go to the agent's work queues and the plugin's results
queue; malformed calls and casts, and raw envelopes oslo.messaging cannot
read, go to the plugin's RPC server. Good changes go through the REST API in
between. Afterwards: both daemons run and answer /healthz, every bad message
is in the dead-letter queue with a reason naming what was wrong, every bad
call came back as an error, and every good change is ACTIVE.

``TETHER_FUZZ_SEED`` replays a run (the seed is printed), ``TETHER_FUZZ_CASES``
and ``TETHER_FUZZ_SECONDS`` raise the budget; the run stops at whichever of
the two it reaches first.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import kombu
import pytest
from oslo_config import cfg

from tether.common import messages, rpc, transport, wire
from tether.common.states import Operation

from .daemons import Database, Deployment, free_port
from .pacing import eventually
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional

SEED = int(os.environ.get("TETHER_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CASES = int(os.environ.get("TETHER_FUZZ_CASES") or 600)
SECONDS = float(os.environ.get("TETHER_FUZZ_SECONDS") or 45)
#: Oversized bodies cost 8 MiB each way; a few prove the limit.
OVERSIZED = 2
GOOD_EVERY = 20

NO_TASK = ("no task",)
NOT_JSON = ("not JSON", "is empty")

# tether.common.rpc imports oslo.messaging quietly (it warns about eventlet).
MessagingTimeout = rpc.oslo_messaging.MessagingTimeout


@dataclasses.dataclass
class Case:
    """One bad message and the words its dead-letter reason must hold (any of them)."""

    kind: str
    queue: str
    body: bytes
    expect: tuple[str, ...]
    content_type: str | None = "application/json"
    content_encoding: str | None = "utf-8"
    headers: dict[str, Any] = dataclasses.field(default_factory=dict)
    message_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


@dataclasses.dataclass
class Outcome:
    tried: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    def fail(self, what: str) -> None:
        self.failures.append(what)


class Bodies:
    """Valid-looking bodies naming tasks no plugin created, and ways to spoil them."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def work(self, provider: str) -> dict[str, Any]:
        resource = messages.DesiredResource(
            type="loadbalancer",
            id=self.uid(),
            project_id="fuzz",
            attributes={"name": "fuzz", "vip_address": "192.0.2.1"},
        )
        task = messages.WorkTask(
            id=self.uid(),
            operation=self.rng.choice(list(Operation)),
            resource_type="loadbalancer",
            resource_id=resource.id,
            root_id=resource.id,
            generation=self.rng.randint(1, 5),
            attempt=self.rng.randint(1, 3),
            project_id="fuzz",
            request_id=f"req-{self.uid()}",
            provider=provider,
        )
        return _builtins(messages.Work(task=task, resource=resource, tree=resource))

    def result(self) -> dict[str, Any]:
        error_type = self.rng.choice([None, "DeviceUnreachable"])
        return _builtins(
            messages.Result(
                task_id=self.uid(),
                attempt=self.rng.randint(1, 3),
                outcome=self.rng.choice(list(messages.Outcome)),
                agent_id="fuzz-agent",
                host="fuzz-host",
                statuses={self.uid(): "ONLINE"},
                error=messages.ReportedError(type=error_type, message="fuzz") if error_type else None,
                started_at=messages.now(),
                finished_at=messages.now(),
            )
        )

    def junk(self, depth: int = 0) -> Any:
        """A random JSON value of some type."""
        choices: list[Callable[[], Any]] = [
            lambda: self.rng.randint(-(2**40), 2**40),
            lambda: self.rng.random() * 1e6,
            lambda: self.rng.choice([True, False, None]),
            lambda: "".join(chr(self.rng.choice([0x41, 0xE9, 0x4E2D, 0x1F600, 0x202E])) for _ in range(5)),
        ]
        if depth < 2:
            choices += [
                lambda: [self.junk(depth + 1) for _ in range(self.rng.randint(0, 3))],
                lambda: {f"k{i}": self.junk(depth + 1) for i in range(self.rng.randint(0, 3))},
            ]
        return self.rng.choice(choices)()


# Paths into each kind of body, and values of a type the schema refuses there.
_WRONG_TYPES: dict[str, list[tuple[tuple[str, ...], list[Any]]]] = {
    "work": [
        (("kind",), ["result", 1, None]),
        (("task",), ["task", [], 7]),
        (("task", "id"), [5, None, [], {}, ""]),
        (("task", "operation"), ["explode", 1, None]),
        (("task", "attempt"), ["1", 1.5, 0, -3, True, 2**40]),
        (("task", "generation"), ["2", 0, None, 2**31]),
        (("task", "provider"), [1, ["noop"], "x" * 300]),
        (("resource",), [[], "lb", 3]),
        (("resource", "attributes"), [[], "x", 1]),
        (("resource", "children"), [{}, "x", [1]]),
        (("tree",), [None, "tree"]),
    ],
    "result": [
        (("kind",), ["work", 2]),
        (("task_id",), [1, None, {}, "", "t" * 256]),
        (("attempt",), ["1", 0, 1.25, False, 2**33]),
        (("outcome",), ["MAYBE", 0, None]),
        (("agent_id",), [[], 3]),
        (("statuses",), [[], "ONLINE", {"x": 1}]),
        (("error",), ["boom", 5, {"type": 1, "message": "m"}, {"message": "no type"}]),
        (("host",), [1, []]),
    ],
}
_REQUIRED = {
    "work": [
        ("kind",),
        ("task",),
        ("resource",),
        ("tree",),
        ("task", "id"),
        ("task", "operation"),
        ("task", "attempt"),
        ("task", "provider"),
        ("resource", "id"),
        ("resource", "attributes"),
    ],
    "result": [("kind",), ("task_id",), ("attempt",), ("outcome",), ("agent_id",)],
}


def _set(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return body


def _delete(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = body
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return body


def _json(body: Any) -> bytes:
    return json.dumps(body).encode()


def _builtins(message: messages.Work | messages.Result) -> dict[str, Any]:
    # A fresh tree of dicts each time: a Work may share one struct between resource and tree.
    return dict(json.loads(messages.encode(message)))


class Generator:
    """Bad messages for the work queues and the results queue, from one seed."""

    def __init__(self, rng: random.Random, work_queues: list[str]) -> None:
        self.rng = rng
        self.bodies = Bodies(rng)
        self.work_queues = work_queues
        self.oversized = 0
        self.makers: list[Callable[[str, str], Case]] = [
            self.random_bytes,
            self.truncated,
            self.wrong_version,
            self.wrong_type,
            self.missing_field,
            self.extra_fields,
            self.bad_content_type,
            self.bad_content_encoding,
            self.bad_compression,
            self.compressed,
            self.odd_headers,
            self.huge_headers,
            self.unicode_oddity,
            self.unknown_ids,
            self.deep_nesting,
            self.not_an_object,
            self.json_constants,
            self.huge_number,
            self.wrong_kind,
            self.oversized_body,
        ]

    def case(self) -> Case:
        if self.rng.random() < 0.5:
            kind, queue = "work", self.rng.choice(self.work_queues)
        else:
            kind, queue = "result", transport.RESULTS_QUEUE
        return self.rng.choice(self.makers)(kind, queue)

    def valid(self, kind: str, queue: str) -> dict[str, Any]:
        if kind == "work":
            body = self.bodies.work(queue.removeprefix("tether.work.").split(".")[0])
        else:
            body = self.bodies.result()
        return body

    def random_bytes(self, kind: str, queue: str) -> Case:
        body = self.rng.randbytes(self.rng.randint(0, 2048))
        return Case("random bytes", queue, body, (*NOT_JSON, "not a JSON object"))

    def truncated(self, kind: str, queue: str) -> Case:
        whole = _json(self.valid(kind, queue))
        return Case("truncated", queue, whole[: self.rng.randrange(len(whole))], NOT_JSON)

    def wrong_version(self, kind: str, queue: str) -> Case:
        body = self.valid(kind, queue)
        # Not 2: work of version 2 is a cascade delete's, read by agents of this release.
        version = self.rng.choice([0, 3, 99, -1, "1", 1.5, True, [1], {"v": 1}, None, "missing"])
        if version == "missing":
            del body["version"]
        else:
            body["version"] = version
        return Case(f"version {version!r}", queue, _json(body), ("version",))

    def wrong_type(self, kind: str, queue: str) -> Case:
        path, values = self.rng.choice(_WRONG_TYPES[kind])
        value = self.rng.choice(values)
        body = _set(self.valid(kind, queue), path, value)
        where = "$." + ".".join(path)
        return Case(f"{where} = {value!r:.40}", queue, _json(body), (f"breaks its schema at {where}",))

    def missing_field(self, kind: str, queue: str) -> Case:
        path = self.rng.choice(_REQUIRED[kind])
        body = _delete(self.valid(kind, queue), path)
        return Case(f"no {'.'.join(path)}", queue, _json(body), (f"missing required field `{path[-1]}`",))

    def extra_fields(self, kind: str, queue: str) -> Case:
        # New optional fields keep the version: the message is read, and
        # refused for naming no task.
        body = self.valid(kind, queue)
        for i in range(self.rng.randint(1, 5)):
            body[f"extra_{i}_{self.rng.randrange(1000)}"] = self.bodies.junk()
        if kind == "work":
            body["task"]["fuzz"] = self.bodies.junk()
        return Case("extra fields", queue, _json(body), NO_TASK)

    def bad_content_type(self, kind: str, queue: str) -> Case:
        content_type = self.rng.choice(
            [
                "text/plain",
                "application/xml",
                "application/x-msgpack",
                "image/png",
                "application/jsonx",
                "é/ü",
            ]
        )
        body = _json(self.valid(kind, queue))
        return Case(f"content type {content_type}", queue, body, ("content type",), content_type=content_type)

    def bad_content_encoding(self, kind: str, queue: str) -> Case:
        encoding = self.rng.choice(["utf-16", "latin-1", "gzip", "base64", "cp500", "x" * 200])
        body = _json(self.valid(kind, queue))
        return Case(
            f"content encoding {encoding:.20}", queue, body, ("content encoding",), content_encoding=encoding
        )

    def bad_compression(self, kind: str, queue: str) -> Case:
        compression = self.rng.choice(
            ["application/x-gzip", "application/x-bz2", "bogus", "application/x-lzma"]
        )
        body = _json(self.valid(kind, queue))
        return Case(
            f"compression {compression}",
            queue,
            body,
            ("cannot be decoded",),
            headers={"compression": compression},
        )

    def compressed(self, kind: str, queue: str) -> Case:
        # Honest compression is undone by kombu; the message then reads fine.
        body = zlib.compress(_json(self.valid(kind, queue)))
        return Case("zlib-compressed", queue, body, NO_TASK, headers={"compression": "application/x-gzip"})

    def odd_headers(self, kind: str, queue: str) -> Case:
        headers: dict[str, Any] = {
            transport.DEAD_LETTER_REASON: "forged reason",
            "x-death": self.rng.choice(["not a list", [1, 2], [{"reason": 5}]]),
            "x-delivery-count": "many",
            "request_id": self.bodies.junk(),
            "compression": "",
        }
        for i in range(self.rng.randint(1, 20)):
            headers[f"h{i}-{chr(self.rng.choice([0x41, 0xE9, 0x4E2D]))}"] = self.bodies.junk()
        return Case("odd headers", queue, _json(self.valid(kind, queue)), NO_TASK, headers=headers)

    def huge_headers(self, kind: str, queue: str) -> Case:
        # The whole header table must fit one AMQP frame (128 KiB), with the
        # dead-letter headers added later.
        if self.rng.random() < 0.5:
            headers: dict[str, Any] = {"huge": "h" * self.rng.randint(10_000, 60_000)}
        else:
            headers = {f"k{i}": i for i in range(self.rng.randint(200, 2000))}
        return Case("huge headers", queue, _json(self.valid(kind, queue)), NO_TASK, headers=headers)

    def unicode_oddity(self, kind: str, queue: str) -> Case:
        body = self.valid(kind, queue)
        id_path = ("task", "id") if kind == "work" else ("task_id",)
        text = json.dumps(body)
        choice = self.rng.randrange(8)
        if choice == 0:
            return Case("byte order mark", queue, b"\xef\xbb\xbf" + text.encode(), NOT_JSON)
        if choice == 1:
            return Case("UTF-16 body", queue, text.encode("utf-16"), NOT_JSON)
        if choice == 2:
            raw = _json(_set(body, id_path, "SURROGATE")).replace(b"SURROGATE", b"\xed\xa0\x80")
            return Case("encoded surrogate", queue, raw, NOT_JSON)
        if choice == 3:
            raw = _json(_set(body, id_path, "SURROGATE")).replace(b"SURROGATE", b"\\udc00x")
            return Case("escaped lone surrogate", queue, raw, ("lone UTF-16 surrogate",))
        if choice == 4:
            raw = _json(_set(body, id_path, "a\u0000b"))
            return Case("NUL in an id", queue, raw, ("breaks its schema at $." + ".".join(id_path),))
        if choice == 5:
            raw = _json(_set(body, id_path, "SLASH")).replace(b"SLASH", b"\xc0\xaf")
            return Case("overlong UTF-8", queue, raw, NOT_JSON)
        if choice == 6:
            raw = text.replace('"kind"', '"ki\tnd"', 1).encode()
            return Case("raw control character", queue, raw, NOT_JSON)
        odd = self.rng.choice(
            [
                "\u202eevil",
                "😀" * 10,
                "e\u0301\u0301\u0301",
                "\u200b",
                "\ufeffid",
                "\U0001d518\U0001d52b\U0001d526",
            ]
        )
        return Case(
            "unicode id", queue, json.dumps(_set(body, id_path, odd), ensure_ascii=False).encode(), NO_TASK
        )

    def unknown_ids(self, kind: str, queue: str) -> Case:
        return Case("unknown task", queue, _json(self.valid(kind, queue)), NO_TASK)

    def deep_nesting(self, kind: str, queue: str) -> Case:
        depth = self.rng.choice([200, 2000, 100_000])
        body = self.valid(kind, queue)
        marker = '"DEEP"'
        _set(body, ("resource", "attributes", "x") if kind == "work" else ("statuses",), "DEEP")
        raw = json.dumps(body).replace(marker, "[" * depth + "]" * depth).encode()
        if kind == "work" and depth == 200:
            return Case("deep attributes", queue, raw, NO_TASK)
        expect = ("not JSON", "nested too deeply", "breaks its schema")
        return Case(f"nested {depth}", queue, raw, expect)

    def not_an_object(self, kind: str, queue: str) -> Case:
        value = self.rng.choice([[self.valid(kind, queue)], "work", 1, None, True, []])
        return Case(f"JSON {type(value).__name__}", queue, _json(value), ("not a JSON object",))

    def json_constants(self, kind: str, queue: str) -> Case:
        constant = self.rng.choice(["NaN", "Infinity", "-Infinity"])
        raw = _json(self.valid(kind, queue)).replace(
            b'"version": 1', b'"version": 1, "n": ' + constant.encode()
        )
        return Case(constant, queue, raw, ("not JSON",))

    def huge_number(self, kind: str, queue: str) -> Case:
        digits = self.rng.choice([20, 5000])
        raw = _json(self.valid(kind, queue)).replace(b'"attempt": ', b'"attempt": ' + b"9" * digits, 1)
        return Case(f"{digits}-digit attempt", queue, raw, ("not JSON", "breaks its schema at $"))

    def wrong_kind(self, kind: str, queue: str) -> Case:
        other = self.bodies.result() if kind == "work" else self.bodies.work("noop")
        return Case("the other kind of message", queue, _json(other), ("breaks its schema at $",))

    def oversized_body(self, kind: str, queue: str) -> Case:
        if self.oversized >= OVERSIZED:
            return self.unknown_ids(kind, queue)
        self.oversized += 1
        body = self.valid(kind, queue)
        padding = "p" * (wire.MAX_BODY_BYTES + self.rng.randint(1, 4096))
        _set(body, ("resource", "attributes", "padding") if kind == "work" else ("error_padding",), padding)
        return Case("oversized", queue, _json(body), ("bytes, more than",))


@dataclasses.dataclass
class Call:
    """A malformed RPC call and what its error must say (exception type, then words)."""

    kind: str
    method: str
    kwargs: dict[str, Any]
    errors: tuple[str, ...]
    words: tuple[str, ...]
    version: str | None = None


def _claim_args(rng: random.Random) -> dict[str, Any]:
    return {
        "task_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "agent_id": "fuzz-agent",
        "claim_id": str(uuid.UUID(int=rng.getrandbits(128))),
        "redelivered": False,
        "driver_timeout": 30.0,
    }


def _state(rng: random.Random) -> dict[str, Any]:
    return {
        "agent_id": "fuzz-agent",
        "host": "fuzz",
        "providers": ["noop"],
        "started_at": messages.now(),
        "workers": 1,
        "in_flight": 0,
        "statuses": {},
        "stats": {},
    }


def rpc_call(rng: random.Random) -> Call:
    """One malformed call to the plugin's RPC API."""
    bad = "MalformedMessage"
    choice = rng.randrange(9)
    if choice == 0:
        method = rng.choice(["drop_tables", "claim_all", "__init__", "_run", "sessionmaker", ""])
        return Call("unknown method", method, {}, ("NoSuchMethod",), ())
    if choice == 1:
        return Call("wrong version", "claim", _claim_args(rng), ("UnsupportedVersion",), (), version="9.0")
    if choice == 2:
        args = _claim_args(rng)
        name = rng.choice(list(args))
        del args[name]
        return Call(f"claim without {name}", "claim", args, (bad,), ("missing", name))
    if choice == 3:
        args = _claim_args(rng) | {"surprise": rng.random()}
        return Call("claim with an extra argument", "claim", args, (bad,), ("surprise",))
    if choice == 4:
        name, value = rng.choice(
            [
                ("task_id", 5),
                ("task_id", None),
                ("task_id", ["t"]),
                ("task_id", "t" * 1_000_000),
                ("task_id", "a\u0000b"),
                ("agent_id", {"id": 1}),
                ("claim_id", 3.5),
                ("redelivered", "yes"),
                ("driver_timeout", "30"),
                ("driver_timeout", -1),
                ("driver_timeout", 1e308),
                ("driver_timeout", True),
                ("request_id", 7),
            ]
        )
        return Call(f"claim {name}={value!r:.30}", "claim", _claim_args(rng) | {name: value}, (bad,), (name,))
    if choice == 5:
        name, value = rng.choice(
            [
                ("state", "alive"),
                ("state", []),
                ("state", None),
                ("state.agent_id", None),
                ("state.started_at", "yesterday"),
                ("state.started_at", "2024-01-01T00:00:00"),
                ("state.providers", "noop"),
                ("state.workers", "four"),
                ("state.statuses", ["ONLINE"]),
                ("state.host", {"name": "x"}),
            ]
        )
        if name == "state":
            state: Any = value
        else:
            state = _state(rng) | {name.split(".")[1]: value}
        return Call(f"report_state {name}", "report_state", {"state": state}, (bad,), (name,))
    if choice == 6:
        name, value = rng.choice(
            [("started_at", "not a time"), ("started_at", "2024-01-01"), ("started_at", 0), ("agent_id", 1)]
        )
        args = {"agent_id": "fuzz-agent", "started_at": messages.now()} | {name: value}
        return Call(f"resync {name}={value!r}", "resync", args, (bad,), (name,))
    if choice == 7:
        name, value = rng.choice(
            [("attempt", "1"), ("attempt", 0), ("expect_within", "soon"), ("task_id", 9)]
        )
        args = {
            "task_id": str(uuid.uuid4()),
            "attempt": 1,
            "agent_id": "fuzz-agent",
            "message": "m",
            "expect_within": 10.0,
        } | {name: value}
        return Call(f"progress {name}={value!r}", "progress", args, (bad,), (name,))
    return Call(
        "huge report_state",
        "report_state",
        {"state": {"agent_id": None, "blob": "b" * rng.randint(100_000, 3_000_000)}},
        (bad,),
        ("state.agent_id",),
    )


def raw_envelope(rng: random.Random) -> tuple[str, bytes, str]:
    """A body for the RPC server's queue that oslo.messaging cannot use (no reply asked)."""
    message = {"method": "claim", "args": {"task_id": 5}, "version": "1.0"}
    choices: list[tuple[str, Any]] = [
        ("random bytes", rng.randbytes(rng.randint(0, 512))),
        ("JSON array", [1, 2]),
        ("no oslo.message", {"oslo.version": "2.0"}),
        ("unknown envelope version", {"oslo.version": "9.9", "oslo.message": json.dumps(message)}),
        ("oslo.message not JSON", {"oslo.version": "2.0", "oslo.message": "{not json"}),
        ("oslo.message not a string", {"oslo.version": "2.0", "oslo.message": {"method": "claim"}}),
        (
            "method not a string",
            {"oslo.version": "2.0", "oslo.message": json.dumps({"method": 5, "args": {}})},
        ),
        (
            "args not an object",
            {"oslo.version": "2.0", "oslo.message": json.dumps({"method": "claim", "args": 1})},
        ),
        ("bad claim arguments", {"oslo.version": "2.0", "oslo.message": json.dumps(message)}),
        ("no method", {"oslo.version": "2.0", "oslo.message": json.dumps({"args": {}})}),
    ]
    kind, body = rng.choice(choices)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = rng.choice(["application/json", "application/json", "text/plain", "application/x-garbage"])
    return kind, raw, content_type


# -- the run -----------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, int]]:
    """A plugin and one agent whose /healthz the test can reach."""
    port = free_port()
    deployment = Deployment(
        tmp_path_factory.mktemp("fuzz"), rabbitmq, database, agents=1, agent_options={"metrics_port": port}
    )
    deployment.start()
    try:
        # The fuzz publishes to the plugin's exchanges at once: wait until its
        # pipeline has declared them (/readyz) and the agent has registered.
        eventually(
            lambda: (
                deployment.http.get("/readyz").status_code == 200
                and any(
                    a["alive"]
                    for a in deployment.http.get("/v1/agents", headers={"X-Roles": "admin"}).json()["agents"]
                )
            ),
            60,
            "the plugin is ready and the agent registered",
            deployment.logs,
        )
        yield deployment, port
    finally:
        codes = deployment.stop()
    assert set(codes.values()) == {0}, f"a daemon did not stop cleanly: {codes}\n{deployment.logs()}"


@pytest.fixture
def rpc_client(fuzz_deployment: tuple[Deployment, int]) -> Iterator[Any]:
    """An RPC client as agents hold one (oslo.messaging wants the global cfg.CONF)."""
    deployment, _ = fuzz_deployment
    conf = cfg.CONF
    conf([], project="tether", default_config_files=[])
    rpc.register_opts(conf)
    conf.set_override("transport_url", deployment.transport_url)
    rpc_transport = rpc.get_transport(conf)
    try:
        yield rpc.get_client(rpc_transport)
    finally:
        rpc_transport.cleanup()
        conf.reset()


def _publish(producer: kombu.Producer, exchange: str, routing_key: str, case: Case) -> None:
    producer.publish(
        case.body,
        exchange=exchange,
        routing_key=routing_key,
        content_type=case.content_type,
        content_encoding=case.content_encoding,
        headers=case.headers,
        message_id=case.message_id,
        delivery_mode=2,
        retry=False,
    )


def _good_change(deployment: Deployment, rng: random.Random) -> str:
    provider = rng.choice(["noop", "fake"])
    response = deployment.http.post("/v1/loadbalancers", json={"provider": provider, "name": "good"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _call(client: Any, call: Call) -> Any:
    prepared = client.prepare(timeout=15, retry=0, **({"version": call.version} if call.version else {}))
    return prepared.call({}, call.method, **call.kwargs)


def _check_call(client: Any, call: Call, outcome: Outcome) -> None:
    try:
        answer = _call(client, call)
    except MessagingTimeout:
        outcome.fail(f"RPC {call.kind}: no answer within 15 s (the server hangs or dropped it)")
        return
    except Exception as exc:  # noqa: BLE001 - the error is what is checked
        error_type = getattr(exc, "exc_type", type(exc).__name__)
        text = str(getattr(exc, "value", exc))
        if error_type not in call.errors:
            outcome.fail(f"RPC {call.kind}: {error_type} ({text[:200]}), expected {call.errors}")
        elif not all(word in text for word in call.words):
            outcome.fail(f"RPC {call.kind}: the error does not name {call.words}: {text[:300]}")
        return
    outcome.fail(f"RPC {call.kind}: answered {str(answer)[:200]} instead of an error")


def _still_serving(client: Any, rng: random.Random) -> str | None:
    call = Call("sanity", "claim", _claim_args(rng), (), ())
    try:
        answer = _call(client, call)
    except Exception as exc:  # noqa: BLE001
        return f"the RPC server stopped answering: {type(exc).__name__}: {exc}"
    if answer.get("run") is not False or not answer.get("unknown"):
        return f"a claim of an unknown task answered {answer}"
    return None


def _dead_letters(deployment: Deployment, wanted: set[str], timeout: float) -> dict[str, str]:
    """message id → dead-letter reason, once all ``wanted`` arrived (or the time is up)."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    with kombu.Connection(deployment.amqp_url) as connection:
        # py-amqp's own basic_get: kombu's would try to undo a lying
        # `compression` header, which is why some of these are here.
        channel = connection.default_channel
        while not wanted <= found.keys() and time.monotonic() < deadline:
            message = channel.basic_get(transport.DEAD_LETTER_QUEUE, no_ack=True)
            if message is None:
                time.sleep(0.1)
                continue
            headers = message.properties.get("application_headers") or {}
            found[str(message.properties.get("message_id"))] = str(headers.get(transport.DEAD_LETTER_REASON))
    return found


def _ready(deployment: Deployment, names: list[str]) -> dict[str, int]:
    with kombu.Connection(deployment.amqp_url) as connection:
        channel = connection.channel()
        return {name: int(channel.queue_declare(name, passive=True).message_count) for name in names}


def test_fuzzed_messages_are_dead_lettered_with_their_reason_and_good_changes_still_go_through(
    fuzz_deployment: tuple[Deployment, int], rpc_client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment, agent_port = fuzz_deployment
    rng = random.Random(SEED)
    outcome = Outcome()
    started = time.monotonic()
    log_offsets = {d.name: len(d.log()) for d in [deployment.plugin, *deployment.agents]}
    work_queues = ["tether.work.noop", "tether.work.fake"]
    generator = Generator(rng, work_queues)
    cases: list[Case] = []
    good: list[str] = []
    try:
        with kombu.Connection(deployment.amqp_url, transport_options={"confirm_publish": True}) as connection:
            producer = kombu.Producer(connection.channel())
            while outcome.tried < CASES and time.monotonic() - started < SECONDS:
                if outcome.tried % GOOD_EVERY == 0:
                    good.append(_good_change(deployment, rng))
                outcome.tried += 1
                roll = rng.random()
                if roll < 0.12:
                    call = rpc_call(rng)
                    if rng.random() < 0.25:
                        # A cast has no answer to check; the next sanity call
                        # shows whether the server survived it.
                        rpc_client.prepare(retry=0).cast({}, call.method, **call.kwargs)
                    else:
                        _check_call(rpc_client, call, outcome)
                elif roll < 0.18:
                    kind, body, content_type = raw_envelope(rng)
                    envelope = Case(kind, "", body, (), content_type=content_type)
                    _publish(producer, rpc.CONTROL_EXCHANGE, rpc.TOPIC, envelope)
                    if rng.random() < 0.3 and (problem := _still_serving(rpc_client, rng)):
                        outcome.fail(f"after a raw envelope ({kind}): {problem}")
                else:
                    case = generator.case()
                    cases.append(case)
                    exchange = (
                        transport.RESULTS_EXCHANGE if case.queue == transport.RESULTS_QUEUE else "tether.work"
                    )
                    routing_key = (
                        case.queue.removeprefix("tether.work.") if exchange == "tether.work" else case.queue
                    )
                    _publish(producer, exchange, routing_key, case)
        fuzzing = time.monotonic() - started

        if problem := _still_serving(rpc_client, rng):
            outcome.fail(problem)
        found = _dead_letters(deployment, {c.message_id for c in cases}, timeout=60)
        for case in cases:
            reason = found.pop(case.message_id, None)
            if reason is None:
                outcome.fail(f"{case.kind} on {case.queue}: not dead-lettered ({case.body[:80]!r})")
            elif not any(word in reason for word in case.expect):
                outcome.fail(
                    f"{case.kind} on {case.queue}: reason {reason[:300]!r} names none of {case.expect}"
                )
        for message_id, reason in found.items():
            outcome.fail(f"dead-lettered without being sent bad: {message_id}: {reason[:200]}")

        for resource_id in good:
            body = deployment.http.get(f"/v1/loadbalancers/{resource_id}?wait=30").json()
            if body["provisioning_status"] != "ACTIVE":
                outcome.fail(f"good change {resource_id} ended {body['provisioning_status']}: {body}")
        left = _ready(deployment, [*work_queues, transport.RESULTS_QUEUE])
        if any(left.values()):
            outcome.fail(f"messages still waiting in their queues: {left}")

        for daemon in [deployment.plugin, *deployment.agents]:
            if daemon.process is None or daemon.process.poll() is not None:
                outcome.fail(f"{daemon.name} died")
            fresh = daemon.log()[log_offsets[daemon.name] :]
            if "reconnecting to" in fresh:
                outcome.fail(f"{daemon.name} lost its broker connection while fuzzed:\n{fresh[-3000:]}")
        for url in (f"{deployment.base_url}/healthz", f"http://127.0.0.1:{agent_port}/healthz"):
            status = httpx2.get(url, timeout=10).status_code
            if status != 200:
                outcome.fail(f"{url} answered {status}")
    finally:
        with capsys.disabled():
            print(
                f"\nmessage fuzz: seed={SEED}, {outcome.tried} cases tried, {len(outcome.failures)} failed "
                f"({len(cases)} messages to dead-letter, {len(good)} good changes, "
                f"{time.monotonic() - started:.1f} s; replay with TETHER_FUZZ_SEED={SEED})"
            )
    assert not outcome.failures, (
        f"seed {SEED}: {len(outcome.failures)} of {outcome.tried} cases failed:\n"
        + "\n".join(outcome.failures[:40])
        + f"\n{deployment.logs()}"
    )
    assert fuzzing < SECONDS + 30
