"""TLS to RabbitMQ: the session's node on its TLS listener, a throwaway CA
(pki.py), and tether configured through oslo.messaging's
``[oslo_messaging_rabbit]`` options."""

from __future__ import annotations

import logging
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from oslo_config import cfg

from tether.common import config
from tether.common.connection import ConnectionLoop
from tether.common.transport import Broker

from .daemons import Database, Deployment, running, write_ini
from .pki import PKI
from .rabbitmq import RabbitMQNode

# What TLS changes is the links to the broker, the same whatever database the
# plugin keeps: the PostgreSQL pass leaves these out.
pytestmark = [pytest.mark.functional, pytest.mark.broker_only]


@pytest.fixture(scope="module")
def tls_deployment(
    rabbitmq: RabbitMQNode, pki: PKI, database: Database, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    deployment = Deployment(
        tmp_path_factory.mktemp("tls-deployment"),
        rabbitmq,
        database,
        agents=1,
        tls=True,
        sections={"oslo_messaging_rabbit": {"ssl": "true", "ssl_ca_file": pki.ca}},
    )
    with running(deployment):
        yield deployment


def _broker(tmp_path: pathlib.Path, transport_url: str, **rabbit: Any) -> Broker:
    ini = write_ini(
        tmp_path / "tether.ini",
        {"DEFAULT": {"transport_url": transport_url}, "oslo_messaging_rabbit": rabbit},
    )
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.load(conf, ["--config-file", str(ini)], "test_tls")
    return Broker(conf)


def _connections(node: RabbitMQNode, vhost: str) -> list[dict[str, str]]:
    columns = ["vhost", "ssl", "ssl_protocol", "peer_cert_subject", "port"]
    out = node.rabbitmqctl("-q", "list_connections", "--no-table-headers", *columns)
    rows = [dict(zip(columns, line.split("\t"), strict=True)) for line in out.splitlines() if line]
    return [row for row in rows if row["vhost"] == vhost]


def _refusal(broker: Broker, caplog: pytest.LogCaptureFixture, timeout: float = 30.0) -> str:
    """What a connection thread logs when it cannot connect, as an operator reads it."""
    loop = ConnectionLoop(broker, "tls-probe")
    with caplog.at_level(logging.WARNING, logger="tether.common.connection"):
        loop.start()
        try:
            deadline = time.monotonic() + timeout
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            loop.stop()
    assert not loop.connected.is_set()
    assert caplog.records, f"no connection failure logged within {timeout} s"
    record = caplog.records[0]
    assert record.levelno == logging.ERROR, record.getMessage()
    return record.getMessage()


def test_a_resource_goes_active_through_the_tls_listener(tls_deployment: Deployment) -> None:
    response = tls_deployment.http.post("/v1/loadbalancers", json={"provider": "noop", "name": "over-tls"})
    assert response.status_code == 202, response.text
    lb_id = response.json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        lb = tls_deployment.http.get(f"/v1/loadbalancers/{lb_id}").json()
        if not lb["provisioning_status"].startswith("PENDING"):
            break
        time.sleep(0.1)
    assert lb["provisioning_status"] == "ACTIVE", tls_deployment.logs()


def test_every_connection_of_the_deployment_is_tls_on_the_tls_port(
    tls_deployment: Deployment, rabbitmq: RabbitMQNode
) -> None:
    # Only the TLS port is in the deployment's transport_url, and the node
    # says each connection (kombu's and oslo.messaging's) is encrypted.
    assert f":{rabbitmq.tls_port}/" in tls_deployment.transport_url
    vhost = tls_deployment.transport_url.rsplit("/", 1)[1]
    connections = _connections(rabbitmq, vhost)
    # the plugin's relay and result consumer, the agent's consumer, and RPC
    assert len(connections) >= 4, connections
    assert {(c["ssl"], c["port"]) for c in connections} == {("true", str(rabbitmq.tls_port))}
    assert all(c["ssl_protocol"].startswith("tlsv1.") for c in connections), connections


@pytest.mark.no_database
def test_a_client_that_trusts_another_ca_is_refused_with_a_clear_error(
    rabbitmq: RabbitMQNode, pki: PKI, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport_url, _ = rabbitmq.add_vhost("tether-tls-other-ca", tls=True)
    broker = _broker(tmp_path, transport_url, ssl="true", ssl_ca_file=pki.other_ca)
    message = _refusal(broker, caplog)
    # RabbitMQ sends its CA along with its certificate: a CA we do not trust.
    assert (
        "the broker's TLS certificate was refused (self-signed certificate in certificate chain)" in message
    )
    assert f"it must be signed by the CA in {pki.other_ca}" in message


@pytest.mark.no_database
def test_the_broker_must_be_named_in_its_certificate(
    rabbitmq: RabbitMQNode, pki: PKI, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport_url, _ = rabbitmq.add_vhost("tether-tls-wrong-name", tls=True)
    by_name = transport_url.replace("127.0.0.1", "localhost")
    broker = _broker(tmp_path, by_name, ssl="true", ssl_ca_file=pki.ca)
    message = _refusal(broker, caplog)
    assert "does not name the host it was reached by" in message
    assert "(Hostname mismatch, certificate is not valid for 'localhost'.)" in message
    assert "use a name the certificate lists in [DEFAULT] transport_url" in message


@pytest.mark.no_database
def test_tls_to_the_plain_port_says_to_check_the_port(
    rabbitmq: RabbitMQNode, pki: PKI, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport_url, _ = rabbitmq.add_vhost("tether-tls-plain-port")
    broker = _broker(tmp_path, transport_url, ssl="true", ssl_ca_file=pki.ca)
    message = _refusal(broker, caplog)
    assert "the TLS handshake with the broker failed" in message
    assert "names the broker's TLS port" in message


@pytest.mark.no_database
def test_the_transport_url_query_and_a_client_certificate_reach_the_broker(
    rabbitmq: RabbitMQNode, pki: PKI, tmp_path: pathlib.Path
) -> None:
    transport_url, _ = rabbitmq.add_vhost("tether-tls-client-cert", tls=True)
    broker = _broker(
        tmp_path,
        f"{transport_url}?ssl=1&ssl_ca_file={pki.ca}",
        ssl_cert_file=pki.client_cert,
        ssl_key_file=pki.client_key,
    )
    with broker.connect() as connection:
        connection.ensure_connection(max_retries=1)
        (seen,) = _connections(rabbitmq, "tether-tls-client-cert")
    assert seen["ssl"] == "true"
    assert "CN=tether-client" in seen["peer_cert_subject"]


@pytest.mark.no_database
def test_a_client_certificate_from_an_unknown_ca_is_refused_by_the_broker(
    rabbitmq: RabbitMQNode, pki: PKI, tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    transport_url, _ = rabbitmq.add_vhost("tether-tls-stranger", tls=True)
    broker = _broker(
        tmp_path,
        transport_url,
        ssl="true",
        ssl_ca_file=pki.ca,
        ssl_cert_file=pki.stranger_cert,
        ssl_key_file=pki.stranger_key,
    )
    message = _refusal(broker, caplog)
    assert "the TLS handshake with the broker failed" in message
    assert "ssl_cert_file and ssl_key_file hold one signed by a CA it trusts" in message
