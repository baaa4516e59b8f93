from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from . import postgresql
from .browser import start_browser
from .daemons import Database, Deployment, running
from .netns import NetnsError, Network
from .pki import PKI, issue
from .rabbitmq import INSTALL_HINT, RABBITMQ_SERVER, RabbitMQNode, is_installed


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return issue(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def rabbitmq(pki: PKI) -> Iterator[RabbitMQNode]:
    """A private RabbitMQ node shared by the whole session (see rabbitmq.py),
    with a TLS listener beside the plain one for test_tls.py: a node of its
    own took 11 to 15 s of every pass."""
    if not is_installed():
        # A failure, never a skip: a silently skipped functional suite looks
        # exactly like a passing one in CI.
        pytest.fail(f"{RABBITMQ_SERVER} is missing: {INSTALL_HINT}", pytrace=False)
    node = RabbitMQNode(tls=pki.server)
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


@pytest.fixture(scope="session")
def network() -> Iterator[Network]:
    """Four test hosts behind a bridge (netns.py), shared by the modules
    that run agents on hosts of their own (three agents' hosts and a
    client's); each leaves them as it found them."""
    net = Network(hosts=4)
    try:
        net.create()
    except NetnsError as exc:
        # A failure, never a skip: a skipped test looks like a passing one in CI.
        pytest.fail(f"cannot build test hosts with network namespaces: {exc}", pytrace=False)
    try:
        yield net
    finally:
        net.close()


@pytest.fixture(scope="session")
def node(network: Network) -> Iterator[RabbitMQNode]:
    """A RabbitMQ node that the test hosts can reach: it also listens on the
    bridge's address (the session's ``rabbitmq`` node does not)."""
    rabbitmq = RabbitMQNode(extra_addresses=[network.gateway])
    try:
        rabbitmq.start()
        yield rabbitmq
    finally:
        rabbitmq.close()
