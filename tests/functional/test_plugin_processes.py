"""tether-plugin as its two processes: the API and the pipeline, supervised
by the process the operator started."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import signal
import time
from collections.abc import Iterator

import httpx2
import pytest

from .daemons import Daemon, Database, Deployment
from .rabbitmq import RabbitMQNode

pytestmark = pytest.mark.functional


def children(pid: int) -> dict[str, int]:
    """The plugin's children by role, from their environment."""
    found = {}
    for child in pathlib.Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        environ = pathlib.Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        role = next(e.split(b"=", 1)[1].decode() for e in environ if e.startswith(b"TETHER_PLUGIN_ROLE="))
        found[role] = int(child)
    return found


def plugin_and_children(deployment: Deployment) -> tuple[Daemon, dict[str, int]]:
    plugin = deployment.plugins[0]
    assert plugin.process is not None
    return plugin, children(plugin.process.pid)


def a_task_succeeds(deployment: Deployment) -> bool:
    lb = deployment.http.post("/v1/loadbalancers", json={"provider": "noop"}).json()
    return deployment.http.get(f"/v1/tasks/{lb['task']['id']}?wait=30").json()["state"] == "SUCCEEDED"


def gone(pid: int, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie is gone for our purpose: it runs nothing.
        status = pathlib.Path(f"/proc/{pid}/status")
        if status.exists() and "State:\tZ" in status.read_text():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    deployment = Deployment(tmp_path_factory.mktemp("processes"), rabbitmq, database, agents=1)
    deployment.start()
    try:
        yield deployment
    finally:
        deployment.stop()


def test_the_api_and_the_pipeline_run_in_two_processes_and_a_task_crosses_both(
    deployment: Deployment,
) -> None:
    plugin, roles = plugin_and_children(deployment)
    assert set(roles) == {"api", "pipeline"}
    assert a_task_succeeds(deployment)
    ready = deployment.http.get("/readyz")
    assert ready.status_code == 200, ready.text
    # Counters of both processes, served by the API: the pipeline finished the task.
    metrics = deployment.http.get("/metrics", headers={"X-Roles": "admin"}).text
    finished = [
        line
        for line in metrics.splitlines()
        if line.startswith("tether_tasks_finished_total{") and 'state="SUCCEEDED"' in line
    ]
    assert finished and float(finished[0].rsplit(" ", 1)[1]) >= 1, metrics
    assert f"API in process {roles['api']}, pipeline in process {roles['pipeline']}" in plugin.log()


@pytest.mark.supervision
def test_a_pipeline_that_dies_stops_the_plugin_for_its_service_manager_to_restart(
    deployment: Deployment,
) -> None:
    plugin, roles = plugin_and_children(deployment)
    os.kill(roles["pipeline"], signal.SIGKILL)
    assert plugin.wait_exit(60) == 1
    assert gone(roles["api"])
    assert "the pipeline process exited with code -9; stopping the plugin" in plugin.log()
    # Nothing accepted is lost: the next plugin relays and records as usual.
    deployment.start_plugin()
    assert a_task_succeeds(deployment)


@pytest.mark.supervision
def test_children_stop_when_their_parent_is_killed(deployment: Deployment) -> None:
    plugin, roles = plugin_and_children(deployment)
    assert plugin.process is not None
    plugin.process.kill()  # the parent alone, not its process group
    plugin.process.wait()
    assert gone(roles["api"]) and gone(roles["pipeline"]), plugin.log()
    assert "received SIGTERM, stopping" in plugin.log()


@pytest.mark.supervision
def test_sigterm_stops_the_api_before_the_pipeline_and_exits_0(deployment: Deployment) -> None:
    plugin, roles = plugin_and_children(deployment)
    # Answers that would not end by themselves: a long poll on a task no agent
    # will take, and a console page's event stream. Neither may hold the stop up.
    deployment.agents[0].stop()
    task = deployment.http.post("/v1/loadbalancers", json={"provider": "noop"}).json()["task"]
    client = httpx2.Client(base_url=deployment.base_url)
    with concurrent.futures.ThreadPoolExecutor(2) as pool, client:
        polled = pool.submit(client.get, f"/v1/tasks/{task['id']}?wait=60", timeout=90)

        def stream() -> list[str]:
            with client.stream("GET", "/console/events", timeout=90) as events:
                return list(events.iter_lines())

        streamed = pool.submit(stream)
        time.sleep(1)  # both requests are in the API's hands
        assert not polled.done() and not streamed.done()
        stopping = time.monotonic()
        assert plugin.stop() == 0
        took = time.monotonic() - stopping
        assert took < 10, f"the stop waited {took:.1f} s for answers that would not end"
        answer = polled.result(5)
        assert answer.status_code == 200 and answer.json()["state"] in ("QUEUED", "PENDING"), answer.text
        assert "retry: 1000" in streamed.result(5)
    log = plugin.log()
    assert log.index("plugin stopped") < log.index("pipeline stopped"), log
    assert gone(roles["api"]) and gone(roles["pipeline"])


def cpu_ticks(pid: int) -> int:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


@pytest.mark.supervision
def test_several_api_processes_serve_one_socket_and_each_hears_the_pipeline(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> None:
    deployment = Deployment(
        tmp_path_factory.mktemp("apis"), rabbitmq, database, agents=1, plugin_options={"api_processes": 2}
    )
    deployment.start()
    try:
        plugin, roles = plugin_and_children(deployment)
        assert set(roles) == {"api", "api-2", "pipeline"}
        before = {name: cpu_ticks(roles[name]) for name in ("api", "api-2")}
        # New connections each: the kernel hands them to whichever API process accepts first.
        for _ in range(300):
            assert deployment.http.get("/healthz", headers={"Connection": "close"}).status_code == 200
        assert all(cpu_ticks(roles[name]) > before[name] for name in before), (before, roles)
        # Every API process hears finished tasks (?wait) and the pipeline's status (/readyz).
        # The pipeline's loops connect after the API listens, and each API process learns of it
        # at the pipeline's next status message (every half second): ready, twenty times running.
        deadline, running = time.monotonic() + 30, 0
        while running < 20:
            ready = deployment.http.get("/readyz", headers={"Connection": "close"})
            running = running + 1 if ready.status_code == 200 else 0
            assert time.monotonic() < deadline, ready.text
        for _ in range(6):
            assert a_task_succeeds(deployment)
            ready = deployment.http.get("/readyz", headers={"Connection": "close"})
            assert ready.status_code == 200, ready.text  # its problems say which part was not ready
        os.kill(roles["api-2"], signal.SIGKILL)
        assert plugin.wait_exit(60) == 1
        assert gone(roles["api"]) and gone(roles["pipeline"])
        assert "the api-2 process exited with code -9; stopping the plugin" in plugin.log()
    finally:
        deployment.stop()
