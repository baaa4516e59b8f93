"""Agents and providers (admin)."""

from __future__ import annotations

import argparse
from typing import Any

from cliff.lister import Lister
from cliff.show import ShowOne

from tether.cli import output
from tether.cli.client import api
from tether.cli.tasks import add_reason, reason


class ListAgents(Lister):
    """Agents, alive or dead, with their host and the work they hold."""

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        agents = api(self).get("/v1/agents")["agents"]
        columns = ["id", "host", "alive", "admin_state_up", "in_flight", "last_heartbeat"]
        return output.many(agents, columns, parsed_args)


class ShowAgent(ShowOne):
    """Show an agent."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The agent's id.")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        return output.one(api(self).get(f"/v1/agents/{parsed_args.id}"))


class _AgentState(ShowOne):
    up: bool

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The agent's id.")
        add_reason(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        body = {"admin_state_up": self.up} | reason(parsed_args)
        return output.one(api(self).request("PUT", f"/v1/agents/{parsed_args.id}", body))


class DisableAgent(_AgentState):
    """Disable an agent: it takes no new trees and finishes what it holds."""

    up = False


class EnableAgent(_AgentState):
    """Enable an agent again."""

    up = True


class ListProviders(Lister):
    """Each provider with its placement, live agents and backlog."""

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        providers = api(self).get("/v1/providers")["providers"]
        return output.many(providers, ["name", "placement", "live_agents", "backlog"], parsed_args)
