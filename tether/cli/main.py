"""``tether``: create, list, show, update and delete resources, follow,
cancel and retry tasks, and look after agents, providers and dead letters,
from a shell.

Built on cliff, as the ``openstack`` client is: global options come before
the command (``tether --roles admin agent list``), output options after it
(``tether task list --state FAILED -f json -c id``). The API's URL comes from
``--url``, ``$TETHER_URL`` or ``~/.config/tether/cli.ini`` (``[tether] url =
...``), in that order; likewise the token, project and roles. The commands of
each resource type are made from the types the API describes at ``GET /v1``;
a service built on tether adds its own commands through the ``tether.cli``
entry point namespace.
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from cliff.app import App
from cliff.commandmanager import CommandManager

from tether.cli import resources
from tether.cli.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:9870"
CONFIG = os.path.expanduser("~/.config/tether/cli.ini")
SETTINGS = ("url", "token", "project", "roles")


class TetherApp(App):
    NAME = "tether"
    CONSOLE_MESSAGE_FORMAT = "tether: %(message)s"
    # Errors and warnings only: a script's stderr stays quiet on success.
    DEFAULT_VERBOSE_LEVEL = 0

    def __init__(self) -> None:
        super().__init__(
            description=(__doc__ or "").split("\n\n")[0].replace("``", ""),
            version=_version(),
            command_manager=CommandManager("tether.cli"),
            deferred_help=True,
        )
        self.client: Client | None = None

    def build_option_parser(
        self, description: str | None, version: str | None, argparse_kwargs: dict[str, Any] | None = None
    ) -> argparse.ArgumentParser:
        parser = super().build_option_parser(
            description, version, {"prog": self.NAME, **(argparse_kwargs or {})}
        )
        for name in SETTINGS:
            parser.add_argument(f"--{name}", help=f"API {name} (or $TETHER_{name.upper()}, or {CONFIG})")
        return parser

    def configure_logging(self) -> None:
        # A process that runs the app more than once (a test, a script
        # importing main) would otherwise print each error once per run.
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "tether_cli", False)]:
            root.removeHandler(handler)
        before = set(root.handlers)
        super().configure_logging()
        for handler in set(root.handlers) - before:
            handler.tether_cli = True  # type: ignore[attr-defined]

    def initialize_app(self, argv: list[str]) -> None:
        settings = _settings(self.options)
        # The address as the all-in-one's log prints it, with its /v1, works too.
        url = settings["url"].rstrip("/").removesuffix("/v1")
        self.client = Client(url, settings.get("token"), settings.get("project"), settings.get("roles"))
        try:
            types = self.client.get("/v1")["resource_types"]
        except ApiError as exc:
            if not (self.options.deferred_help or argv[:1] in (["help"], ["complete"])):
                raise
            # Help still answers, without the commands only the API can describe.
            self.LOG.warning(
                "cannot read the resource types from %s/v1 (%s); the commands of resource types "
                "are missing: check --url or $TETHER_URL",
                url,
                exc,
            )
            types = []
        resources.register(self.command_manager, types)


def main(argv: Sequence[str] | None = None) -> None:
    sys.exit(TetherApp().run(list(sys.argv[1:] if argv is None else argv)))


def _settings(options: argparse.Namespace) -> dict[str, str]:
    found: dict[str, str] = {}
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    if parser.has_section("tether"):
        found.update(parser["tether"])
    for name in SETTINGS:
        if f"TETHER_{name.upper()}" in os.environ:
            found[name] = os.environ[f"TETHER_{name.upper()}"]
        if getattr(options, name, None):
            found[name] = getattr(options, name)
    found.setdefault("url", DEFAULT_URL)
    return found


def _version() -> str:
    try:
        return importlib.metadata.version("tether")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
