"""Which remote ICE candidates a viewer may give a session.

The server sends STUN connectivity checks to every candidate a viewer signals, so without bounds a viewer
chooses where the server sends UDP (20 candidates at 127.0.0.1 ports drew 100 STUN requests). So, per session:
- at most `MAX_CANDIDATES` UDP candidates, counted over the offer and every trickle PATCH: the offer's beyond
  that are ignored (the browser's first ones are its best; ICE still finds the viewer through its own checks);
  a PATCH that would pass it is refused whole (400, egress.BadOffer);
- only addresses in the viewer networks. Default (nothing configured): any address except loopback,
  link-local and this server's own addresses. Configured CIDRs (`--viewer-networks`, e.g. an agency's
  networks) allow exactly those (listing 127.0.0.0/8 allows loopback). A server whose ICE host addresses are
  all loopback (tests, a local demo) can only be reached from its own machine, so it allows loopback by
  default (`default_for`). Unspecified, multicast and broadcast addresses are never allowed.
A candidate the server learns from the viewer's own checks to it (peer-reflexive) is not signalled, so not
filtered: the server answers a viewer wherever its checks come from, as ICE requires. TCP candidates draw
nothing (aioice pairs UDP only): they are refused and not counted.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger(__name__)

MAX_CANDIDATES = 10  # a browser offers one or two per network interface and IP version
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _address(text: str) -> Address | None:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # a scope id never matters here
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class ViewerNetworks:
    """Where viewers may be. `networks` empty: the default (see the module docstring)."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, cidrs: Iterable[str]) -> ViewerNetworks:
        """From CIDRs such as "10.0.0.0/8" (a bare address is a /32 or /128). Raises ValueError."""
        networks = tuple(ipaddress.ip_network(c.strip(), strict=False) for c in cidrs if c.strip())
        if not networks:
            raise ValueError("no viewer network given")
        return cls(networks)

    def refuses(self, text: str, own: frozenset[str]) -> str | None:
        """Why an address may not be a viewer's candidate, or None. `own`: this server's addresses."""
        address = _address(text)
        if address is None:
            return f"{text} is not an IP address"
        if address.is_unspecified or address.is_multicast or address == _BROADCAST:
            return f"{address} is not a unicast address"
        if self.networks:
            if any(address in network for network in self.networks):
                return None
            return f"{address} is outside the viewer networks"
        if address.is_loopback or address.is_link_local:
            return f"{address} is loopback or link-local"
        if str(address) in own:
            return f"{address} is this server's own address"
        return None

    def describe(self) -> str:
        if not self.networks:
            return "any but loopback, link-local and this server's addresses"
        return ", ".join(str(n) for n in self.networks)


DEFAULT = ViewerNetworks()
LOOPBACK = ViewerNetworks.parse(["127.0.0.0/8", "::1/128"])


def default_for(ice_hosts: list[str] | None) -> ViewerNetworks:
    """The networks when none are configured: loopback for a server that gathers on loopback only."""
    addresses = [_address(h) for h in ice_hosts or ()]
    if addresses and all(a is not None and a.is_loopback for a in addresses):
        return LOOPBACK
    return DEFAULT


def own_addresses(hosts: Iterable[str]) -> frozenset[str]:
    """Canonical text of addresses (the server's), as `refuses` compares them."""
    return frozenset(str(a) for a in map(_address, hosts) if a is not None)


class CandidateGuard:
    """One session's remote candidates: counted and filtered (an rtc_seam.CandidateCheck)."""

    def __init__(self, networks: ViewerNetworks, own: frozenset[str], limit: int = MAX_CANDIDATES) -> None:
        self.networks = networks
        self.own = own
        self.limit = limit
        self.seen = 0  # UDP candidates signalled
        self.refused = 0

    def __call__(self, address: str, transport: str) -> str | None:
        if transport != "udp":
            return "only UDP candidates are used"
        self.seen += 1
        if self.seen > self.limit:
            why: str | None = f"more than {self.limit} candidates in this session"
        else:
            why = self.networks.refuses(address, self.own)
        if why is not None:
            self.refused += 1
            log.debug("remote candidate %s refused: %s", address, why)
        return why

    def room(self, count: int) -> bool:
        """Whether `count` more UDP candidates fit in the cap (none always do: end-of-candidates)."""
        return count == 0 or self.seen + count <= self.limit
