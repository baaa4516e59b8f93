"""``[loadbalancer] vip_range``: the addresses the plugin gives out as VIPs."""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterator, Sequence

from tether.common.exceptions import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class VipRange:
    """Addresses in the order they are given out, lowest first: of each
    network its hosts (an IPv4 network's own and broadcast addresses left
    out), of each ``first-last`` pair everything in between."""

    def __init__(self, spans: Sequence[tuple[Address, Address]], text: str) -> None:
        self.spans = spans
        self.text = text

    @classmethod
    def parse(cls, items: Sequence[str]) -> VipRange:
        """:raises ConfigError: naming the option and the item it cannot read."""
        spans: list[tuple[Address, Address]] = []
        for item in items:
            try:
                spans.append(_span(item.strip()))
            except ValueError as exc:
                raise ConfigError(
                    reason=f"[loadbalancer] vip_range: {item!r} is neither a network (10.0.0.0/24) "
                    f"nor a range of addresses (10.0.0.10-10.0.0.50): {exc}"
                ) from exc
        return cls(spans, ", ".join(i.strip() for i in items))

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __contains__(self, address: Address) -> bool:
        return any(
            first.version == address.version and int(first) <= int(address) <= int(last)
            for first, last in self.spans
        )

    def __iter__(self) -> Iterator[Address]:
        return itertools.chain.from_iterable(_addresses(first, last) for first, last in self.spans)

    def free(self, taken: set[Address]) -> Iterator[Address]:
        """The addresses not in ``taken``, in order; by their numbers, as a
        range grows past the thousands."""
        numbers = {(a.version, int(a)) for a in taken}
        for first, last in self.spans:
            for value in range(int(first), int(last) + 1):
                if (first.version, value) not in numbers:
                    yield ipaddress.IPv4Address(value) if first.version == 4 else ipaddress.IPv6Address(value)

    def size(self) -> int:
        return sum(int(last) - int(first) + 1 for first, last in self.spans)


def _span(item: str) -> tuple[Address, Address]:
    if "-" in item:
        first_text, last_text = item.split("-", 1)
        first, last = ipaddress.ip_address(first_text.strip()), ipaddress.ip_address(last_text.strip())
        if type(first) is not type(last) or last < first:  # type: ignore[operator]
            raise ValueError("the first address must not be above the last, and both of one family")
        return first, last
    network = ipaddress.ip_network(item, strict=True)
    if isinstance(network, ipaddress.IPv4Network) and network.prefixlen < 31:
        return network.network_address + 1, network.broadcast_address - 1
    return network.network_address, network.broadcast_address


def _addresses(first: Address, last: Address) -> Iterator[Address]:
    value = int(first)
    while value <= int(last):
        yield ipaddress.ip_address(value) if first.version == 4 else ipaddress.IPv6Address(value)
        value += 1
