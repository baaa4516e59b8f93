"""What a driver declares of itself for the plugin: where its device lives
(``placement``) and the resource types it serves.

Agents send each provider's declaration with their state reports (RPC API
1.9, the ``drivers`` key); the plugin keeps each agent's latest and routes,
binds and checks resource types by it, so that the plugin never loads a
driver (DESIGN.md, Drivers). This module is shared by both sides: it
imports nothing of either.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from tether.common.capabilities import Name

#: Resource types one driver may serve at most, so a report stays small.
MAX_RESOURCE_TYPES = 100

Placement = Literal["host", "shared"]


class Declaration(msgspec.Struct, frozen=True):
    """One driver's placement and resource types."""

    placement: Placement
    resource_types: Annotated[frozenset[Name], msgspec.Meta(min_length=1, max_length=MAX_RESOURCE_TYPES)]

    def to_wire(self) -> dict[str, Any]:
        """As agents send it and the plugin stores it, in a stable order."""
        return {"placement": self.placement, "resource_types": sorted(self.resource_types)}

    @classmethod
    def from_wire(cls, data: Any) -> Declaration:
        """A declaration as an agent sent it; keys of a newer agent are ignored.

        :raises ValueError: naming what is malformed.
        """
        try:
            return msgspec.convert(data, cls)
        except msgspec.ValidationError as exc:
            raise ValueError(
                f"a driver declaration is {{'placement': 'host' or 'shared', 'resource_types': "
                f"[1 to {MAX_RESOURCE_TYPES} names]}}: {exc}"
            ) from None
