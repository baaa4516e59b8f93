"""Options of the plugin, listed for oslo-config-generator."""

from __future__ import annotations

from oslo_config import cfg

from tether.common import rpc
from tether.plugin import service
from tether.plugin.agents import registry
from tether.plugin.api import app, auth, idempotency
from tether.plugin.db import session
from tether.plugin.outbound import callbacks
from tether.plugin.tasks import (
    accept_checks,
    changes,
    claim_server,
    dispatch,
    lifecycle,
    reaper,
    results,
    throttle,
)


def register_opts(conf: cfg.ConfigOpts) -> None:
    for group, opts in list_opts():
        conf.register_opts(opts, group=group)
    rpc.register_opts(conf)


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [
        (
            service.GROUP,
            service.OPTS
            + dispatch.OPTS
            + results.OPTS
            + claim_server.OPTS
            + lifecycle.OPTS
            + registry.OPTS
            + reaper.OPTS,
        ),
        (app.GROUP, app.OPTS + auth.OPTS + changes.OPTS + idempotency.OPTS + throttle.OPTS),
        (session.GROUP, session.OPTS),
        (callbacks.GROUP, callbacks.OPTS),
        # The options of the resource types' checks (e.g. [loadbalancer] vip_range).
        *accept_checks.list_opts(),
    ]
