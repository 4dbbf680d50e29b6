"""
Who a peer is, for every rule that counts per peer (connection limits, UDP
rate limits) and for the logs.

- An IPv4 client reaching an IPv6 socket appears as C{::ffff:a.b.c.d}; it is
  the same host as C{a.b.c.d} on an IPv4 socket, so it is named that way.
- An IPv6 client owns at least a /64 (a host picks any address in it at
  will), so limits count IPv6 peers per prefix, /64 unless told otherwise,
  as mature rate limiters do; logs still show the whole address.
"""

from __future__ import annotations

import ipaddress

from twisted.internet.interfaces import IAddress
from zope.interface import implementer

LOCAL = "local"
# The peer key of a load balancer's own health checks (PROXY v2 LOCAL):
# served, and counted against no peer.
BALANCER = "balancer"
DEFAULT_IPV6_PREFIX = 64


@implementer(IAddress)
class BalancerAddress:
    """A connection a load balancer makes for itself, from C{address}."""

    host = BALANCER

    def __init__(self, address: IAddress | None) -> None:
        self.address = address
        self.port = getattr(address, "port", None)

    def __repr__(self) -> str:
        return f"BalancerAddress({self.address!r})"


def host_of(host: str) -> str:
    """C{host} with an IPv4-mapped IPv6 address turned back into IPv4."""
    if host.startswith("::ffff:") and "." in host:
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            return host
        if mapped is not None:
            return str(mapped)
    return host


def not_a_host(host: str) -> bool:
    """
    Whether C{host}, a datagram's source address, names no single host:
    IPv4's "this network" (0.0.0.0/8), multicast, reserved and broadcast
    (224.0.0.0 and up), IPv6's multicast (ff00::/8) and unspecified
    (C{::}), IPv4-mapped alike.  Only a forged datagram comes from one
    (RFC 1122 3.2.1.3 has a host discard it; Linux's martian filter does
    on every interface but loopback), and an answer to it is a broadcast
    or multicast one, or a send the kernel refuses: a UDP service drops
    it unanswered.  Cheap (no parsing), for the first datagram of each
    run from one source.
    """
    if ":" in host:
        if not (host.startswith("::ffff:") and "." in host):
            group = host[: host.index(":")]  # ff00::/8: four digits, "ff" first ("ff::1" is 00ff::1)
            return host == "::" or (len(group) == 4 and group[:2].lower() == "ff")
        host = host[7:]
    first, dot, _ = host.partition(".")
    return bool(dot) and first.isdigit() and (int(first) == 0 or int(first) >= 224)


def peer_host(addr: IAddress | None) -> str:
    """
    The host of a connection's peer, as logs show it; UNIX peers are all
    L{LOCAL}, a balancer's own checks L{BALANCER}.
    """
    host = getattr(addr, "host", None)
    return host_of(str(host)) if host is not None else LOCAL


class PeerKeys:
    """
    The key a peer is counted by: an IPv4 address as it is, an IPv6 address
    as its prefix (C{2001:db8:1:2::/64}).  Parsing an IPv6 address costs
    about 10 us, too much per datagram, so keys are remembered in a table
    that is emptied when it reaches C{size} (spoofed sources cannot grow it).
    """

    def __init__(self, ipv6_prefix: int = DEFAULT_IPV6_PREFIX, size: int = 65_536) -> None:
        if not 1 <= ipv6_prefix <= 128:
            raise ValueError(f"an IPv6 prefix length is 1 to 128, not {ipv6_prefix}")
        self.ipv6_prefix = ipv6_prefix
        self._size = size
        self._known: dict[str, str] = {}

    def __call__(self, host: str) -> str:
        if ":" not in host:
            return host
        key = self._known.get(host)
        if key is None:
            key = self._key(host)
            if len(self._known) >= self._size:
                self._known.clear()
            self._known[host] = key
        return key

    def _key(self, host: str) -> str:
        host = host_of(host)
        if ":" not in host:
            return host
        try:
            address = ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            return host
        network = ipaddress.IPv6Network((address, self.ipv6_prefix), strict=False)
        return str(network)
