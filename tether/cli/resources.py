"""The commands of each resource type, made from the API's description of
the type (``GET /v1``): its collection, its parent and its JSON Schema."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from cliff.command import Command
from cliff.commandmanager import CommandManager
from cliff.lister import Lister
from cliff.show import ShowOne

from tether.cli import output
from tether.cli.client import api
from tether.cli.tasks import TaskAnswer, add_reason, add_wait, all_pages, reason

LIST_COLUMNS = ["id", "name", "provisioning_status", "operating_status", "in_sync"]


def register(manager: CommandManager, types: Sequence[dict[str, Any]]) -> None:
    for rtype in types:
        for verb, base in (
            ("create", CreateResource),
            ("list", ListResources),
            ("show", ShowResource),
            ("update", UpdateResource),
            ("delete", DeleteResource),
            ("reapply", ReapplyResource),
        ):
            name = f"{rtype['name']} {verb}"
            described = base.describe(rtype)
            manager.add_command(
                name, type(name.title().replace(" ", ""), (base,), {"rtype": rtype, **described})
            )


class ResourceCommand(Command):
    rtype: dict[str, Any]

    @classmethod
    def describe(cls, rtype: dict[str, Any]) -> dict[str, str]:
        return {"_description": (cls.__doc__ or "").format(name=rtype["name"])}

    @property
    def collection(self) -> str:
        return str(self.rtype["collection"])

    @property
    def properties(self) -> dict[str, Any]:
        return dict(self.rtype["schema"]["properties"])


class CreateResource(ResourceCommand, TaskAnswer):
    """Create a {name}."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        attribute_flags(parser, self.properties, set(self.rtype["schema"].get("required", [])))
        add_wait(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        body = request_body(parsed_args, self.properties)
        return self.answer(api(self).request("POST", self.collection, body), parsed_args)


class ListResources(ResourceCommand, Lister):
    """List {name}s."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        for flag in self._filters():
            parser.add_argument(
                f"--{flag.replace('_', '-')}", dest=flag, help=f"Only those with this {flag}."
            )
        parser.add_argument(
            "--in-sync",
            choices=["true", "false"],
            help="false: only those whose device may differ from the database, each with the task "
            "that says why; true: the others.",
        )
        return parser

    def _filters(self) -> list[str]:
        parent = self.rtype.get("parent_key")
        return ["name", "provisioning_status", "operating_status"] + ([parent] if parent else [])

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        filters = {k: getattr(parsed_args, k) for k in [*self._filters(), "in_sync"]}
        key = self.collection.rsplit("/", 1)[1]
        items = all_pages(api(self), self.collection, key, filters)
        return output.many(items, LIST_COLUMNS, parsed_args)


class ShowResource(ResourceCommand, ShowOne):
    """Show a {name}."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help=f"The {self.rtype['name']}'s id.")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        return output.one(api(self).get(f"{self.collection}/{parsed_args.id}"))


class UpdateResource(ResourceCommand, TaskAnswer):
    """Update a {name}; only the attributes given change."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help=f"The {self.rtype['name']}'s id.")
        parent = self.rtype.get("parent_key")
        attribute_flags(parser, {k: v for k, v in self.properties.items() if k != parent}, set())
        add_wait(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        body = request_body(parsed_args, self.properties)
        answer = api(self).request("PUT", f"{self.collection}/{parsed_args.id}", body)
        return self.answer(answer, parsed_args)


class DeleteResource(ResourceCommand, TaskAnswer):
    """Delete a {name}."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        name = self.rtype["name"]
        parser.add_argument("id", help=f"The {name}'s id.")
        parser.add_argument(
            "--cascade",
            action="store_true",
            help=f"Delete the {name} with everything under it, children first, in one task; "
            f"without it, a {name} that still has children is refused.",
        )
        add_wait(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        path = f"{self.collection}/{parsed_args.id}" + ("?cascade=true" if parsed_args.cascade else "")
        return self.answer(api(self).request("DELETE", path), parsed_args)


class ReapplyResource(ResourceCommand, TaskAnswer):
    """Apply a {name} to its device again as the database holds it (admin): repairs drift or a lost device."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help=f"The {self.rtype['name']}'s id.")
        add_reason(parser)
        add_wait(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        path = f"{self.collection}/{parsed_args.id}/reapply"
        return self.answer(api(self).request("POST", path, reason(parsed_args)), parsed_args)


def attribute_flags(parser: argparse.ArgumentParser, properties: dict[str, Any], required: set[str]) -> None:
    for attribute, schema in properties.items():
        flag = "--" + attribute.replace("_", "-")
        kinds = schema.get("type", "string")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        text = schema.get("description") or ""
        if "enum" in schema:
            text += f" One of: {', '.join(map(str, schema['enum']))}."
        if "object" in kinds:
            parser.add_argument(
                flag,
                dest=attribute,
                metavar="KEY=VALUE",
                action="append",
                help=f"{text} KEY=VALUE, repeated for several, or one JSON object.".strip(),
            )
        elif "array" in kinds:
            parser.add_argument(
                flag,
                dest=attribute,
                metavar="ITEM",
                action="append",
                help=f"{text} Repeat for several items, or give one JSON array.".strip(),
            )
        elif "boolean" in kinds:
            parser.add_argument(flag, dest=attribute, choices=["true", "false"], help=text)
        elif "integer" in kinds:
            parser.add_argument(flag, dest=attribute, type=int, required=attribute in required, help=text)
        elif "number" in kinds:
            parser.add_argument(flag, dest=attribute, type=float, required=attribute in required, help=text)
        else:
            parser.add_argument(flag, dest=attribute, required=attribute in required, help=text)


def request_body(parsed_args: argparse.Namespace, properties: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for attribute, schema in properties.items():
        value = getattr(parsed_args, attribute, None)
        if value is None:
            continue
        kinds = schema.get("type", "string")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        flag = "--" + attribute.replace("_", "-")
        if "object" in kinds:
            value = _mapping(flag, value)
        elif "array" in kinds:
            value = _items(flag, value)
        elif value in ("true", "false") and "boolean" in kinds:
            value = value == "true"
        body[attribute] = value
    return body


def _mapping(flag: str, given: list[str]) -> dict[str, Any]:
    if len(given) == 1 and given[0].lstrip().startswith("{"):
        found = _json(flag, given[0], dict, "a JSON object")
        return dict(found)
    pairs = {}
    for item in given:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ValueError(
                f"{flag} takes KEY=VALUE (repeat it for several) or one JSON object such as "
                f'\'{{"key": "value"}}\'; {item!r} is neither'
            )
        pairs[key] = value
    return pairs


def _items(flag: str, given: list[str]) -> list[Any]:
    if len(given) == 1 and given[0].lstrip().startswith("["):
        return list(_json(flag, given[0], list, "a JSON array"))
    return list(given)


def _json(flag: str, text: str, kind: type, what: str) -> Any:
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{flag} {text!r} is not valid JSON ({exc}); give {what}") from None
    if not isinstance(found, kind):
        raise ValueError(f"{flag} {text!r} is not {what}")
    return found
