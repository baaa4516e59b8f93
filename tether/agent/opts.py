"""Options of the agent, listed for oslo-config-generator."""

from __future__ import annotations

from oslo_config import cfg

from tether.agent import service
from tether.drivers import fake
from tether.drivers.base import driver_group


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    return service.list_opts() + [(driver_group("fake"), fake.OPTS)]
