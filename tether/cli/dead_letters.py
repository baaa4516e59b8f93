"""Dead letters (admin): messages the pipeline could not use, grouped by
what was wrong with them, replayed or purged."""

from __future__ import annotations

import argparse
from typing import Any

from cliff.lister import Lister
from cliff.show import ShowOne

from tether.cli import output
from tether.cli.client import api
from tether.cli.tasks import add_reason, reason


class ListDeadLetters(Lister):
    """The dead letters, or with --groups their count by error."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--groups", action="store_true", help="One row per error, with its count.")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        answer = api(self).get("/v1/dead-letters")
        if parsed_args.groups:
            return output.many(answer["groups"], ["error", "count"], parsed_args)
        columns = ["id", "queue", "error", "task_id", "first_death_at"]
        return output.many(answer["dead_letters"], columns, parsed_args)


class _Selection(ShowOne):
    action: str

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument(
            "--id", action="append", dest="ids", metavar="ID", help="This one (repeat for more)."
        )
        which.add_argument(
            "--error", help="Every dead letter of this error (see: dead-letter list --groups)."
        )
        which.add_argument("--all", action="store_true", help="Every dead letter.")
        add_reason(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        if parsed_args.ids:
            body: dict[str, Any] = {"ids": parsed_args.ids}
        elif parsed_args.error:
            body = {"error": parsed_args.error}
        else:
            body = {"all": True}
        answer = api(self).request("POST", f"/v1/dead-letters/{self.action}", body | reason(parsed_args))
        return output.one(answer)


class ReplayDeadLetters(_Selection):
    """Publish dead letters again where they were going (after fixing what refused them)."""

    action = "replay"


class PurgeDeadLetters(_Selection):
    """Delete dead letters for good."""

    action = "purge"
