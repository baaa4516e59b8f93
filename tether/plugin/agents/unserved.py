"""A provider the plugin accepts that the agent beside it does not serve.

Where the plugin and an agent share a host (the systemd units of etc/ put
``plugin.ini`` and ``agent.ini`` in one directory), a provider listed in
``[plugin] providers`` but in no agent's ``[agent] providers`` is a typo or a
forgotten line: its changes are accepted and wait ``pending_timeout`` before
they fail with ``NoLiveAgent``. The plugin says so when it starts. Agents on
other hosts are out of its sight; the reaper says at run time when a
provider's tasks wait with no live agent.
"""

from __future__ import annotations

import configparser
import logging
import pathlib
from collections.abc import Iterable

from oslo_config import cfg

LOG = logging.getLogger(__name__)


def agent_configs(conf: cfg.ConfigOpts) -> dict[pathlib.Path, list[str]]:
    """The ini files beside the plugin's own that configure an agent, and
    the providers each serves."""
    own = {pathlib.Path(f).resolve() for f in conf.config_file or ()}
    folders = {path.parent for path in own}
    found: dict[pathlib.Path, list[str]] = {}
    for folder in sorted(folders):
        for path in sorted(folder.glob("*.ini")) + sorted(folder.glob("*.conf")):
            if path.resolve() in own:
                continue
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(path)
            except (configparser.Error, OSError, UnicodeDecodeError):
                continue
            if parser.has_option("agent", "providers"):
                found[path] = [p.strip() for p in parser.get("agent", "providers").split(",") if p.strip()]
    return found


def warn_unserved(conf: cfg.ConfigOpts, providers: Iterable[str]) -> list[str]:
    """Log a warning for each provider no agent configuration beside the
    plugin's serves; the providers warned about."""
    configs = agent_configs(conf)
    if not configs:
        return []
    served = {p for names in configs.values() for p in names}
    unserved = [p for p in providers if p not in served]
    for provider in unserved:
        LOG.warning(
            "provider %s is in [plugin] providers, but no agent configured beside this plugin serves it "
            "(%s); its changes will wait [plugin] pending_timeout and fail with NoLiveAgent unless an "
            "agent elsewhere serves it: add it to an agent's [agent] providers, or remove it from "
            "[plugin] providers",
            provider,
            "; ".join(
                f"{path}: [agent] providers = {', '.join(names) or 'nothing'}"
                for path, names in configs.items()
            ),
        )
    return unserved
