"""A throwaway certificate authority for the broker's TLS listener."""

from __future__ import annotations

import dataclasses
import pathlib

import trustme

from .rabbitmq import TLSFiles


@dataclasses.dataclass(frozen=True)
class PKI:
    ca: pathlib.Path
    server: TLSFiles
    client_cert: pathlib.Path
    client_key: pathlib.Path
    #: a CA that signed nothing the node shows, and a client certificate of its own
    other_ca: pathlib.Path
    stranger_cert: pathlib.Path
    stranger_key: pathlib.Path


def issue(root: pathlib.Path) -> PKI:
    """Certificates in ``root``: the node's, a client's, and a stranger's from another CA."""
    ca, other = trustme.CA(), trustme.CA()
    # The address only, not "localhost": connecting by that name then shows
    # that the host name is checked and not only the signature.
    server = ca.issue_cert("127.0.0.1")
    client = ca.issue_cert("tether-client", common_name="tether-client")
    stranger = other.issue_cert("stranger", common_name="stranger")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    other.cert_pem.write_to_path(str(root / "other-ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    for name, issued in (("client", client), ("stranger", stranger)):
        issued.cert_chain_pems[0].write_to_path(str(root / f"{name}.pem"))
        issued.private_key_pem.write_to_path(str(root / f"{name}.key"))
    return PKI(
        ca=root / "ca.pem",
        server=TLSFiles(ca=root / "ca.pem", cert=root / "server.pem", key=root / "server.key"),
        client_cert=root / "client.pem",
        client_key=root / "client.key",
        other_ca=root / "other-ca.pem",
        stranger_cert=root / "stranger.pem",
        stranger_key=root / "stranger.key",
    )
