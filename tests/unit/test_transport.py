from __future__ import annotations

import logging
import pathlib
import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from kombu.exceptions import OperationalError
from kombu.transport import pyamqp
from oslo_config import cfg

from tether.common import config, rpc
from tether.common.connection import ConnectionLoop
from tether.common.exceptions import ConfigError
from tether.common.transport import Broker, parse_url


def test_a_rabbit_url_with_several_hosts_becomes_a_failover_list() -> None:
    url = parse_url("rabbit://u:secret@h1:5672,u:secret@h2:5673/prod")
    assert url.kombu_urls == ("amqp://u:secret@h1:5672/prod", "amqp://u:secret@h2:5673/prod")
    assert url.hostnames == ("h1", "h2")


def test_the_masked_url_never_shows_the_password() -> None:
    url = parse_url("rabbit://tether:hunter2@broker:5672/")
    assert "hunter2" not in url.masked
    assert url.masked == "rabbit://tether:***@broker:5672//"


def test_the_default_vhost_is_slash() -> None:
    assert parse_url("rabbit://u:p@h:5672/").kombu_urls == ("amqp://u:p@h:5672/%2F",)


def test_memory_is_the_in_process_transport() -> None:
    assert parse_url("memory://").in_memory


def test_an_empty_host_entry_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty host"):
        parse_url("rabbit://u:p@h1:5672,/")


def test_a_host_without_a_port_uses_5672_as_oslo_messaging_does_even_over_tls() -> None:
    url = parse_url("rabbit://u:p@broker,u:p@[fd00::1]/v?ssl=1")
    assert url.kombu_urls == ("amqp://u:p@broker:5672/v", "amqp://u:p@[fd00::1]:5672/v")
    assert url.hostnames == ("broker", "fd00::1")


def test_a_port_that_is_no_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="transport_url host 'h:amqps'"):
        parse_url("rabbit://u:p@h:amqps/")


def test_the_query_is_kept_for_tls_and_not_passed_to_kombu() -> None:
    url = parse_url("rabbit://u:p@h:5671/v?ssl=1&ssl_ca_file=/etc/ca.pem")
    assert url.query == {"ssl": "1", "ssl_ca_file": "/etc/ca.pem"}
    assert url.kombu_urls == ("amqp://u:p@h:5671/v",)


def test_every_host_of_a_cluster_url_keeps_its_own_credentials_port_and_the_vhost() -> None:
    url = parse_url("rabbit://a:pa@rabbit-1:5672,b:pb@rabbit-2:5673,a:pa@10.0.0.3/tether")
    assert url.kombu_urls == (
        "amqp://a:pa@rabbit-1:5672/tether",
        "amqp://b:pb@rabbit-2:5673/tether",
        "amqp://a:pa@10.0.0.3:5672/tether",
    )
    assert url.hostnames == ("rabbit-1", "rabbit-2", "10.0.0.3")


def test_a_cluster_url_is_masked_host_by_host() -> None:
    url = parse_url("rabbit://tether:hunter2@rabbit-1:5672,tether:hunter3@rabbit-2:5672/tether")
    assert url.masked == "rabbit://tether:***@rabbit-1:5672,tether:***@rabbit-2:5672/tether"


def test_oslo_messaging_reads_the_same_hosts_from_the_same_option(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = "rabbit://u:p@rabbit-1:5672,u:p@rabbit-2:5673,u:p@rabbit-3:5674/tether"
    ini = tmp_path / "tether.ini"
    ini.write_text(f"[DEFAULT]\ntransport_url = {cluster}\n")
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.load(conf, ["--config-file", str(ini)], "test_transport")
    broker = Broker(conf)
    handed: list[str] = []
    monkeypatch.setattr(rpc.oslo_messaging, "get_rpc_transport", lambda conf, url: handed.append(url))

    rpc.get_transport(conf)

    # tether hands oslo.messaging the option as written, and both read it alike.
    assert handed == [cluster]
    parsed = rpc.oslo_messaging.TransportURL.parse(conf, cluster)
    assert [(h.hostname, h.port, h.username, h.password) for h in parsed.hosts] == [
        ("rabbit-1", 5672, "u", "p"),
        ("rabbit-2", 5673, "u", "p"),
        ("rabbit-3", 5674, "u", "p"),
    ]
    assert parsed.virtual_host == "tether"
    assert [url.rpartition("@")[2] for url in broker.url.kombu_urls] == [
        f"{h.hostname}:{h.port}/{parsed.virtual_host}" for h in parsed.hosts
    ]


# -- failing over between the hosts of a cluster -------------------------------


class _OpenConnection:
    """What py-amqp returns for a broker that let us in."""

    connected = True
    client: Any = None

    def close(self) -> None:
        self.connected = False

    def collect(self) -> None:
        self.connected = False


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Three loopback ports as a cluster: ``refused`` ones have nothing
    listening (connecting is really refused), the others let us in."""
    held = []
    for _ in range(3):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connecting is refused
        held.append(sock)
    ports = [sock.getsockname()[1] for sock in held]
    state: dict[str, Any] = {
        "ports": ports,
        "url": "rabbit://" + ",".join(f"u:secret@127.0.0.1:{port}" for port in ports) + "/tether",
        "refused": set(),
        "tried": [],
    }
    establish = pyamqp.Transport.establish_connection

    def establish_or_refuse(transport: Any) -> Any:
        port = transport.client.port
        state["tried"].append(ports.index(port) + 1)
        if port in state["refused"]:
            return establish(transport)  # the kernel refuses it
        return _OpenConnection()

    monkeypatch.setattr(pyamqp.Transport, "establish_connection", establish_or_refuse)
    yield state
    for sock in held:
        sock.close()


def _connect_as_the_connection_loop_does(broker: Broker) -> int | None:
    """The host (1-based) one reconnect of a ConnectionLoop reaches, or None."""
    connection = broker.connect()
    try:
        connection.ensure_connection(max_retries=1)
    except OperationalError:
        return None
    finally:
        connection.release()
    return int(connection.port)


def test_a_connection_fails_over_to_the_next_host_when_the_first_refuses(
    make_broker: Any, cluster: dict[str, Any]
) -> None:
    broker = make_broker(cluster["url"])
    cluster["refused"].add(cluster["ports"][0])

    assert _connect_as_the_connection_loop_does(broker) == cluster["ports"][1]
    assert cluster["tried"] == [1, 2]


def test_after_a_failover_new_connections_start_at_the_host_that_answered(
    make_broker: Any, cluster: dict[str, Any]
) -> None:
    broker = make_broker(cluster["url"])
    cluster["refused"].add(cluster["ports"][0])
    _connect_as_the_connection_loop_does(broker)
    cluster["tried"].clear()

    # A dead first host costs no further refusal (or connect timeout).
    assert _connect_as_the_connection_loop_does(broker) == cluster["ports"][1]
    assert cluster["tried"] == [2]


def test_reconnecting_reaches_the_third_host_while_the_first_two_are_down(
    make_broker: Any, cluster: dict[str, Any]
) -> None:
    broker = make_broker(cluster["url"])
    cluster["refused"].update(cluster["ports"][:2])

    reached = [_connect_as_the_connection_loop_does(broker) for _ in range(2)]

    # One reconnect tries two hosts; the next goes on from where it stopped.
    assert reached == [None, cluster["ports"][2]]
    assert cluster["tried"] == [1, 2, 2, 3]


def _reconnect_once(broker: Broker, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records a ConnectionLoop logs up to its first "reconnecting"."""
    loop = ConnectionLoop(broker, "test-loop")
    with caplog.at_level(logging.DEBUG):
        loop.start()
        deadline = time.monotonic() + 30
        while "reconnecting to" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        loop.stop()
    return [r for r in caplog.records if "reconnecting to" in r.getMessage()]


def test_the_password_of_no_host_reaches_the_log_while_reconnecting(
    make_broker: Any, cluster: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    cluster["refused"].update(cluster["ports"])
    _reconnect_once(make_broker(cluster["url"]), caplog)
    assert "reconnecting to rabbit://u:***@127.0.0.1:" in caplog.text
    assert "secret" not in caplog.text


def test_a_refused_connection_is_one_warning_line_not_a_traceback(
    make_broker: Any, cluster: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A broker restarting refuses connections for a while: expected, and
    # nothing for an operator to debug.
    cluster["refused"].update(cluster["ports"])
    records = _reconnect_once(make_broker(cluster["url"]), caplog)
    assert records, caplog.text
    assert [(r.levelno, r.exc_info) for r in records] == [(logging.WARNING, None)] * len(records)


@pytest.mark.parametrize(("written", "used"), [("", 2), ("rabbit_interval_max = 25\n", 25)])
def test_oslo_messaging_reconnects_at_least_every_2_s_unless_the_operator_says_otherwise(
    tmp_path: pathlib.Path, written: str, used: int
) -> None:
    ini = tmp_path / "tether.ini"
    ini.write_text(
        f"[DEFAULT]\ntransport_url = rabbit://u:p@127.0.0.1:1/tether\n[oslo_messaging_rabbit]\n{written}"
    )
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.load(conf, ["--config-file", str(ini)], "test_transport")
    rpc.register_opts(conf)
    transport = rpc.get_transport(conf)  # connects only when first used
    try:
        assert conf.oslo_messaging_rabbit.rabbit_interval_max == used
        # A reply to a caller that is gone (an agent killed mid-call) is given
        # up once that caller has stopped waiting: the agents' default rpc_timeout.
        assert conf.oslo_messaging_rabbit.kombu_missing_consumer_retry_timeout == 10
    finally:
        transport.cleanup()


# -- TLS from [oslo_messaging_rabbit] ------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """A throwaway CA, a client certificate it signed, and some wrong files."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    client = ca.issue_cert("tether-client")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    client.cert_chain_pems[0].write_to_path(str(root / "client.pem"))
    client.private_key_pem.write_to_path(str(root / "client.key"))
    trustme.CA().issue_cert("someone-else").private_key_pem.write_to_path(str(root / "other.key"))
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    (root / "encrypted.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    (root / "not-a-cert.pem").write_text("this is not PEM\n")
    names = ["ca.pem", "client.pem", "client.key", "other.key", "encrypted.key", "not-a-cert.pem"]
    return {name.replace("-", "_").replace(".", "_"): root / name for name in names}


@pytest.fixture
def make_broker(tmp_path: pathlib.Path) -> Iterator[Any]:
    """A broker configured from an ini file, as a daemon reads it."""

    def make(transport_url: str, **rabbit: Any) -> Broker:
        ini = tmp_path / "tether.ini"
        lines = ["[DEFAULT]", f"transport_url = {transport_url}", "[oslo_messaging_rabbit]"]
        lines += [f"{name} = {value}" for name, value in rabbit.items()]
        ini.write_text("\n".join(lines) + "\n")
        conf = cfg.ConfigOpts()
        config.register_opts(conf)
        config.load(conf, ["--config-file", str(ini)], "test_transport")
        return Broker(conf)

    yield make


def test_tls_is_off_unless_oslo_messaging_rabbit_ssl_is_true(make_broker: Any) -> None:
    broker = make_broker("rabbit://u:p@broker:5672/")
    assert broker.tls is None
    assert broker.connect().ssl is False


def test_tls_verifies_the_broker_against_ssl_ca_file_and_the_host_name(make_broker: Any, pki: Any) -> None:
    broker = make_broker("rabbit://u:p@broker.example:5671/", ssl="true", ssl_ca_file=pki["ca_pem"])
    assert broker.connect().ssl == {
        "cert_reqs": ssl.CERT_REQUIRED,
        "server_hostname": "broker.example",
        "ca_certs": str(pki["ca_pem"]),
    }


def test_tls_without_ssl_ca_file_still_verifies_against_the_system_cas(make_broker: Any) -> None:
    options = make_broker("rabbit://u:p@broker.example:5671/", ssl="true").connect().ssl
    assert options == {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": "broker.example"}


def test_the_transport_url_query_turns_tls_on_as_oslo_messaging_reads_it(make_broker: Any, pki: Any) -> None:
    broker = make_broker(f"rabbit://u:p@broker:5671/?ssl=1&ssl_ca_file={pki['ca_pem']}")
    assert broker.connect().ssl["ca_certs"] == str(pki["ca_pem"])


def test_the_transport_url_query_overrides_the_option(make_broker: Any, pki: Any) -> None:
    broker = make_broker("rabbit://u:p@broker:5672/?ssl=false", ssl="true", ssl_ca_file=pki["ca_pem"])
    assert broker.tls is None


def test_a_client_certificate_is_presented_when_configured(make_broker: Any, pki: Any) -> None:
    broker = make_broker(
        "rabbit://u:p@broker:5671/",
        ssl="true",
        ssl_ca_file=pki["ca_pem"],
        ssl_cert_file=pki["client_pem"],
        ssl_key_file=pki["client_key"],
    )
    options = broker.connect().ssl
    assert options["certfile"] == str(pki["client_pem"])
    assert options["keyfile"] == str(pki["client_key"])


def test_ssl_version_pins_the_tls_version(make_broker: Any) -> None:
    options = make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_version="TLSv1_2").connect().ssl
    assert options["tls_minimum_version"] == options["tls_maximum_version"] == ssl.TLSVersion.TLSv1_2


def test_an_ssl_version_oslo_messaging_refuses_is_refused_at_start(make_broker: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"ssl_version = tlsv1_3 is not one oslo.messaging accepts; use one of"
    ):
        make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_version="tlsv1_3")


def test_a_missing_ca_file_is_refused_at_start_naming_the_option_and_path(
    make_broker: Any, tmp_path: pathlib.Path
) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigError) as caught:
        make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_ca_file=missing)
    assert f"[oslo_messaging_rabbit] ssl_ca_file = {missing}: no such file" in str(caught.value)


def test_a_missing_ca_file_given_in_the_query_is_refused_naming_the_query(make_broker: Any) -> None:
    with pytest.raises(
        ConfigError, match=r"transport_url query ssl_ca_file = /nonexistent.pem: no such file"
    ):
        make_broker("rabbit://u:p@b:5671/?ssl=1&ssl_ca_file=/nonexistent.pem")


def test_a_ca_file_that_holds_no_certificate_is_refused_at_start(make_broker: Any, pki: Any) -> None:
    with pytest.raises(ConfigError, match="holds no PEM certificate"):
        make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_ca_file=pki["not_a_cert_pem"])


def test_a_key_that_does_not_match_the_certificate_is_refused_at_start(make_broker: Any, pki: Any) -> None:
    with pytest.raises(ConfigError, match="KEY_VALUES_MISMATCH"):
        make_broker(
            "rabbit://u:p@b:5671/", ssl="true", ssl_cert_file=pki["client_pem"], ssl_key_file=pki["other_key"]
        )


def test_an_encrypted_key_is_refused_at_start_instead_of_prompting(make_broker: Any, pki: Any) -> None:
    with pytest.raises(ConfigError, match="the key is encrypted and no option gives its passphrase"):
        make_broker(
            "rabbit://u:p@b:5671/",
            ssl="true",
            ssl_cert_file=pki["client_pem"],
            ssl_key_file=pki["encrypted_key"],
        )


def test_a_key_without_a_certificate_is_refused_at_start(make_broker: Any, pki: Any) -> None:
    with pytest.raises(ConfigError, match="ssl_key_file is set but ssl_cert_file is not"):
        make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_key_file=pki["client_key"])


def test_tls_files_set_while_ssl_is_false_are_reported(
    make_broker: Any, pki: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert make_broker("rabbit://u:p@b:5672/", ssl_ca_file=pki["ca_pem"]).tls is None
    assert "[oslo_messaging_rabbit] ssl_ca_file set but ssl is false" in caplog.text


def test_memory_ignores_tls(make_broker: Any, pki: Any) -> None:
    assert make_broker("memory://", ssl="true", ssl_ca_file=pki["ca_pem"]).tls is None


def test_each_failover_host_is_verified_under_its_own_name(make_broker: Any, pki: Any) -> None:
    broker = make_broker(
        "rabbit://u:p@rabbit-1:5671,u:p@rabbit-2:5671/", ssl="true", ssl_ca_file=pki["ca_pem"]
    )
    connection = broker.connect()
    assert connection.ssl["server_hostname"] == "rabbit-1"
    connection.maybe_switch_next()
    assert connection.ssl["server_hostname"] == "rabbit-2"
    connection.maybe_switch_next()
    assert connection.ssl["server_hostname"] == "rabbit-1"


def test_a_refused_certificate_is_explained_for_the_operator(make_broker: Any, pki: Any) -> None:
    broker = make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_ca_file=pki["ca_pem"])
    refused = ssl.SSLCertVerificationError(1, "certificate verify failed")
    refused.verify_code, refused.verify_message = 20, "unable to get local issuer certificate"
    # as ensure_connection() raises it
    wrapped = OperationalError(str(refused))
    wrapped.__cause__ = refused
    explained = broker.explain(wrapped)
    assert explained is not None
    assert "refused (unable to get local issuer certificate)" in explained
    assert f"signed by the CA in {pki['ca_pem']}" in explained


def test_a_certificate_for_another_host_is_explained_as_such(make_broker: Any, pki: Any) -> None:
    broker = make_broker("rabbit://u:p@b:5671/", ssl="true", ssl_ca_file=pki["ca_pem"])
    mismatch = ssl.SSLCertVerificationError(1, "certificate verify failed")
    mismatch.verify_code, mismatch.verify_message = 62, "Hostname mismatch, certificate is not valid for 'b'."
    explained = broker.explain(mismatch)
    assert explained is not None
    assert "does not name the host it was reached by" in explained


def test_a_failure_that_reconnecting_may_cure_is_not_explained(make_broker: Any) -> None:
    broker = make_broker("rabbit://u:p@b:5671/", ssl="true")
    assert broker.explain(ConnectionRefusedError(111, "Connection refused")) is None


def test_a_connection_that_starts_at_a_later_host_verifies_it_under_its_own_name(
    make_broker: Any, pki: Any
) -> None:
    broker = make_broker(
        "rabbit://u:p@rabbit-1:5671,u:p@rabbit-2:5671/", ssl="true", ssl_ca_file=pki["ca_pem"]
    )
    broker.connect().maybe_switch_next()  # as kombu does when rabbit-1 refuses

    connection = broker.connect()

    assert connection.hostname == "rabbit-2"
    assert connection.ssl["server_hostname"] == "rabbit-2"


class _Served:
    """A connection as far as the quorum check looks: what the broker said of itself."""

    def __init__(self, version: bytes) -> None:
        self.connection = type(
            "Transport", (), {"server_properties": {"product": b"RabbitMQ", "version": version}}
        )
        self.default_channel = None


@pytest.mark.parametrize(("version", "warned"), [(b"3.7.28", True), (b"3.8.0", False), (b"3.13.7", False)])
def test_a_broker_without_quorum_queues_is_named_once(
    make_broker: Any, caplog: pytest.LogCaptureFixture, version: bytes, warned: bool
) -> None:
    broker = make_broker("rabbit://u:p@rabbit-1:5672/tether")
    with caplog.at_level(logging.WARNING, logger="tether.common.transport"):
        broker._check_quorum_support(_Served(version))
        broker._check_quorum_support(_Served(version))
    said = [r.getMessage() for r in caplog.records if "has no quorum queues" in r.getMessage()]
    assert len(said) == (1 if warned else 0), said
    if warned:
        assert "RabbitMQ 3.7.28" in said[0] and "queue_type = classic" in said[0]
