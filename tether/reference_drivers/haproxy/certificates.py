"""The certificates TERMINATED_HTTPS listeners terminate TLS with.

A listener's ``default_tls_container_ref`` names a PEM file under the
agent's ``[driver:haproxy] certificate_dir``: the certificate, any
intermediate certificates and the unencrypted private key, in any order. A
reference is a path relative to that directory, or an absolute one inside
it; one that leads outside (``..``, another absolute path) is refused. The
check is of the path as written: a symbolic link the operator placed in the
directory is followed wherever it leads, since only the operator can make
one there.

At each apply the driver reads every such file, checks that it holds a
certificate, a key that belongs to it and that the certificate has not
expired, and writes a copy HAProxy reads (``tls/<listener id>.pem`` beside
``haproxy.cfg``, certificate first, then the chain, then the key; mode
0600), so HAProxy serves what was checked even if the file changes later. A
replaced file is served after the next change of the load balancer (an
update of the listener, even one that changes nothing, is one).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tether.drivers.base import InvalidConfiguration, NotSupported
from tether.drivers.lbaas_models import Listener, Loadbalancer

_KEY = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.S)


def bundle_path(directory: str, listener_id: str) -> str:
    """Where the checked copy of a listener's certificate is."""
    return os.path.join(directory, "tls", f"{listener_id}.pem")


def terminates(listener: Listener) -> bool:
    return listener.protocol == "TERMINATED_HTTPS"


def install(lb: Loadbalancer, directory: str, certificate_dir: str | None) -> None:
    """Check and copy the certificate of every TERMINATED_HTTPS listener of
    ``lb`` into ``directory``, and remove the copies no listener needs.

    :raises InvalidConfiguration: naming the listener, its reference and
        what is wrong with the file.
    :raises NotSupported: when this agent has no certificate directory.
    """
    wanted = {}
    for listener in lb.listeners:
        if terminates(listener):
            wanted[bundle_path(directory, listener.id)] = read(listener, certificate_dir)
    tls = os.path.join(directory, "tls")
    os.makedirs(tls, mode=0o700, exist_ok=True)
    for path, pem in wanted.items():
        fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        os.replace(path + ".new", path)
    for name in os.listdir(tls):
        if os.path.join(tls, name) not in wanted:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(tls, name))


def resolve(ref: str, certificate_dir: str) -> str:
    """The file ``ref`` names, refused when it is outside ``certificate_dir``."""
    base = os.path.abspath(certificate_dir)
    path = os.path.normpath(os.path.join(base, ref))
    if os.path.commonpath([base, path]) != base or path == base:
        raise ValueError("is outside the certificate directory; name a file in it")
    return path


def read(listener: Listener, certificate_dir: str | None) -> bytes:
    """The PEM HAProxy is given for ``listener``: its certificate, chain and
    key, checked."""
    ref = listener.default_tls_container_ref
    what = f"listener {listener.id}: default_tls_container_ref {ref!r}"
    if certificate_dir is None:
        raise NotSupported(
            f"listener {listener.id} terminates TLS, but this agent has no certificate directory "
            "([driver:haproxy] certificate_dir); ask the operator to set one."
        )
    if not ref:
        raise InvalidConfiguration(
            f"listener {listener.id} is TERMINATED_HTTPS without default_tls_container_ref; set it to "
            "the certificate's file."
        )
    try:
        path = resolve(ref, certificate_dir)
    except ValueError as exc:
        raise InvalidConfiguration(f"{what} {exc}.") from exc
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except FileNotFoundError as exc:
        raise InvalidConfiguration(
            f"{what}: there is no such file; put the PEM of certificate and key there first.",
            f"{path}: {exc}",
        ) from exc
    except OSError as exc:
        raise InvalidConfiguration(
            f"{what}: the file cannot be read ({exc.strerror}); the agent needs to read it.",
            f"{path}: {exc}",
        ) from exc
    try:
        return _bundle(data)
    except ValueError as exc:
        raise InvalidConfiguration(f"{what}: {exc}.", f"{path}: {exc}") from exc


def _bundle(data: bytes) -> bytes:
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ValueError("the file holds no PEM certificate") from None
    keys = [m.group(0) for m in _KEY.finditer(data)]
    if not keys:
        raise ValueError("the file holds no PEM private key; add the certificate's key")
    if len(keys) > 1:
        raise ValueError("the file holds more than one private key; keep the certificate's alone")
    if b"ENCRYPTED" in keys[0]:
        raise ValueError("the private key is encrypted; HAProxy needs it unencrypted")
    try:
        key = serialization.load_pem_private_key(keys[0], password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"the private key cannot be read ({exc})") from None
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def spki(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    leaf = next((c for c in certificates if spki(c) == public), None)
    if leaf is None:
        raise ValueError("the private key belongs to none of its certificates")
    now = datetime.datetime.now(datetime.UTC)
    if leaf.not_valid_after_utc < now:
        raise ValueError(
            f"the certificate expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC; renew it"
        )
    chain = [c for c in certificates if c is not leaf]
    pem = serialization.Encoding.PEM
    return b"".join(
        [
            leaf.public_bytes(pem),
            *(c.public_bytes(pem) for c in chain),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        ]
    )
