"""Options of the agent, listed for oslo-config-generator.

A driver's ``[driver:NAME]`` section is listed by the driver's own package,
through an ``oslo.config.opts`` entry point (``tether.driver.noop`` and the
others in setup.cfg, ``acme_tether`` in the example driver): the agent knows
drivers only through stevedore.
"""

from __future__ import annotations

from oslo_config import cfg

from tether.agent import service


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return service.list_opts()
