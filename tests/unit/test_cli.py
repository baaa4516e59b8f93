"""The ``tether`` command line, against a real API server."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from tether.agent.service import Agent
from tether.cli.main import main
from tether.cli.tasks import StepWatch
from tether.plugin.service import Plugin


@pytest.fixture
def api_url(plugin: Plugin, pipeline: list[Agent], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(plugin.app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("TETHER_URL", url)
    monkeypatch.setenv("HOME", "/nonexistent")  # no cli.ini of the developer's
    yield url
    server.should_exit = True
    thread.join(10)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return int(exit_.value.code or 0), out, err


def test_create_with_wait_shows_progress_and_the_result(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(
        capsys, "loadbalancer", "create", "--provider", "noop", "--name", "web", "--wait", "-f", "json"
    )
    assert code == 0
    assert json.loads(out)["state"] == "SUCCEEDED"
    assert "SUCCEEDED" in err  # the live progress lines
    code, out, _ = _run(capsys, "loadbalancer", "list")
    assert code == 0 and "web" in out and "ACTIVE" in out and out.startswith("+")


def test_wait_prints_each_step_as_it_ends(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        capsys,
        "loadbalancer",
        "create",
        "--provider",
        "fake",
        "--metadata",
        "fake.steps=3",
        "--metadata",
        "fake.step_ms=700",
        "--metadata",
        "fake.fail_step=3",
        "--wait",
    )
    assert code == 1
    lines = [line.split("] ", 1)[1] for line in err.splitlines() if "step" in line and "] task" in line]
    ends = [line.split(": ", 1)[1] for line in lines if line.split(": ", 1)[1].startswith("step ")]
    assert ends == [
        "step 1 of 3 (fake step 1 of 3) DONE",
        "step 2 of 3 (fake step 2 of 3) DONE",
        "step 3 of 3 (fake step 3 of 3) FAILED: fake step 3 of 3 refused by the fake device",
        "step 2 of 3 (fake step 2 of 3) UNDONE",
        "step 1 of 3 (fake step 1 of 3) UNDONE",
    ]
    # Meanwhile the task's progress names the step under way.
    assert any(re.search(r"RUNNING \(step \d of 3: fake step \d of 3\)", line) for line in lines), err


def _steps(*states: str, failed: str = "") -> list[dict[str, Any]]:
    # When each end happens: steps 1 and 2 done, 3 failed, then 2 and 1 undone.
    ends = {"DONE": lambda n: n, "FAILED": lambda n: 3, "UNDONE": lambda n: 6 - n}
    return [
        {"name": f"s{n}", "state": state, "finished_at": f"t{ends[state](n)}" if state in ends else None}
        | ({"error": {"message": failed}} if state == "FAILED" else {})
        for n, state in enumerate(states, 1)
    ]


@pytest.mark.parametrize(
    "polls",
    [
        # Every end seen as it happened.
        [
            ("DONE", "RUNNING", "PENDING"),
            ("DONE", "DONE", "FAILED"),
            ("DONE", "UNDONE", "FAILED"),
            ("UNDONE", "UNDONE", "FAILED"),
        ],
        # A poll a second apart finds step 2 already being undone and step 3 failed.
        [
            ("DONE", "RUNNING", "PENDING"),
            ("DONE", "RUNNING", "FAILED"),
            ("RUNNING", "UNDONE", "FAILED"),
            ("UNDONE", "UNDONE", "FAILED"),
        ],
        # Or sees nothing until it is all over.
        [("PENDING", "PENDING", "PENDING"), ("UNDONE", "UNDONE", "FAILED")],
    ],
    ids=["every-end-seen", "step-2-done-unseen", "nothing-seen"],
)
def test_step_lines_keep_the_order_steps_ended_in_whatever_the_polls_saw(
    polls: list[tuple[str, ...]],
) -> None:
    watch = StepWatch()
    said = [line for poll in polls for line in watch.lines(_steps(*poll, failed="refused"))]
    assert said == [
        "step 1 of 3 (s1) DONE",
        "step 2 of 3 (s2) DONE",
        "step 3 of 3 (s3) FAILED: refused",
        "step 2 of 3 (s2) UNDONE",
        "step 1 of 3 (s1) UNDONE",
    ]


def test_a_failed_task_exits_non_zero_with_its_error(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(
        capsys,
        "loadbalancer",
        "create",
        "--provider",
        "fake",
        "--metadata",
        "fake.fail=disk full on the appliance",
        "--wait",
    )
    assert code == 1
    assert "failed: disk full on the appliance" in err


def test_api_errors_are_printed_for_people(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "loadbalancer", "create", "--provider", "acme-missing")
    assert code == 1
    assert "is not configured; configured providers" in err and "request req-" in err


def test_tasks_agents_and_providers_have_commands(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    _run(capsys, "loadbalancer", "create", "--provider", "noop", "--wait")
    code, out, _ = _run(capsys, "task", "list", "--state", "SUCCEEDED", "-f", "value")
    assert code == 0 and "SUCCEEDED create loadbalancer" in out
    code, out, _ = _run(capsys, "--roles", "admin", "provider", "list", "-f", "yaml")
    assert code == 0 and "name: noop" in out
    code, out, _ = _run(capsys, "--roles", "admin", "agent", "list")
    assert code == 0 and "agent-1" in out


def test_columns_pick_the_fields_a_script_wants(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "loadbalancer", "create", "--provider", "noop", "-f", "value", "-c", "id")
    assert code == 0 and len(out.strip()) == 36 and " " not in out.strip()
    lb_id = out.strip()
    code, out, _ = _run(capsys, "loadbalancer", "show", lb_id, "-f", "json", "-c", "id", "-c", "provider")
    assert json.loads(out) == {"id": lb_id, "provider": "noop"}


def test_the_api_address_with_its_v1_works_and_help_says_when_the_api_cannot_be_read(
    api_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TETHER_URL", f"{api_url}/v1")
    code, out, _ = _run(
        capsys, "loadbalancer", "create", "--provider", "noop", "-f", "value", "-c", "provider"
    )
    assert (code, out.strip()) == (0, "noop")
    monkeypatch.setenv("TETHER_URL", "http://127.0.0.1:9")  # nothing listens there
    code, out, err = _run(capsys, "--help")
    assert code == 0 and "usage: tether" in out
    assert "cannot read the resource types from http://127.0.0.1:9/v1" in err


def test_delete_with_cascade_takes_the_tree_and_help_says_so(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _run(capsys, "loadbalancer", "create", "--provider", "noop", "-f", "value", "-c", "id")
    lb_id = out.strip()
    code, out, _ = _run(
        capsys, "pool", "create", "--loadbalancer-id", lb_id,
        "--protocol", "TCP", "--lb-algorithm", "ROUND_ROBIN", "-f", "value", "-c", "id",
    )  # fmt: skip
    pool_id = out.strip()
    code, _, err = _run(capsys, "loadbalancer", "delete", lb_id)
    assert code == 1 and f"DELETE /v1/loadbalancers/{lb_id}?cascade=true" in err
    code, out, _ = _run(
        capsys,
        "loadbalancer",
        "delete",
        lb_id,
        "--cascade",
        "--wait",
        "-f",
        "value",
        "-c",
        "state",
        "-c",
        "cascade",
    )
    assert (code, out.split()) == (0, ["SUCCEEDED", "True"])
    code, _, err = _run(capsys, "pool", "show", pool_id)
    assert code == 1 and pool_id in err
    code, out, _ = _run(capsys, "loadbalancer", "delete", "--help")
    assert code == 0 and "--cascade" in out and "with everything under it" in " ".join(out.split())


def test_output_options_follow_the_command_as_openstack_users_type_them(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(
        capsys,
        "loadbalancer",
        "create",
        "--provider",
        "fake",
        "--name",
        "web",
        "--metadata",
        "fake.fail=no",
        "--wait",
    )
    code, out, _ = _run(capsys, "task", "list", "--state", "FAILED", "-f", "json")
    assert code == 0
    assert [t["state"] for t in json.loads(out)] == ["FAILED"]
    # -c picks any field the items have, not only the table's default columns.
    code, out, _ = _run(capsys, "loadbalancer", "list", "-f", "value", "-c", "provider", "-c", "name")
    assert code == 0 and out.split() == ["web", "fake"]


def test_bad_input_is_one_line_saying_what_to_type(api_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(
        capsys, "loadbalancer", "create", "--provider", "noop", "--metadata", '{"a": "b"}', "-f", "json"
    )
    assert code == 0 and json.loads(out)["metadata"] == {"a": "b"}
    for given in ("no-equals-sign", '{"a": '):
        code, out, err = _run(capsys, "loadbalancer", "create", "--provider", "noop", "--metadata", given)
        assert code == 1 and out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith("tether: --metadata") and "Traceback" not in err


def test_shell_completion_knows_the_resource_commands(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "complete")
    assert code == 0 and "_tether()" in out
    assert all(word in out for word in ("loadbalancer", "task", "dead-letter", "reapply", "retry"))


def test_an_operator_retries_a_failed_task_and_reapplies_a_resource(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(
        capsys, "loadbalancer", "create", "--provider", "fake", "--metadata", "fake.fail=disk full",
        "--wait", "-f", "json",
    )  # fmt: skip
    failed = json.loads(out)
    assert (code, failed["state"]) == (1, "FAILED")
    code, out, _ = _run(capsys, "loadbalancer", "list", "--in-sync", "false", "-f", "value", "-c", "id")
    assert (code, out.split()) == (0, [failed["resource_id"]])
    code, out, err = _run(capsys, "task", "retry", failed["id"], "--reason", "disk replaced", "-f", "json")
    retried = json.loads(out)
    assert code == 0 and retried["retry_of"] == failed["id"] and retried["id"] != failed["id"], err
    # The retry fails as the first did: the device still says "disk full".
    code, out, _ = _run(capsys, "task", "show", retried["id"], "--wait", "-f", "value", "-c", "state")
    assert out.split() == ["FAILED"]

    _, out, _ = _run(
        capsys, "loadbalancer", "create", "--provider", "noop", "-f", "value", "-c", "id", "--wait"
    )
    code, _, err = _run(capsys, "task", "retry", out.strip())
    assert code == 1 and "only a FAILED task can be retried" in err and len(err.splitlines()) == 1, err
    lb_id = json.loads(_run(capsys, "task", "show", out.strip(), "-f", "json")[1])["resource_id"]
    code, out, err = _run(
        capsys, "--roles", "admin", "loadbalancer", "reapply", lb_id, "--reason", "lost", "--wait",
        "-f", "value", "-c", "state", "-c", "operation",
    )  # fmt: skip
    assert (code, out.split()) == (0, ["SUCCEEDED", "update"]), err


def test_dead_letters_are_listed_grouped_and_purged_from_the_command_line(
    api_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = _run(capsys, "--roles", "admin", "dead-letter", "list", "--groups", "-f", "json")
    assert (code, json.loads(out)) == (0, [])
    code, out, _ = _run(
        capsys, "--roles", "admin", "dead-letter", "purge", "--all", "--reason", "tidy", "-f", "json"
    )
    assert code == 0 and json.loads(out)
    code, _, err = _run(capsys, "dead-letter", "list")
    assert code == 1 and "tether: " in err  # admins only
