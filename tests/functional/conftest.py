from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from . import postgresql
from .browser import start_browser
from .daemons import Database, Deployment, running
from .rabbitmq import INSTALL_HINT, RABBITMQ_SERVER, RabbitMQNode, is_installed


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node shared by the whole session (see rabbitmq.py)."""
    if not is_installed():
        # A failure, never a skip: a silently skipped functional suite looks
        # exactly like a passing one in CI.
        pytest.fail(f"{RABBITMQ_SERVER} is missing: {INSTALL_HINT}", pytrace=False)
    node = RabbitMQNode()
    try:
        node.start()
        yield node
    finally:
        node.close()


@pytest.fixture(scope="session")
def database(request: pytest.FixtureRequest) -> Iterator[Database]:
    """Where deployments keep their plugin database (``--database``)."""
    if request.config.getoption("database") == "sqlite":
        yield Database()
        return
    if not postgresql.is_installed():
        pytest.fail(f"PostgreSQL is missing: {postgresql.INSTALL_HINT}", pytrace=False)
    cluster = postgresql.PostgreSQLCluster()
    try:
        cluster.start()
        yield Database(cluster)
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def deployment(
    rabbitmq: RabbitMQNode, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """tether-plugin and two tether-agent processes on the private node."""
    with running(Deployment(tmp_path_factory.mktemp("deployment"), rabbitmq, database)) as deployment:
        yield deployment


@pytest.fixture
def browser(tmp_path: pathlib.Path) -> Iterator[Any]:
    """Headless chromium (see browser.py)."""
    driver = start_browser(tmp_path)
    try:
        yield driver
    finally:
        driver.quit()
