"""Options of tether/common, listed for oslo-config-generator."""

from __future__ import annotations

from oslo_config import cfg

from tether.common import config, log


def list_common_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return [
        (None, config.DEFAULT_OPTS + log.LOG_OPTS),
        (config.MESSAGING_GROUP, config.MESSAGING_OPTS),
    ]
