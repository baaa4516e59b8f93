"""The certificates of TERMINATED_HTTPS listeners: where the haproxy driver
looks for them, what it refuses, and what it hands HAProxy."""

from __future__ import annotations

import datetime
import pathlib

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.drivers.base import InvalidConfiguration, NotSupported, Resource
from tether.drivers.lbaas_models import Listener
from tether.reference_drivers.haproxy import certificates as haproxy_certificates


def _listener(ref: str | None) -> Listener:
    attributes = {"protocol": "TERMINATED_HTTPS", "protocol_port": 443, "default_tls_container_ref": ref}
    return Resource("listener", "l-1", "p", attributes, "lb").typed(Listener)


@pytest.fixture
def certificates(tmp_path: pathlib.Path) -> pathlib.Path:
    directory = tmp_path / "certs"
    directory.mkdir()
    return directory


def _refusal(ref: str | None, certificates: pathlib.Path) -> str:
    with pytest.raises(InvalidConfiguration) as refused:
        haproxy_certificates.read(_listener(ref), str(certificates))
    return refused.value.user_message


@pytest.mark.parametrize("ref", ["../secret.pem", "a/../../secret.pem", "/etc/ssl/private/x.pem", "."])
def test_a_reference_outside_the_certificate_directory_is_refused(
    certificates: pathlib.Path, ref: str
) -> None:
    (certificates.parent / "secret.pem").write_text("not for users")
    assert _refusal(ref, certificates) == (
        f"listener l-1: default_tls_container_ref {ref!r} is outside the certificate directory; name a "
        "file in it."
    )


def test_a_reference_is_relative_to_the_directory_or_absolute_inside_it(certificates: pathlib.Path) -> None:
    pem = trustme.CA().issue_cert("lb.example").private_key_and_cert_chain_pem.bytes()
    (certificates / "site").mkdir()
    (certificates / "site" / "lb.pem").write_bytes(pem)
    relative = haproxy_certificates.read(_listener("site/lb.pem"), str(certificates))
    assert relative == haproxy_certificates.read(
        _listener(str(certificates / "site" / "lb.pem")), str(certificates)
    )


def test_a_missing_or_unreadable_file_is_named_with_what_is_wrong(certificates: pathlib.Path) -> None:
    assert _refusal("absent.pem", certificates) == (
        "listener l-1: default_tls_container_ref 'absent.pem': there is no such file; put the PEM of "
        "certificate and key there first."
    )
    (certificates / "dir.pem").mkdir()
    assert _refusal("dir.pem", certificates) == (
        "listener l-1: default_tls_container_ref 'dir.pem': the file cannot be read (Is a directory); the "
        "agent needs to read it."
    )


def test_what_a_file_lacks_or_holds_wrong_is_said(certificates: pathlib.Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("lb.example")
    other = ca.issue_cert("other.example")
    cases = {
        "empty.pem": (b"", "the file holds no PEM certificate"),
        "key-only.pem": (leaf.private_key_pem.bytes(), "the file holds no PEM certificate"),
        "cert-only.pem": (
            leaf.cert_chain_pems[0].bytes(),
            "the file holds no PEM private key; add the certificate's key",
        ),
        "mismatch.pem": (
            leaf.cert_chain_pems[0].bytes() + other.private_key_pem.bytes(),
            "the private key belongs to none of its certificates",
        ),
        "two-keys.pem": (
            leaf.private_key_and_cert_chain_pem.bytes() + other.private_key_pem.bytes(),
            "the file holds more than one private key; keep the certificate's alone",
        ),
        "encrypted.pem": (
            leaf.cert_chain_pems[0].bytes() + _encrypted(leaf.private_key_pem.bytes()),
            "the private key is encrypted; HAProxy needs it unencrypted",
        ),
    }
    for name, (content, problem) in cases.items():
        (certificates / name).write_bytes(content)
        assert _refusal(name, certificates) == f"listener l-1: default_tls_container_ref {name!r}: {problem}."


def test_an_expired_certificate_is_refused_with_its_date(certificates: pathlib.Path) -> None:
    ended = datetime.datetime(2020, 1, 2, 3, 4, tzinfo=datetime.UTC)
    leaf = trustme.CA().issue_cert(
        "lb.example", not_before=ended - datetime.timedelta(days=1), not_after=ended
    )
    leaf.private_key_and_cert_chain_pem.write_to_path(str(certificates / "old.pem"))
    assert _refusal("old.pem", certificates).endswith(
        "the certificate expired on 2020-01-02 03:04 UTC; renew it."
    )


def test_haproxy_gets_the_certificate_first_then_its_chain_then_the_key(certificates: pathlib.Path) -> None:
    intermediate = trustme.CA().create_child_ca()
    leaf = intermediate.issue_cert("lb.example")
    # The operator's file in another order: key, chain, certificate.
    chain = b"".join(p.bytes() for p in leaf.cert_chain_pems)
    own = leaf.cert_chain_pems[0].bytes()
    (certificates / "lb.pem").write_bytes(leaf.private_key_pem.bytes() + chain.replace(own, b"") + own)
    handed = haproxy_certificates.read(_listener("lb.pem"), str(certificates))
    certs = x509.load_pem_x509_certificates(handed)
    assert [c.subject for c in certs] == [
        x509.load_pem_x509_certificate(p.bytes()).subject for p in leaf.cert_chain_pems
    ]
    assert handed.rstrip().endswith(b"-----END PRIVATE KEY-----")


def test_an_agent_without_a_certificate_directory_terminates_nothing() -> None:
    with pytest.raises(
        NotSupported, match=r"no certificate directory \(\[driver:haproxy\] certificate_dir\)"
    ):
        haproxy_certificates.read(_listener("lb.pem"), None)


def _encrypted(key_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(key_pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
