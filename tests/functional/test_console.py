"""The console in a real browser (Debian's chromium, headless) against a real
plugin and agents: a failure shows its error and the retry action makes a
new task; a killed agent shows dead on the open agents page; one project
sees nothing of another's, and acting on its ids is answered "not found".

(A resource going PENDING_CREATE → ACTIVE on an open page, across a plugin
restart, is watched in test_pipeline.py.)"""

from __future__ import annotations

import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from .browser import live, resource_status, until
from .daemons import Database, Deployment, restart_agent, running
from .rabbitmq import RabbitMQNode

A = {"X-Project-Id": "project-a"}


@pytest.fixture(scope="module")
def deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """The plugin and two agents, which report every second and are dead 3 s
    after their last report: the dead-agent test waits seconds, not tens."""
    root: pathlib.Path = tmp_path_factory.mktemp("console")
    fast = Deployment(
        root, rabbitmq, database, plugin_options={"agent_down_time": 3}, agent_options={"report_interval": 1}
    )
    with running(fast) as deployment:
        yield deployment


def _sign_in(browser: Any, deployment: Deployment, project: str, roles: set[str]) -> None:
    """Through the console's own sign-in page, as a person would (noauth on loopback)."""
    browser.get(f"{deployment.base_url}/console/login")
    field = browser.find_element(By.ID, "project")
    field.clear()
    field.send_keys(project)
    for box in browser.find_elements(By.CSS_SELECTOR, "input[type=checkbox][name^=role_]"):
        if box.is_selected() != (box.get_attribute("name").removeprefix("role_") in roles):
            box.click()
    browser.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    until(lambda: browser.current_url.endswith("/console/resources"), f"signed in as {project}")


def _failed_load_balancer(deployment: Deployment) -> dict[str, Any]:
    body = {"provider": "fake", "metadata": {"fake.fail": "no capacity on the fake device"}}
    answer = deployment.http.post("/v1/loadbalancers", json=body, headers=A)
    assert answer.status_code == 202, answer.text
    lb = dict(answer.json())
    deadline = time.monotonic() + 60
    while deployment.http.get(f"/v1/tasks/{lb['task']['id']}", headers=A).json()["state"] != "FAILED":
        assert time.monotonic() < deadline, f"the fake failure did not fail its task:\n{deployment.logs()}"
        time.sleep(0.05)
    return lb


def test_a_failure_shows_its_error_and_the_retry_action_makes_a_new_task(
    deployment: Deployment, browser: Any
) -> None:
    lb = _failed_load_balancer(deployment)
    _sign_in(browser, deployment, "project-a", {"member"})
    until(lambda: resource_status(browser, lb["id"]) == "ERROR", "the failed load balancer on the page")
    node_text = "return document.getElementById(arguments[0]).textContent;"
    text = browser.execute_script(node_text, f"r-{lb['id']}")
    assert "no capacity on the fake device" in text
    # The action asks first: it shows the CLI twin and wants the box ticked.
    # The live page swaps its content as the plugin commits, so the opening
    # is tried until it holds; an open action then holds the page still.
    until(lambda: _open_action(browser, lb["id"], "Retry"), "the retry action open")
    retry = browser.find_element(By.CSS_SELECTOR, f"#r-{lb['id']} details.action[open]")
    assert f"tether task retry {lb['task']['id']} --reason" in retry.text
    retry.find_element(By.NAME, "reason").send_keys("capacity added")
    retry.find_element(By.NAME, "confirm").click()
    retry.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # It lands on the new task's page, which the API knows, with the reason kept.
    until(lambda: "/console/tasks/" in browser.current_url, "the new task's page")
    new_id = browser.current_url.rsplit("/", 1)[1]
    assert new_id != lb["task"]["id"]
    task = deployment.http.get(f"/v1/tasks/{new_id}", headers=A).json()
    assert task["resource_id"] == lb["id"] and task["project_id"] == "project-a", task
    # Who retried, and why, is on the new task's timeline.
    assert "retry asked by hand" in browser.page_source and "capacity added" in browser.page_source


def _open_action(browser: Any, resource_id: str, label: str) -> bool:
    try:
        node = browser.find_element(By.ID, f"r-{resource_id}")
        action = node.find_element(By.XPATH, f".//details[summary[starts-with(., '{label}')]]")
        if action.get_attribute("open") is None:
            action.find_element(By.TAG_NAME, "summary").click()
        return action.get_attribute("open") is not None
    except StaleElementReferenceException:
        return False


def test_another_project_sees_nothing_and_acting_on_its_ids_is_not_found(
    deployment: Deployment, browser: Any
) -> None:
    lb = _failed_load_balancer(deployment)
    _sign_in(browser, deployment, "project-b", {"member"})
    until(lambda: live(browser), "the resources page's event stream")
    assert lb["id"] not in browser.page_source
    browser.get(f"{deployment.base_url}/console/tasks/{lb['task']['id']}")
    assert "was not found" in browser.page_source
    assert lb["id"] not in browser.page_source
    # The same request the retry button sends, from project B's signed-in page.
    browser.get(f"{deployment.base_url}/console/resources")
    status = browser.execute_script(
        """
        const token = document.querySelector('meta[name="form-token"]').content;
        const body = new URLSearchParams({form_token: token, confirm: "yes", reason: "not mine"});
        const answer = await fetch(arguments[0], {method: "POST", body: body});
        return answer.status;
        """,
        f"/console/tasks/{lb['task']['id']}/retry",
    )
    assert status == 404
    assert deployment.http.get(f"/v1/tasks/{lb['task']['id']}", headers=A).json()["state"] == "FAILED"


def test_a_killed_agent_shows_dead_on_the_open_agents_page(deployment: Deployment, browser: Any) -> None:
    _sign_in(browser, deployment, "ops", {"admin"})
    browser.get(f"{deployment.base_url}/console/agents")
    until(lambda: live(browser), "the agents page's event stream")
    victim = deployment.agents[1]
    assert _agent_state(browser, victim.name) == "alive"
    browser.execute_script("window.tetherSamePage = true;")
    victim.kill()
    try:
        # agent_down_time and the reaper's pass, then the page's own update.
        until(lambda: _agent_state(browser, victim.name) == "dead", f"{victim.name} dead on the page", 30)
        assert browser.execute_script("return window.tetherSamePage === true;"), "the page was reloaded"
    finally:
        restart_agent(victim)
    until(lambda: _agent_state(browser, victim.name) == "alive", f"{victim.name} alive again", 60)


def _agent_state(browser: Any, agent_id: str) -> str | None:
    state: str | None = browser.execute_script(
        "const row = document.getElementById(arguments[0]);"
        "return row ? row.querySelector('.badge').textContent.trim() : null;",
        f"a-{agent_id}",
    )
    return state
