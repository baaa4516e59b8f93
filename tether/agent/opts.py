"""Options of the agent, listed for oslo-config-generator."""

from __future__ import annotations

from oslo_config import cfg

from tether.agent import service
from tether.drivers.base import driver_group
from tether.drivers.fake import FakeDriver
from tether.drivers.haproxy import HaproxyDriver
from tether.drivers.noop import NoopDriver


def list_opts() -> list[tuple[str | None, list[cfg.Opt]]]:
    # The shipped drivers' sections; a vendor's driver lists its own.
    drivers = [(driver_group(d.name), d.list_opts()) for d in (NoopDriver, FakeDriver, HaproxyDriver)]
    return service.list_opts() + drivers
