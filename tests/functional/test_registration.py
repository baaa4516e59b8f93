"""Agents started before their plugin (a host booting) register as soon as
the plugin listens, not a whole RPC timeout and report interval later."""

from __future__ import annotations

import pathlib
import time

import pytest

from .daemons import Database, Deployment
from .pacing import eventually
from .rabbitmq import RabbitMQNode

pytestmark = [pytest.mark.functional, pytest.mark.supervision]

ADMIN = {"X-Roles": "admin"}


def test_an_agent_started_before_its_plugin_registers_once_the_plugin_listens(
    rabbitmq: RabbitMQNode, database: Database, tmp_path: pathlib.Path
) -> None:
    # Reports and their answers slow enough that waiting for either would
    # keep the agent unregistered for a minute.
    deployment = Deployment(
        tmp_path, rabbitmq, database, agents=1, agent_options={"report_interval": 30, "rpc_timeout": 30}
    )
    deployment.migrate()
    (agent,) = deployment.agents
    agent.start()
    try:
        # The agent's first reports go to a plugin that is not there yet.
        eventually(lambda: "serves providers" in agent.log(), 30, "the agent started", agent.log)
        time.sleep(1)
        deployment.start_plugin()
        listening = time.monotonic()

        def registered() -> bool:
            agents = deployment.http.get("/v1/agents", headers=ADMIN).json()["agents"]
            return any(a["alive"] for a in agents)

        eventually(registered, 15, "the agent registered", deployment.logs)
        assert time.monotonic() - listening < 15
    finally:
        assert set(deployment.stop().values()) == {0}, deployment.logs()
