"""The control plane: agent→plugin RPC over oslo.messaging.

Work, claims and results travel over kombu (see :mod:`tether.common.transport`
and :mod:`tether.common.claims`); oslo.messaging acks a message before its
endpoint runs, which is fine for request/reply calls whose caller retries
on a timeout: state reports, resyncs and the progress of long operations,
and the claims of agents of the previous release.

The same ``[DEFAULT] transport_url`` configures both: ``rabbit://`` as is,
``memory://`` becomes oslo.messaging's in-process ``fake://``.

oslo.messaging registers some of its options on the global ``cfg.CONF``
only, so the daemons (and tests) use that object.

Versions of the plugin's RPC API (``TOPIC``):

* 1.0 - ``claim``, ``report_state``, ``resync``
* 1.1 - ``progress`` (long device operations)
* 1.2 - ``claim_batch`` (several claims, one transaction)
* 1.3 - ``claim_batch`` claims may say ``published_for``: the attempt their
  work message was published for
* 1.4 - ``plan_steps`` and ``step`` (operations a driver runs in steps)
* 1.5 - ``audit_targets`` and ``report_drift`` (the drift audit)
* 1.6 - ``report_state``'s ``state`` may carry ``capabilities``: what each
  provider's driver supports (:mod:`tether.common.capabilities`). An older
  plugin ignores the key and an older agent sends none, so agents still call
  ``report_state`` as 1.0.
* 1.7 - ``status_targets`` and ``report_status`` (devices' status outside a task)
* 1.8 - ``standby_sync`` (the roots an agent holds as active or standby of an
  ``ACTIVE_STANDBY`` pair); ``report_state``'s ``state`` may carry
  ``addresses``, by provider, where peers reach its driver (ignored by an
  older plugin, so still called as 1.0)
* 1.9 - ``report_state``'s ``state`` may carry ``drivers``: each provider's
  placement and resource types (:mod:`tether.common.declarations`), which a
  plugin of this release routes by instead of loading drivers (ignored by an
  older plugin, so still called as 1.0)

Agents of 0.2 claim on the claims queue once a plugin's answer to their
state report says ``kombu_claims``; ``claim`` and ``claim_batch`` stay for
agents of 0.1 and go in the release after 0.2.
"""

from __future__ import annotations

import warnings
from typing import Any

import kombu.exceptions
from oslo_config import cfg

from tether.common.transport import parse_url

with warnings.catch_warnings():
    # oslo.messaging imports oslo.service, which imports eventlet and warns
    # that eventlet is deprecated; tether runs no eventlet code.
    warnings.simplefilter("ignore")
    import oslo_messaging
    from oslo_messaging import opts as oslo_messaging_opts

TOPIC = "tether-plugin"
API_VERSION = "1.9"
CONTROL_EXCHANGE = "tether"

#: oslo.messaging's defaults that tether changes: durable queues that
#: survive a broker restart; reconnect attempts at most 2 s apart (oslo's
#: own 30 s let an agent back from a long outage report only after the
#: plugin, which waits twice ``agent_down_time`` after its own reconnection,
#: had declared it dead); and a reply whose caller's queue is gone (an agent
#: killed mid-call) given up after 10 s, the agents' default ``rpc_timeout``,
#: by when that caller has stopped waiting (oslo's 60 s held the RPC worker,
#: and a stopping plugin, as long).
_RABBIT_DEFAULTS: dict[str, object] = {
    "rabbit_quorum_queue": True,
    "rabbit_interval_max": 2,
    "kombu_missing_consumer_retry_timeout": 10,
}


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Have oslo.messaging register its transport options on a parsed ``conf``."""
    oslo_messaging.set_transport_defaults(control_exchange=CONTROL_EXCHANGE)
    # Parsing the configured URL is oslo.messaging's public way to register
    # ``[DEFAULT] transport_url`` and its companions.
    oslo_messaging.TransportURL.parse(conf)


def transport_url_opt() -> cfg.Opt:
    """oslo.messaging's ``[DEFAULT] transport_url``, which tether's broker shares."""
    for group, opts in oslo_messaging_opts.list_opts():
        for opt in opts:
            if group in (None, "DEFAULT") and opt.dest == "transport_url":
                found: cfg.Opt = opt
                return found
    raise LookupError("oslo.messaging no longer defines [DEFAULT] transport_url")


def get_transport(conf: cfg.ConfigOpts) -> Any:
    url = "fake://" if parse_url(conf.transport_url).in_memory else conf.transport_url
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    # The driver registered its options while loading; its connections read
    # them when first used, which is after this.
    defaults = dict(_RABBIT_DEFAULTS)
    if "messaging" in conf and conf.messaging.queue_type == "classic":
        # A broker without quorum queues has none for RPC either.
        defaults["rabbit_quorum_queue"] = False
    for name, value in defaults.items():
        if "oslo_messaging_rabbit" in conf and name in conf.oslo_messaging_rabbit:
            conf.set_default(name, value, group="oslo_messaging_rabbit")
    return transport


def get_notification_transport(conf: cfg.ConfigOpts) -> Any:
    url = "fake://" if parse_url(conf.transport_url).in_memory else conf.transport_url
    return oslo_messaging.get_notification_transport(conf, url=url)


def get_notifier(conf: cfg.ConfigOpts, publisher_id: str) -> Any:
    """A notifier configured by ``[oslo_messaging_notifications]`` (off unless a driver is set)."""
    return oslo_messaging.Notifier(get_notification_transport(conf), publisher_id=publisher_id, retry=3)


def server_target(host: str) -> Any:
    return oslo_messaging.Target(topic=TOPIC, server=host)


def get_server(transport: Any, host: str, endpoints: list[Any]) -> Any:
    return oslo_messaging.get_rpc_server(transport, server_target(host), endpoints)


def get_client(transport: Any) -> Any:
    return oslo_messaging.get_rpc_client(transport, oslo_messaging.Target(topic=TOPIC, version=API_VERSION))


def endpoint_target() -> Any:
    return oslo_messaging.Target(version=API_VERSION)


#: What an RPC call raises when the plugin did not answer in time or the
#: broker is down; callers retry.
RECOVERABLE = (oslo_messaging.MessagingException, kombu.exceptions.OperationalError, OSError)
