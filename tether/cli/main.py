"""``tether``: create, list, show, update and delete resources, follow and
cancel tasks, and look after agents and providers, from a shell.

The API's URL comes from ``--url``, ``$TETHER_URL`` or ``~/.config/tether/cli.ini``
(``[tether] url = ...``), in that order; likewise the token (``--token``,
``$TETHER_TOKEN``, ``token = ...``). Resource commands and their flags are
made from the resource types the API describes at ``GET /v1``.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import yaml

from tether.cli.client import ApiError, Client

DEFAULT_URL = "http://127.0.0.1:9870"
CONFIG = os.path.expanduser("~/.config/tether/cli.ini")
#: Step states worth a line of their own as the task goes on.
STEP_ENDS = frozenset({"DONE", "FAILED", "UNDONE", "UNDO_FAILED"})
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED", "SUPERSEDED"}


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    settings = _settings(argv)
    # The address as the all-in-one's log prints it, with its /v1, works too.
    url = settings["url"].rstrip("/").removesuffix("/v1")
    client = Client(url, settings.get("token"), settings.get("project"), settings.get("roles"))
    try:
        types = client.get("/v1")["resource_types"]
    except ApiError as exc:
        types = []
        if not any(a in ("-h", "--help") for a in argv):
            _fail(exc)
        # Help still answers, without the commands only the API can describe.
        print(
            f"tether: cannot read the resource types from {url}/v1 ({exc}); the commands of "
            "resource types are missing below: check --url or $TETHER_URL",
            file=sys.stderr,
        )
    parser = _parser(types)
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        sys.exit(2)
    try:
        sys.exit(args.run(client, args) or 0)
    except ApiError as exc:
        _fail(exc)


def _fail(exc: ApiError) -> None:
    where = f" (request {exc.request_id})" if exc.request_id else ""
    print(f"tether: {exc}{where}", file=sys.stderr)
    sys.exit(1)


def _settings(argv: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    if parser.has_section("tether"):
        found.update(parser["tether"])
    for name in ("url", "token", "project", "roles"):
        if f"TETHER_{name.upper()}" in os.environ:
            found[name] = os.environ[f"TETHER_{name.upper()}"]
        flag = f"--{name}"
        for i, arg in enumerate(argv):
            if arg == flag and i + 1 < len(argv):
                found[name] = argv[i + 1]
            elif arg.startswith(flag + "="):
                found[name] = arg.split("=", 1)[1]
    found.setdefault("url", DEFAULT_URL)
    return found


def _parser(types: list[dict[str, Any]]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tether", description=__doc__.split("\n\n")[0] if __doc__ else None)
    for name in ("url", "token", "project", "roles"):
        parser.add_argument(f"--{name}", help=f"API {name} (or $TETHER_{name.upper()}, or {CONFIG})")
    parser.add_argument("-f", "--format", choices=["table", "json", "yaml", "value"], default="table")
    parser.add_argument(
        "-c",
        "--column",
        action="append",
        dest="columns",
        metavar="NAME",
        help="Show only this field (repeat for more); with -f value, for scripts: "
        "LB=$(tether -f value -c id loadbalancer create ...)",
    )
    commands = parser.add_subparsers(title="commands")
    for rtype in types:
        _resource_commands(commands, rtype)
    _task_commands(commands)
    _agent_commands(commands)
    provider = commands.add_parser("provider", help="Providers and their agents.").add_subparsers()
    listing = provider.add_parser("list", help="Each provider with its live agents and backlog.")
    listing.set_defaults(
        run=lambda c, a: _print(
            a, c.get("/v1/providers")["providers"], ["name", "placement", "live_agents", "backlog"]
        )
    )
    return parser


def _resource_commands(commands: Any, rtype: dict[str, Any]) -> None:
    name, collection = rtype["name"], rtype["collection"]
    properties = rtype["schema"]["properties"]
    required = set(rtype["schema"].get("required", []))
    group = commands.add_parser(name, help=rtype.get("description") or f"{name} resources").add_subparsers()

    create = group.add_parser("create", help=f"Create a {name}.")
    _attribute_flags(create, properties, required)
    _wait_flag(create)
    create.set_defaults(run=lambda c, a: _change(c, a, "POST", collection, _body(a, properties)))

    listing = group.add_parser("list", help=f"List {name}s.")
    for flag in ("name", "provisioning_status") + ((rtype["parent_key"],) if rtype.get("parent_key") else ()):
        listing.add_argument(f"--{flag.replace('_', '-')}", dest=flag)
    listing.set_defaults(
        run=lambda c, a: _print(
            a,
            _all(
                c,
                collection,
                rtype["collection"].rsplit("/", 1)[1],
                {
                    k: getattr(a, k)
                    for k in ("name", "provisioning_status", rtype.get("parent_key") or "")
                    if k and getattr(a, k, None)
                },
            ),
            ["id", "name", "provisioning_status", "operating_status", "in_sync"],
        )
    )

    show = group.add_parser("show", help=f"Show a {name}.")
    show.add_argument("id")
    show.set_defaults(run=lambda c, a: _print(a, c.get(f"{collection}/{a.id}")))

    update = group.add_parser("update", help=f"Update a {name}; only the attributes given change.")
    update.add_argument("id")
    _attribute_flags(update, {k: v for k, v in properties.items() if k != rtype.get("parent_key")}, set())
    _wait_flag(update)
    update.set_defaults(run=lambda c, a: _change(c, a, "PUT", f"{collection}/{a.id}", _body(a, properties)))

    delete = group.add_parser("delete", help=f"Delete a {name}.")
    delete.add_argument("id")
    delete.add_argument(
        "--cascade",
        action="store_true",
        help=f"Delete the {name} with everything under it, children first, in one task; "
        f"without it, a {name} that still has children is refused.",
    )
    _wait_flag(delete)
    delete.set_defaults(
        run=lambda c, a: _change(
            c, a, "DELETE", f"{collection}/{a.id}" + ("?cascade=true" if a.cascade else ""), None
        )
    )


def _attribute_flags(parser: argparse.ArgumentParser, properties: dict[str, Any], required: set[str]) -> None:
    for attribute, schema in properties.items():
        flag = "--" + attribute.replace("_", "-")
        kinds = schema.get("type", "string")
        kinds = kinds if isinstance(kinds, list) else [kinds]
        help_text = schema.get("description") or ""
        if "enum" in schema:
            help_text += f" One of: {', '.join(map(str, schema['enum']))}."
        if "object" in kinds:
            parser.add_argument(
                flag,
                dest=attribute,
                metavar="KEY=VALUE",
                action="append",
                help=help_text or "repeat for several",
            )
        elif "boolean" in kinds:
            parser.add_argument(flag, dest=attribute, choices=["true", "false"], help=help_text)
        elif "integer" in kinds:
            parser.add_argument(
                flag, dest=attribute, type=int, required=attribute in required, help=help_text
            )
        else:
            parser.add_argument(flag, dest=attribute, required=attribute in required, help=help_text)


def _wait_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="Follow the task to its end; exit 1 with its error if it fails."
    )


def _body(args: argparse.Namespace, properties: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for attribute in properties:
        value = getattr(args, attribute, None)
        if value is None:
            continue
        if isinstance(value, list):
            value = dict(item.split("=", 1) for item in value)
        elif value in ("true", "false"):
            value = value == "true"
        body[attribute] = value
    return body


def _change(client: Client, args: argparse.Namespace, method: str, path: str, body: Any) -> int:
    answer = client.request(method, path, body)
    if not args.wait:
        _print(args, answer)
        return 0
    return _follow(client, args, answer["task"]["id"])


def _follow(client: Client, args: argparse.Namespace, task_id: str) -> int:
    """Show the task's transitions, and each step as it ends, live until it ends."""
    started, last, wait = time.monotonic(), None, 1.0
    seen: dict[str, str] = {}

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] task {task_id}: {line}", file=sys.stderr, flush=True)

    while True:
        task = client.get(f"/v1/tasks/{task_id}", wait=wait)
        line = f"{task['state']}" + (f" ({task['progress']})" if task.get("progress") else "")
        if line != last:
            say(line)
            last = line
        steps = task.get("steps") or []
        for line in _step_lines(steps, seen):
            say(line)
        if task["state"] in TERMINAL:
            break
        # The long poll answers when the task ends, but steps end before it
        # does: ask every second while they might appear or are under way.
        wait = 1.0 if steps or time.monotonic() - started < 10 else 10.0
    _print(args, task)
    if task["state"] == "FAILED":
        print(f"tether: task {task_id} failed: {task['error']['message']}", file=sys.stderr)
        return 1
    return 0


def _step_lines(steps: list[dict[str, Any]], seen: dict[str, str]) -> list[str]:
    """A line for each step that ended since ``seen`` (updated), in the
    order they ended: an undo implies the step was done, even if no poll
    saw it so, and undos end after everything else."""
    implied: list[tuple[Any, ...]] = []
    ended: list[tuple[Any, ...]] = []
    for number, step in enumerate(steps, 1):
        state, before = step["state"], seen.get(step["name"])
        seen[step["name"]] = state
        if state not in STEP_ENDS or state == before:
            continue
        head = f"step {number} of {len(steps)} ({step['name']})"
        if state in ("UNDONE", "UNDO_FAILED") and before not in ("DONE", "FAILED"):
            implied.append((number, f"{head} DONE"))
        error = f": {step['error']['message']}" if step.get("error") else ""
        ended.append((step.get("finished_at") or "", number, f"{head} {state}{error}"))
    return [line for *_, line in sorted(implied)] + [line for *_, line in sorted(ended)]


def _task_commands(commands: Any) -> None:
    group = commands.add_parser("task", help="What happened to each change.").add_subparsers()
    listing = group.add_parser("list", help="List tasks.")
    listing.add_argument("--resource-id")
    listing.add_argument("--state")
    listing.set_defaults(
        run=lambda c, a: _print(
            a,
            _all(c, "/v1/tasks", "tasks", {"resource_id": a.resource_id, "state": a.state}),
            ["id", "state", "operation", "resource_type", "resource_id", "attempt", "agent_id"],
        )
    )
    show = group.add_parser("show", help="Show a task with its history.")
    show.add_argument("id")
    show.add_argument("--wait", action="store_true", help="Follow it to its end.")
    show.set_defaults(
        run=lambda c, a: _follow(c, a, a.id) if a.wait else _print(a, c.get(f"/v1/tasks/{a.id}"))
    )
    cancel = group.add_parser("cancel", help="Cancel a task no agent has started.")
    cancel.add_argument("id")
    cancel.set_defaults(run=lambda c, a: _print(a, c.request("POST", f"/v1/tasks/{a.id}/cancel")))


def _agent_commands(commands: Any) -> None:
    group = commands.add_parser("agent", help="Agents (admin).").add_subparsers()
    listing = group.add_parser("list", help="Agents, alive or dead.")
    listing.set_defaults(
        run=lambda c, a: _print(
            a,
            c.get("/v1/agents")["agents"],
            ["id", "host", "alive", "admin_state_up", "in_flight", "last_heartbeat"],
        )
    )
    for action, up in (("disable", False), ("enable", True)):
        command = group.add_parser(action, help=f"{action.capitalize()} an agent.")
        command.add_argument("id")
        command.set_defaults(
            run=lambda c, a, up=up: _print(a, c.request("PUT", f"/v1/agents/{a.id}", {"admin_state_up": up}))
        )


def _all(client: Client, path: str, key: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {k: v for k, v in filters.items() if v is not None} | {"limit": 1000}
    while True:
        page = client.get(path, **params)
        items += page[key]
        if not page.get("links"):
            return items
        params["marker"] = items[-1]["id"]


def _print(args: argparse.Namespace, data: Any, columns: list[str] | None = None) -> int:
    chosen = getattr(args, "columns", None)
    if chosen:
        columns = chosen
        rows = data if isinstance(data, list) else [data]
        known = set().union(*(row.keys() for row in rows)) if rows else set()
        unknown = [c for c in chosen if rows and c not in known]
        if unknown:
            raise SystemExit(
                f"tether: no field {', '.join(unknown)}; the answer has: {', '.join(sorted(known))}"
            )
        picked = [{c: row.get(c) for c in chosen} for row in rows]
        data = picked if isinstance(data, list) else picked[0]
    if args.format == "json":
        print(json.dumps(data, indent=2))
    elif args.format == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif args.format == "value":
        rows = data if isinstance(data, list) else [data]
        for row in rows:
            print(" ".join(str(row.get(c, "")) for c in (columns or list(row))))
    elif isinstance(data, list):
        print(_table([[str(row.get(c, "")) for c in (columns or [])] for row in data], columns or []))
    else:
        print(
            _table(
                [[k, _cell(v)] for k, v in data.items()],
                ["field", "value"],
            )
        )
    return 0


def _cell(value: Any) -> str:
    """A value as a table shows it: lists of records summarised (-f json has them whole)."""
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        outcomes = ", ".join(str(v.get("outcome") or v.get("state") or "") for v in value)
        return f"{len(value)} item(s): {outcomes}" if outcomes.strip(", ") else f"{len(value)} item(s)"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |", line]
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(out + [line])
