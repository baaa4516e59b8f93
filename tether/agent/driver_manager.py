"""Loading the drivers an agent serves, through stevedore."""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from oslo_config import cfg
from stevedore import driver as stevedore_driver
from stevedore.exception import NoMatches

from tether.agent.reports import Reports
from tether.common.declarations import Declaration
from tether.common.exceptions import ConfigError
from tether.common.states import OperatingStatus
from tether.drivers.base import Callbacks, Driver, driver_group

LOG = logging.getLogger(__name__)

NAMESPACE = "tether.drivers"

_reports: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "driver_reports", default=None
)


class AgentCallbacks(Callbacks):
    """Carries what drivers report to the plugin.

    Operating status reported during a driver call goes with the result of
    the task whose call reported it: drivers are shared by all worker
    threads, and each worker collects into its own context, so reports never
    cross tasks. Reported from any other thread (a device event), it is sent
    on its own, as progress and counters are (:mod:`tether.agent.reports`).

    :param provider: the provider of the driver these callbacks serve; see
        :meth:`for_provider`.
    """

    def __init__(self, reports: Reports | None = None, provider: str = "") -> None:
        self.reports = reports or Reports()
        self.provider = provider

    def for_provider(self, provider: str) -> AgentCallbacks:
        """These callbacks for the driver of ``provider``, so the plugin can
        tell which driver reported on a resource."""
        return AgentCallbacks(self.reports, provider)

    def operating_status(self, resource_id: str, status: OperatingStatus) -> None:
        reports = _reports.get()
        if reports is not None:
            reports[resource_id] = OperatingStatus(status).value
        else:
            self.reports.status(self.provider, resource_id, status)

    def progress(self, message: str, task_id: str | None = None) -> None:
        self.reports.progress(message, task_id)

    def stats(self, resource_id: str, counters: Mapping[str, float]) -> None:
        self.reports.stats(self.provider, resource_id, counters)

    @staticmethod
    @contextlib.contextmanager
    def collect() -> Iterator[dict[str, str]]:
        reports: dict[str, str] = {}
        token = _reports.set(reports)
        try:
            yield reports
        finally:
            _reports.reset(token)


def load_driver_class(name: str) -> type[Driver]:
    return _load(name)[0]


def _load(name: str) -> tuple[type[Driver], str]:
    """The driver class of provider ``name``, and where it came from (its
    distribution and version), for the log: a vendor installing a second
    copy of a package wants to see which one runs."""
    try:
        manager: stevedore_driver.DriverManager[Any] = stevedore_driver.DriverManager(
            NAMESPACE, name, invoke_on_load=False
        )
    except NoMatches as exc:
        raise ConfigError(
            reason=f"[agent] providers names {name!r}, but no installed package provides a "
            f"driver called {name!r} in the entry-point namespace {NAMESPACE}; install the "
            "driver's package or remove it from the option."
        ) from exc
    cls = manager.driver
    if not (isinstance(cls, type) and issubclass(cls, Driver)):
        raise ConfigError(reason=f"driver {name!r} ({cls!r}) is not a tether.drivers.base.Driver")
    # stevedore's cached entry points carry no distribution; ask for it
    # (a test instance of stevedore's has no entry point at all).
    entry_point = manager.extensions[0].entry_point
    dists = [
        ep.dist
        for ep in importlib.metadata.entry_points(group=NAMESPACE, name=name)
        if entry_point is not None and ep.value == entry_point.value
    ]
    origin = f" from {dists[0].name} {dists[0].version}" if dists and dists[0] is not None else ""
    return cls, f"{cls.__module__}.{cls.__qualname__}{origin}"


def register_driver_opts(conf: cfg.ConfigOpts, names: list[str]) -> None:
    for name in names:
        conf.register_opts(load_driver_class(name).list_opts(), group=driver_group(name))


def load_drivers(conf: cfg.ConfigOpts, names: list[str], callbacks: Callbacks) -> dict[str, Driver]:
    """Instantiate the drivers of the providers an agent serves.

    :raises ConfigError: for a missing or incomplete driver, naming it.
    """
    drivers = {}
    for name in names:
        cls, origin = _load(name)
        missing = sorted(getattr(cls, "__abstractmethods__", ()))
        if missing:
            raise ConfigError(
                reason=f"driver {name!r} ({cls.__module__}.{cls.__qualname__}) does not "
                f"implement {', '.join(missing)}; a driver must implement every abstract "
                "method of tether.drivers.base.Driver."
            )
        try:
            drivers[name] = cls(
                conf, callbacks.for_provider(name) if isinstance(callbacks, AgentCallbacks) else callbacks
            )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(reason=f"driver {name!r} failed to start: {exc}") from exc
        try:
            drivers[name].current_capabilities()
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                reason=f"driver {name!r} ({cls.__module__}.{cls.__qualname__}) declares malformed "
                f"capabilities: {exc}"
            ) from exc
        try:
            declaration(drivers[name])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                reason=f"driver {name!r} ({cls.__module__}.{cls.__qualname__}) declares a malformed "
                f"placement or resource_types: {exc}"
            ) from exc
        LOG.info("provider %s: driver %s", name, origin)
    return drivers


def declaration(driver: Driver) -> dict[str, Any]:
    """What the plugin learns of ``driver`` from this agent's state reports.

    :raises ValueError: naming what is malformed.
    """
    wire = {"placement": driver.placement, "resource_types": list(driver.resource_types)}
    return Declaration.from_wire(wire).to_wire()
