"""The providers this plugin accepts, and what their drivers declare.

The plugin loads driver classes (never instances: devices are the agents'
business) to learn each provider's placement and supported resource types,
the class attributes ``tether.drivers.base.Driver`` declares. It reads them
off the class stevedore found and imports no driver code of its own: the
driver SDK is the agents' and the vendors'.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from stevedore import extension

from tether.common.exceptions import ConfigError, InvalidInput

NAMESPACE = "tether.drivers"


@dataclasses.dataclass(frozen=True)
class Provider:
    name: str
    placement: str
    resource_types: frozenset[str]


class Providers:
    """The configured providers, checked against the installed drivers."""

    def __init__(self, providers: Iterable[Provider]) -> None:
        self._providers = {p.name: p for p in providers}

    @classmethod
    def load(cls, names: Iterable[str], option: str = "[plugin] providers") -> Providers:
        names = list(names)
        manager: extension.ExtensionManager[Any] = extension.ExtensionManager(NAMESPACE, invoke_on_load=False)
        installed = {ext.name: ext.plugin for ext in manager}
        missing = [n for n in names if n not in installed]
        if missing:
            raise ConfigError(
                reason=f"{option} names {', '.join(missing)}, but no installed package "
                f"provides such a driver in {NAMESPACE} (installed: "
                f"{', '.join(sorted(installed)) or 'none'}); install the driver's package "
                "or remove it from the option."
            )
        providers = []
        for name in names:
            driver = installed[name]
            providers.append(Provider(name, driver.placement, frozenset(driver.resource_types)))
        return cls(providers)

    @property
    def names(self) -> list[str]:
        return sorted(self._providers)

    def placement(self, name: str) -> str:
        return self._providers[name].placement

    def is_host_placed(self, name: str) -> bool:
        provider = self._providers.get(name)
        return provider is not None and provider.placement == "host"

    def get(self, name: str, resource_type: str) -> Provider:
        """The provider a root resource names.

        :raises InvalidInput: listing the configured providers.
        """
        provider = self._providers.get(name)
        if provider is None:
            raise InvalidInput(
                f"Provider {name!r} has no configured driver; configured providers: "
                f"{', '.join(self.names) or 'none'}.",
                path="$.provider",
            )
        if resource_type not in provider.resource_types:
            raise InvalidInput(
                f"Provider {name!r} does not support {resource_type} resources "
                f"(it supports: {', '.join(sorted(provider.resource_types))})."
            )
        return provider
