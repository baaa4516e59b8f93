"""Task commands, and following a task to its end."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from cliff.lister import Lister
from cliff.show import ShowOne

from tether.cli import output
from tether.cli.client import Client, api

#: Step states worth a line of their own as the task goes on.
STEP_ENDS = frozenset({"DONE", "FAILED", "UNDONE", "UNDO_FAILED"})
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "SUPERSEDED"})
STATES = ("QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "SUPERSEDED")


def add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", action="store_true", help="Follow the task to its end; exit 1 with its error if it fails."
    )


def add_reason(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", help="Why; logged and kept in the task's history.")


def reason(parsed_args: argparse.Namespace) -> dict[str, Any]:
    return {"reason": parsed_args.reason} if parsed_args.reason else {}


class TaskAnswer(ShowOne):
    """A command answering with a task (or an object holding one): with
    ``--wait`` the task followed to its end, the command failing with it."""

    failed = False

    def answer(self, answer: dict[str, Any], parsed_args: argparse.Namespace) -> Any:
        if not getattr(parsed_args, "wait", False):
            return output.one(answer)
        task = follow(api(self), answer["task"]["id"] if "task" in answer else answer["id"])
        self.failed = task["state"] == "FAILED"
        return output.one(task)

    def run(self, parsed_args: argparse.Namespace) -> int:
        code = super().run(parsed_args)
        return 1 if self.failed else code


def follow(client: Client, task_id: str) -> dict[str, Any]:
    """Show the task's transitions, and each step as it ends, live until it
    ends; the task as it ended."""
    started, last, wait = time.monotonic(), None, 1.0
    watch = StepWatch()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] task {task_id}: {line}", file=sys.stderr, flush=True)

    while True:
        task: dict[str, Any] = client.get(f"/v1/tasks/{task_id}", wait=wait)
        line = f"{task['state']}" + (f" ({task['progress']})" if task.get("progress") else "")
        if line != last:
            say(line)
            last = line
        steps = task.get("steps") or []
        for line in watch.lines(steps):
            say(line)
        if task["state"] in TERMINAL:
            break
        # The long poll answers when the task ends, but steps end before it
        # does: ask every second while they might appear or are under way.
        wait = 1.0 if steps or time.monotonic() - started < 10 else 10.0
    if task["state"] == "FAILED":
        print(f"tether: task {task_id} failed: {task['error']['message']}", file=sys.stderr)
    return task


class StepWatch:
    """What the polls of one task's steps have shown so far."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}
        self.said_done: set[str] = set()

    def lines(self, steps: list[dict[str, Any]]) -> list[str]:
        """A line for each step that ended since the last poll, in the order
        they ended. Steps run in order, so a step that has started shows that
        every step before it was done, even if no poll saw it so (a poll a
        second apart can find step 2 already being undone and step 3 failed);
        undos end after everything else."""
        started = max((n for n, step in enumerate(steps, 1) if step["state"] != "PENDING"), default=0)
        implied: list[tuple[Any, ...]] = []
        ended: list[tuple[Any, ...]] = []
        for number, step in enumerate(steps, 1):
            name, state = step["name"], step["state"]
            before, self.seen[name] = self.seen.get(name), state
            head = f"step {number} of {len(steps)} ({name})"
            if (
                name not in self.said_done
                and "FAILED" not in (state, before)
                and ((number < started and state != "DONE") or state in ("UNDONE", "UNDO_FAILED"))
            ):
                implied.append((number, f"{head} DONE"))
                self.said_done.add(name)
            if state not in STEP_ENDS or state == before or (state == "DONE" and name in self.said_done):
                continue
            if state == "DONE":
                self.said_done.add(name)
            error = f": {step['error']['message']}" if step.get("error") else ""
            ended.append((step.get("finished_at") or "", number, f"{head} {state}{error}"))
        return [line for *_, line in sorted(implied)] + [line for *_, line in sorted(ended)]


def all_pages(client: Client, path: str, key: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    params = {k: v for k, v in filters.items() if v is not None} | {"limit": 1000}
    while True:
        page = client.get(path, **params)
        items += page[key]
        if not page.get("links"):
            return items
        params["marker"] = items[-1]["id"]


class ListTasks(Lister):
    """List tasks: what happened to each change."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("--state", choices=STATES, help="Only tasks in this state.")
        parser.add_argument("--resource-id", help="Only the tasks of this resource.")
        parser.add_argument("--resource-type", help="Only the tasks of this type of resource.")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        filters = {
            "state": parsed_args.state,
            "resource_id": parsed_args.resource_id,
            "resource_type": parsed_args.resource_type,
        }
        tasks = all_pages(api(self), "/v1/tasks", "tasks", filters)
        columns = ["id", "state", "operation", "resource_type", "resource_id", "attempt", "agent_id"]
        return output.many(tasks, columns, parsed_args)


class ShowTask(TaskAnswer):
    """Show a task with its history and steps."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The task's id.")
        parser.add_argument("--wait", action="store_true", help="Follow it to its end.")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        return self.answer(api(self).get(f"/v1/tasks/{parsed_args.id}"), parsed_args)


class CancelTask(ShowOne):
    """Cancel a task no agent has started."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The task's id.")
        add_reason(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        body = reason(parsed_args) or None
        return output.one(api(self).request("POST", f"/v1/tasks/{parsed_args.id}/cancel", body))


class RetryTask(TaskAnswer):
    """Retry a FAILED task: a new task applies its resource's current desired state."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("id", help="The failed task's id.")
        add_reason(parser)
        add_wait(parser)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        answer = api(self).request("POST", f"/v1/tasks/{parsed_args.id}/retry", reason(parsed_args))
        return self.answer(answer, parsed_args)
