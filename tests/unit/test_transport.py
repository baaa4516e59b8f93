from __future__ import annotations

import logging
import pathlib
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import trustme
from cryptography.hazmat.primitives import serialization
from kombu.exceptions import OperationalError
from oslo_config import cfg

from tether.common import config
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
