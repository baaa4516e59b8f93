"""The neutron-lbaas shape: an API that casts to an agent over oslo.messaging,
and an agent that reports back with an RPC call to the plugin's RPC server.

Three roles, each its own process, as neutron-server and the LBaaS agent ran:

- ``uvicorn bench.baselines.oslo_http:api --workers 2`` (the same API setup
  as the Celery peer, for fairness): ``POST /v1/loadbalancers`` inserts the
  task as PENDING and COMMITs, then casts ``create_loadbalancer`` to the
  agent's host topic (neutron-lbaas's ``LbaasAgentApi``: ``prepare(server=
  host).cast``) and answers 202;
- ``python -m bench.baselines.oslo_http agent``: an oslo RPC server with the
  threading executor; its endpoint runs the noop driver and reports with a
  ``call`` to ``update_status`` (neutron-lbaas's agent→plugin API is calls);
- ``python -m bench.baselines.oslo_http rpc-server``: the plugin side's RPC
  server, threading executor; ``update_status`` marks the row ACTIVE, COMMITs
  and replies.

Queues are quorum queues (``[oslo_messaging_rabbit] rabbit_quorum_queue``, as
tether sets for its own RPC): durable, replicated, so a cast survives a broker
restart; oslo's driver publishes with confirms and, through kombu's default,
persistent messages. The reply queues of calls stay oslo's transient ones.
oslo.messaging acks a cast when it arrives, before the endpoint runs
(DESIGN.md), which this peer accepts as neutron-lbaas did.

oslo.messaging 18.3 works only with the global ``cfg.CONF``; each process
sets its options there. Settings come from the environment :mod:`bench.peers`
sets: ``BENCH_TRANSPORT_URL``, ``BENCH_DB``, ``BENCH_COUNTS_DIR``,
``BENCH_READY_FILE``, ``BENCH_AGENT_THREADS``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import uuid
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import fastapi
import pydantic
from oslo_config import cfg

from bench.baselines import peer_db

with warnings.catch_warnings():
    # oslo.messaging imports oslo.service, which imports eventlet and warns.
    warnings.simplefilter("ignore")
    import oslo_messaging

AGENT_TOPIC = "bench-lbaas-agent"
PLUGIN_TOPIC = "bench-lbaas-plugin"
AGENT_HOST = "agent-1"
PLUGIN_HOST = "plugin-1"
CALL_TIMEOUT = 60


def _transport() -> Any:
    """The RPC transport on the global ``cfg.CONF``, with quorum queues."""
    cfg.CONF([], project="bench-oslo-http", default_config_files=[])
    oslo_messaging.set_transport_defaults(control_exchange="bench-lbaas")
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=os.environ["BENCH_TRANSPORT_URL"])
    # The driver registered its options while loading; connections read them when first used.
    cfg.CONF.set_override("rabbit_quorum_queue", True, group="oslo_messaging_rabbit")
    return transport


# --- the API ----------------------------------------------------------------


class _AgentApi:
    """Plugin → agent, as neutron-lbaas's ``LbaasAgentApi``: casts to the agent's host."""

    def __init__(self, transport: Any) -> None:
        target = oslo_messaging.Target(topic=AGENT_TOPIC, version="1.0")
        self.client = oslo_messaging.get_rpc_client(transport, target)

    def create_loadbalancer(self, host: str, task_id: str) -> None:
        self.client.prepare(server=host).cast({}, "create_loadbalancer", task_id=task_id)


@contextlib.asynccontextmanager
async def _lifespan(app: fastapi.FastAPI) -> AsyncIterator[None]:
    # In each uvicorn worker: a transport must not cross the fork.
    transport = _transport()
    app.state.agent_api = _AgentApi(transport)
    yield
    transport.cleanup()


api = fastapi.FastAPI(lifespan=_lifespan)


class LoadBalancerIn(pydantic.BaseModel):
    provider: str
    name: str | None = None


@api.post("/v1/loadbalancers", status_code=202)
def create_loadbalancer(body: LoadBalancerIn, request: fastapi.Request) -> dict[str, str]:
    task_id = uuid.uuid4().hex
    peer_db.accept(peer_db.sessions("api"), task_id)
    # One agent: the scheduler's choice is trivial, its cost left out.
    request.app.state.agent_api.create_loadbalancer(AGENT_HOST, task_id)
    return {"id": task_id, "provisioning_status": "PENDING_CREATE"}


@api.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


# --- the agent ----------------------------------------------------------------


def noop_driver(task_id: str) -> None:
    """The driver call: no work at all, as tether's ``noop`` driver."""


class AgentManager:
    """The agent's endpoint: run the driver, report the status with a call."""

    target = oslo_messaging.Target(version="1.0")

    def __init__(self, transport: Any) -> None:
        target = oslo_messaging.Target(topic=PLUGIN_TOPIC, version="1.0")
        self.plugin_rpc = oslo_messaging.get_rpc_client(transport, target, timeout=CALL_TIMEOUT)

    def create_loadbalancer(self, ctxt: dict[str, Any], task_id: str) -> None:
        noop_driver(task_id)
        self.plugin_rpc.call(ctxt, "update_status", task_id=task_id, provisioning_status="ACTIVE")


# --- the plugin's RPC server ------------------------------------------------------


class PluginCallbacks:
    """The plugin's RPC endpoint: record what an agent reports."""

    target = oslo_messaging.Target(version="1.0")

    def update_status(self, ctxt: dict[str, Any], task_id: str, provisioning_status: str) -> None:
        peer_db.finish(peer_db.sessions("rpc-server"), task_id, provisioning_status)


def serve(role: str) -> None:
    """Run the agent or the plugin's RPC server until SIGTERM."""
    transport = _transport()
    if role == "agent":
        target = oslo_messaging.Target(topic=AGENT_TOPIC, server=AGENT_HOST)
        endpoints: list[Any] = [AgentManager(transport)]
    else:
        target = oslo_messaging.Target(topic=PLUGIN_TOPIC, server=PLUGIN_HOST)
        endpoints = [PluginCallbacks()]
    server = oslo_messaging.get_rpc_server(transport, target, endpoints, executor="threading")
    if role == "agent":
        # The agent's driver calls at once, as many as tether's agent workers.
        cfg.CONF.set_override("executor_thread_pool_size", int(os.environ.get("BENCH_AGENT_THREADS", "32")))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server.start()
    ready_file = os.environ.get("BENCH_READY_FILE")
    if ready_file:
        Path(ready_file).touch()
    while not stop.wait(0.5):
        pass
    server.stop()
    server.wait()
    transport.cleanup()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ("agent", "rpc-server"):
        sys.exit("usage: python -m bench.baselines.oslo_http agent|rpc-server")
    serve(sys.argv[1])
