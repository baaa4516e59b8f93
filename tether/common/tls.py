"""TLS to the broker, configured by oslo.messaging's own options.

``[oslo_messaging_rabbit]`` ``ssl``, ``ssl_ca_file``, ``ssl_cert_file``,
``ssl_key_file`` and ``ssl_version`` (or the same names in the query of
``transport_url``, which oslo.messaging lets override them) secure both
the RPC connections and tether's own. The broker's certificate is always
checked against the CA and the host name in ``transport_url``; a file that
cannot serve is refused at start, not at every reconnect.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import ssl
import warnings
from collections.abc import Mapping
from typing import Any

from oslo_config import cfg

from tether.common.exceptions import ConfigError, TetherError

LOG = logging.getLogger(__name__)

#: oslo.messaging's group, whose TLS options tether's connections share.
RABBIT_GROUP = "oslo_messaging_rabbit"
_TLS_OPTIONS = ("ssl", "ssl_version", "ssl_ca_file", "ssl_cert_file", "ssl_key_file")
#: OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH.
_NAME_MISMATCH = (62, 64)
#: The ``ssl_version`` values oslo.messaging accepts on this Python, as the
#: TLS version each pins; sslv23 (or nothing) negotiates the best both ends speak.
_TLS_VERSIONS: dict[str, ssl.TLSVersion | None] = {
    "sslv23": None,
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1_1": ssl.TLSVersion.TLSv1_1,
    "tlsv1_2": ssl.TLSVersion.TLSv1_2,
}


@dataclasses.dataclass(frozen=True)
class TLS:
    """TLS to the broker: the files to trust and to present, and a pinned version."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    version: ssl.TLSVersion | None = None

    def ssl_options(self, hostname: str) -> dict[str, Any]:
        """py-amqp's ``ssl`` argument for a broker called ``hostname``.

        The certificate chain and the host name are always checked: against
        ``ca_file`` when set, else against the system's trusted CAs.
        """
        options: dict[str, Any] = {"cert_reqs": ssl.CERT_REQUIRED, "server_hostname": hostname}
        if self.ca_file:
            options["ca_certs"] = self.ca_file
        if self.cert_file:
            options["certfile"] = self.cert_file
        if self.key_file:
            options["keyfile"] = self.key_file
        if self.version is not None:
            options["tls_minimum_version"] = options["tls_maximum_version"] = self.version
        return options


def from_conf(conf: cfg.ConfigOpts, query: Mapping[str, str]) -> TLS | None:
    """The TLS that oslo.messaging's options configure, with ``transport_url``'s
    ``query`` over them as oslo.messaging allows; None for plain AMQP.

    :raises ConfigError: for a file that is missing, unreadable or not what
        its option says, or an ``ssl_version`` oslo.messaging refuses.
    """
    values = _tls_values(conf, query)
    enabled, _ = values["ssl"]
    if not enabled:
        ignored = [f"{where} {name}" for name, (value, where) in values.items() if value and name != "ssl"]
        if ignored:
            LOG.warning(
                "%s set but ssl is false: the broker connections are not encrypted; set "
                "[%s] ssl = true to use TLS",
                ", ".join(ignored),
                RABBIT_GROUP,
            )
        return None
    files = {name: value for name, (value, _) in values.items() if name.endswith("_file")}
    for name, path in files.items():
        if path:
            _check_readable(path, name, values[name][1])
    version_name, where = values["ssl_version"]
    if version_name and version_name.lower() not in _TLS_VERSIONS:
        raise ConfigError(
            reason=f"{where} ssl_version = {version_name} is not one oslo.messaging accepts; use one "
            f"of {', '.join(_TLS_VERSIONS)}, or leave it unset to negotiate the best version."
        )
    tls = TLS(
        ca_file=files["ssl_ca_file"] or None,
        cert_file=files["ssl_cert_file"] or None,
        key_file=files["ssl_key_file"] or None,
        version=_TLS_VERSIONS[version_name.lower()] if version_name else None,
    )
    _check_loadable(tls, values)
    return tls


def _tls_values(conf: cfg.ConfigOpts, query: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """Each TLS option's value and where it was set, as oslo.messaging resolves them."""
    opts = _rabbit_tls_opts()
    if RABBIT_GROUP not in conf or not all(name in conf[RABBIT_GROUP] for name in opts):
        # oslo.messaging registers them only once its driver loads, which may
        # be after the broker is set up.
        conf.register_opts(list(opts.values()), group=RABBIT_GROUP)
    values: dict[str, tuple[Any, str]] = {}
    for name, opt in opts.items():
        if name in query:
            where = "[DEFAULT] transport_url query"
            try:
                values[name] = (opt.type(query[name]), where)
            except ValueError as exc:
                raise ConfigError(reason=f"{where} {name}={query[name]}: {exc}.") from exc
        else:
            values[name] = (conf[RABBIT_GROUP][name], f"[{RABBIT_GROUP}]")
    return values


def _rabbit_tls_opts() -> dict[str, cfg.Opt]:
    with warnings.catch_warnings():
        # oslo.messaging imports eventlet, which warns that it is deprecated.
        warnings.simplefilter("ignore")
        from oslo_messaging import opts as oslo_messaging_opts
    found = {
        opt.dest: opt
        for group, opts in oslo_messaging_opts.list_opts()
        if group == RABBIT_GROUP
        for opt in opts
        if opt.dest in _TLS_OPTIONS
    }
    missing = set(_TLS_OPTIONS) - set(found)
    if missing:
        raise LookupError(f"oslo.messaging no longer defines [{RABBIT_GROUP}] {', '.join(sorted(missing))}")
    return found


def _check_readable(path: str, name: str, where: str) -> None:
    if not os.path.isfile(path):
        raise ConfigError(
            reason=f"{where} {name} = {path}: no such file; give the path of a PEM file on this host."
        )
    if not os.access(path, os.R_OK):
        raise ConfigError(
            reason=f"{where} {name} = {path}: this service's user (uid {os.geteuid()}) cannot read it; "
            "make it readable by that user."
        )


def _check_loadable(tls: TLS, values: dict[str, tuple[Any, str]]) -> None:
    # Loading the files now turns a wrong file into a refusal to start rather
    # than a handshake that fails on every reconnect.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if tls.ca_file:
        try:
            context.load_verify_locations(tls.ca_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                reason=f"{values['ssl_ca_file'][1]} ssl_ca_file = {tls.ca_file} holds no PEM certificate "
                f"({exc.reason or exc}); give the CA certificate that signed the broker's certificate."
            ) from exc
    if tls.key_file and not tls.cert_file:
        raise ConfigError(
            reason=f"{values['ssl_key_file'][1]} ssl_key_file is set but ssl_cert_file is not; a client "
            "certificate needs both (or neither)."
        )
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_refuse_passphrase)
        except (ssl.SSLError, _EncryptedKey) as exc:
            reason = (exc.reason if isinstance(exc, ssl.SSLError) else None) or str(exc)
            raise ConfigError(
                reason=f"{values['ssl_cert_file'][1]} ssl_cert_file = {tls.cert_file} and ssl_key_file = "
                f"{tls.key_file or '(unset: the key in ssl_cert_file)'} are not a PEM certificate and its "
                f"unencrypted private key ({reason})."
            ) from exc


class _EncryptedKey(TetherError):
    message = "the key is encrypted and no option gives its passphrase"


def _refuse_passphrase() -> str:
    # Neither oslo.messaging nor py-amqp can give one: OpenSSL would prompt
    # on the terminal, or fail on every connection in a daemon.
    raise _EncryptedKey


def explain(exc: BaseException, tls: TLS | None) -> str | None:
    """What an operator must fix when connecting failed with ``exc``; None
    for a failure that reconnecting may cure."""
    # kombu re-raises connection errors as its own, the original as the cause.
    while exc.__cause__ is not None and not isinstance(exc, ssl.SSLError):
        exc = exc.__cause__
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_code in _NAME_MISMATCH:
        return (
            "the broker's TLS certificate does not name the host it was reached by "
            f"({exc.verify_message}): use a name the certificate lists in [DEFAULT] "
            "transport_url, or issue the broker a certificate that names this one"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        ca_file = tls.ca_file if tls else None
        trusted = f"the CA in {ca_file}" if ca_file else "a CA this host trusts"
        return (
            f"the broker's TLS certificate was refused ({exc.verify_message}): it must be "
            f"signed by {trusted} ([{RABBIT_GROUP}] ssl_ca_file)"
        )
    if isinstance(exc, ssl.SSLError):
        return (
            f"the TLS handshake with the broker failed ({exc.reason or exc}): check that "
            "[DEFAULT] transport_url names the broker's TLS port (RabbitMQ's listeners.ssl, "
            "5671 by convention) and, if the broker asks for a client certificate, that "
            f"[{RABBIT_GROUP}] ssl_cert_file and ssl_key_file hold one signed by a CA it trusts"
        )
    return None
