"""The broker as tether uses it: one URL and the queue topology.

Features
    Durable queues (quorum queues on RabbitMQ, with a delivery limit and a
    dead-letter exchange), persistent messages with confirms batched per
    window (:mod:`tether.common.publisher`), reconnection with backoff.

Connection string (``[DEFAULT] transport_url``)
    ``rabbit://USER:PASS@HOST:PORT[,USER:PASS@HOST2:PORT]/VHOST``
        RabbitMQ; several hosts form a failover list.
    ``memory://``
        kombu's in-memory transport: one process only, nothing survives it.
        The all-in-one and unit tests use it.

TLS
    oslo.messaging's own ``[oslo_messaging_rabbit]`` options: see
    :mod:`tether.common.tls`.

Threading
    Each connection belongs to one thread: see :mod:`tether.common.connection`.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import logging
import urllib.parse
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import amqp.exceptions
import kombu
import kombu.exceptions
from oslo_config import cfg

from tether.common import tls
from tether.common.exceptions import ConfigError
from tether.common.publisher import Envelope

with warnings.catch_warnings():
    # As in tether.common.rpc: importing oslo.messaging warns about eventlet.
    warnings.simplefilter("ignore")
    import oslo_messaging

LOG = logging.getLogger(__name__)

WORK_EXCHANGE = "tether.work"
RESULTS_EXCHANGE = "tether.results"
RESULTS_QUEUE = "tether.results"
CLAIMS_EXCHANGE = "tether.claims"
CLAIMS_QUEUE = "tether.claims"
#: RabbitMQ's pseudo-queue for replies straight to the consumer that asked.
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
DEAD_LETTER_EXCHANGE = "tether.dead-letter"
DEAD_LETTER_QUEUE = "tether.dead-letter"

#: Header naming why tether dead-lettered a message itself.
DEAD_LETTER_REASON = "x-tether-dead-letter-reason"
ORIGINAL_EXCHANGE = "x-tether-original-exchange"
ORIGINAL_ROUTING_KEY = "x-tether-original-routing-key"
#: When tether dead-lettered a message (ISO 8601 UTC).
DEAD_LETTERED_AT = "x-tether-dead-lettered-at"
#: The ``compression`` header of a dead letter's original, which kombu could not undo.
ORIGINAL_COMPRESSION = "x-tether-original-compression"
#: The header kombu reads to decompress a body (tether never sets it).
COMPRESSION = "compression"

_MEMORY_POLLING_INTERVAL = 0.005


@dataclasses.dataclass(frozen=True)
class TransportURL:
    """A parsed ``transport_url``."""

    scheme: str
    kombu_urls: tuple[str, ...]
    masked: str
    #: Each broker's host name, which its TLS certificate must name.
    hostnames: tuple[str, ...] = ()
    #: The URL's query: oslo.messaging reads it as ``[oslo_messaging_rabbit]`` overrides.
    query: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def in_memory(self) -> bool:
        return self.scheme == "memory"


def parse_url(url: str | None) -> TransportURL:
    """Translate ``transport_url`` into what kombu connects to.

    The URL is read by oslo.messaging's own parser, so the RPC side and the
    kombu side cannot disagree on what it says; tether refuses what that
    parser lets by (an empty host entry, a port that is not a number).

    :raises ConfigError: naming the option and the schemes it accepts.
    """
    if not url:
        raise ConfigError(reason="[DEFAULT] transport_url is not set.")
    try:
        parsed = oslo_messaging.TransportURL.parse(_NO_OPTIONS, url)
    except oslo_messaging.InvalidTransportURL as exc:
        raise ConfigError(reason=f"[DEFAULT] transport_url cannot be read: {exc}.") from exc
    except ValueError as exc:  # a port that is not a number: say which host has it
        raise ConfigError(reason=f"[DEFAULT] transport_url {_port_error(url) or exc}.") from exc
    if parsed.transport == "memory":
        return TransportURL("memory", ("memory://",), "memory://")
    if parsed.transport not in ("rabbit", "amqp"):
        raise ConfigError(
            reason=f"[DEFAULT] transport_url has scheme {parsed.transport!r}; tether "
            "speaks rabbit:// (RabbitMQ) and memory:// (one process only)."
        )
    if "" in urllib.parse.urlsplit(url).netloc.split(","):  # oslo.messaging skips it
        raise ConfigError(reason="[DEFAULT] transport_url has an empty host entry.")
    vhost = parsed.virtual_host or "/"
    quoted_vhost = urllib.parse.quote(vhost, safe="")
    urls, masked, hostnames = [], [], []
    for host in parsed.hosts:
        hostname = host.hostname or "localhost"
        netloc_host = f"[{hostname}]" if ":" in hostname else hostname
        # oslo.messaging defaults to 5672 even over TLS, where kombu would
        # pick 5671: both connections must reach the same listener.
        hostport = f"{netloc_host}:{host.port or 5672}"
        user = urllib.parse.quote(host.username or "", safe="")
        password = urllib.parse.quote(host.password or "", safe="")
        auth = f"{user}:{password}@" if host.username is not None else ""
        urls.append(f"amqp://{auth}{hostport}/{quoted_vhost}")
        masked.append(f"{user + ':***@' if host.username is not None else ''}{hostport}")
        hostnames.append(hostname)
    return TransportURL(
        "rabbit", tuple(urls), f"rabbit://{','.join(masked)}/{vhost}", tuple(hostnames), dict(parsed.query)
    )


def _port_error(url: str) -> str | None:
    for hostspec in urllib.parse.urlsplit(url).netloc.split(","):
        hostport = hostspec.rpartition("@")[2]
        try:
            urllib.parse.urlsplit(f"//{hostport}").port  # noqa: B018 - it raises for a bad port
        except ValueError as exc:
            return f"host {hostport!r}: {exc}"
    return None


#: TransportURL.parse keeps the options it is given but reads none when given a URL.
_NO_OPTIONS = cfg.ConfigOpts()


class Broker:
    """Connections and queue topology for one ``transport_url``.

    Every process declares the same queues with the same arguments: RabbitMQ
    refuses (406) a declaration that differs from the existing queue.
    """

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        self.url = parse_url(conf.transport_url)
        self.queue_type = conf.messaging.queue_type
        self.delivery_limit = conf.messaging.max_deliveries
        self.confirm_timeout = conf.messaging.confirm_timeout
        self.heartbeat = conf.messaging.heartbeat
        self.batch_wait = conf.messaging.batch_wait
        self.tls = None if self.url.in_memory else tls.from_conf(conf, self.url.query)
        self.work_exchange = kombu.Exchange(WORK_EXCHANGE, type="direct", durable=True)
        self.results_exchange = kombu.Exchange(RESULTS_EXCHANGE, type="direct", durable=True)
        self.claims_exchange = kombu.Exchange(CLAIMS_EXCHANGE, type="direct", durable=True)
        self.dead_letter_exchange = kombu.Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True)
        # The host of the failover list that the next connection tries first:
        # the one the last connection failed over to.
        self._first_host = 0
        self._quorum_checked = False

    def connect(self) -> kombu.Connection:
        """A connection, not yet open, to the first host that was reachable last.

        kombu tries the hosts in turn only within one ``ensure_connection``
        call (two of them for ``max_retries=1``), and a new connection would
        start over at the first host: a dead first host would cost every
        reconnect a refusal or a connect timeout, and with the first two
        hosts down the third would never be tried. So each connection
        starts where the last one failed over to.
        """
        if self.url.in_memory:
            return kombu.Connection(
                "memory://",
                transport_options={"polling_interval": _MEMORY_POLLING_INTERVAL},
            )
        first = self._first_host
        urls = self.url.kombu_urls[first:] + self.url.kombu_urls[:first]
        connection = _Connection(
            ";".join(urls),
            heartbeat=self.heartbeat or None,
            failover_strategy="round-robin",
            connect_timeout=5,
            ssl=self.tls.ssl_options(self.url.hostnames[first]) if self.tls else False,
        )
        connection.on_switch = self._failed_over
        return connection

    def _failed_over(self, kombu_url: str) -> None:
        if kombu_url in self.url.kombu_urls:
            self._first_host = self.url.kombu_urls.index(kombu_url)

    def work_queue_depths(self, routing_keys: Sequence[str]) -> dict[str, int | None]:
        """Messages waiting in the work queue of each routing key; None for a
        queue that does not exist or could not be asked."""
        depths: dict[str, int | None] = dict.fromkeys(routing_keys)
        try:
            with self.connect() as connection:
                for key in routing_keys:
                    channel = connection.channel()
                    try:
                        _, depths[key], _ = channel.queue_declare(queue=f"tether.work.{key}", passive=True)
                    except (kombu.exceptions.KombuError, amqp.exceptions.AMQPError) as exc:
                        LOG.debug("cannot tell the depth of the %s work queue: %s", key, exc)
                    finally:
                        _close_quietly(channel)
        except (kombu.exceptions.KombuError, OSError) as exc:
            LOG.warning("cannot ask the broker for work queue depths: %s", exc)
        return depths

    def explain(self, exc: BaseException) -> str | None:
        """What an operator must fix when connecting failed with ``exc``; None
        for a failure that reconnecting may cure."""
        return tls.explain(exc, self.tls)

    def work_queue(self, provider: str) -> kombu.Queue:
        return self._queue(f"tether.work.{provider}", self.work_exchange, provider)

    def results_queue(self) -> kombu.Queue:
        return self._queue(RESULTS_QUEUE, self.results_exchange, RESULTS_QUEUE)

    def claims_queue(self) -> kombu.Queue:
        return self._queue(CLAIMS_QUEUE, self.claims_exchange, CLAIMS_QUEUE)

    def reply_queue(self, owner: str) -> kombu.Queue:
        """Where the answers to ``owner``'s requests come back: RabbitMQ's
        direct reply-to (no queue to declare, store or delete), or a private
        queue on the in-memory transport, which has none."""
        if self.url.in_memory:
            return kombu.Queue(f"tether.reply.{owner}", auto_delete=True, no_ack=True)
        return kombu.Queue(DIRECT_REPLY_TO, no_ack=True, no_declare=True)

    def dead_letter_queue(self) -> kombu.Queue:
        return kombu.Queue(
            DEAD_LETTER_QUEUE,
            self.dead_letter_exchange,
            durable=True,
            queue_arguments=self._arguments(dead_letter=False),
        )

    def dead_letter_envelope(self, message: Any, reason: str) -> Envelope:
        """The message, as it came, bound for the dead-letter queue with ``reason``."""
        body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
        headers = dict(message.headers or {})
        headers[DEAD_LETTER_REASON] = reason[:1000]
        # Where it came from, so that `tether-manage dead-letters requeue` can send it back.
        headers[ORIGINAL_EXCHANGE] = message.delivery_info.get("exchange") or ""
        headers[ORIGINAL_ROUTING_KEY] = message.delivery_info.get("routing_key") or ""
        headers[DEAD_LETTERED_AT] = datetime.datetime.now(datetime.UTC).isoformat()
        return Envelope(
            exchange=self.dead_letter_exchange,
            routing_key=DEAD_LETTER_QUEUE,
            body=body,
            message_id=str(message.properties.get("message_id") or ""),
            headers=headers,
            # A results message is read as one only with its type.
            type=message.properties.get("type"),
        )

    def declare(self, connection: kombu.Connection, queues: Sequence[kombu.Queue]) -> None:
        channel = connection.default_channel
        self._check_quorum_support(connection)
        self.dead_letter_queue().bind(channel).declare()
        for queue in queues:
            queue.bind(channel).declare()

    def _check_quorum_support(self, connection: kombu.Connection) -> None:
        """Say once when the broker predates quorum queues (RabbitMQ 3.8):
        it ignores the queue type it does not know, so the queues are
        classic durable ones, without a delivery limit."""
        if self.queue_type != "quorum" or self._quorum_checked or self.url.in_memory:
            return
        self._quorum_checked = True
        properties = getattr(connection.connection, "server_properties", None) or {}
        version = properties.get("version", b"")
        version = version.decode() if isinstance(version, bytes) else str(version)
        product = properties.get("product", b"")
        product = product.decode() if isinstance(product, bytes) else str(product)
        if product == "RabbitMQ" and _version_tuple(version) < (3, 8):
            LOG.warning(
                "RabbitMQ %s has no quorum queues: tether's queues are classic durable ones on it, "
                "without a delivery limit; upgrade the broker, or set [messaging] queue_type = classic "
                "to say so",
                version,
            )

    def _queue(self, name: str, exchange: kombu.Exchange, routing_key: str) -> kombu.Queue:
        return kombu.Queue(
            name,
            exchange,
            routing_key=routing_key,
            durable=True,
            queue_arguments=self._arguments(dead_letter=True),
        )

    def _arguments(self, dead_letter: bool) -> dict[str, Any] | None:
        if self.url.in_memory:
            return None
        arguments: dict[str, Any] = {}
        if self.queue_type == "quorum":
            arguments["x-queue-type"] = "quorum"
            if dead_letter:
                arguments["x-delivery-limit"] = self.delivery_limit
        if dead_letter:
            arguments["x-dead-letter-exchange"] = DEAD_LETTER_EXCHANGE
        return arguments or None


def queue_of(exchange: str, routing_key: str) -> str | None:
    """The queue of tether's that ``exchange`` routes ``routing_key`` to; None for another's."""
    if exchange == WORK_EXCHANGE:
        return f"tether.work.{routing_key}"
    if exchange == RESULTS_EXCHANGE:
        return RESULTS_QUEUE
    if exchange == CLAIMS_EXCHANGE:
        return CLAIMS_QUEUE
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("."):
        digits = "".join(itertools.takewhile(str.isdigit, part))
        if not digits:
            break
        parts.append(int(digits))
    # An unreadable version is taken as a new one: no warning on a guess.
    return tuple(parts) or (99,)


class _Connection(kombu.Connection):  # type: ignore[misc]  # kombu is Any to mypy
    """A kombu connection whose TLS checks each failover host by its own name,
    and which tells its :class:`Broker` where it failed over to.

    kombu keeps one ``ssl`` dict for every host of a failover list, so the
    name checked against the certificate would stay the first host's.
    """

    ssl: Any
    #: Called with the URL of each host kombu fails over to.
    on_switch: Callable[[str], None] | None = None

    def switch(self, conn_str: str) -> None:
        super().switch(conn_str)
        if isinstance(self.ssl, dict):
            self.ssl = {**self.ssl, "server_hostname": self.hostname}
        if self.on_switch is not None:
            self.on_switch(conn_str)


def _close_quietly(channel: Any) -> None:
    try:
        channel.close()
    except Exception:  # a channel the broker closed already
        LOG.debug("closing a channel failed", exc_info=True)
