"""
Whether a proxy would forward to itself: its upstream is its own listen
address.  Every datagram (or connection) would come back to it, hop after
hop, so such a proxy is refused when it is made; for TCP proxies as for UDP
ones (the registry asks for both).
"""

from __future__ import annotations

import ipaddress
import re
import socket

from echoapp._proxy.addresses import check, check_udp, plain_tcp
from echoapp._proxy.errors import Invalid
from echoapp._proxy.schema import ProxySpec

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def loops_to_itself(interface: str, port: int, upstream: tuple[str, int]) -> bool:
    """
    Whether a proxy listening on C{interface} (C{""}, C{0.0.0.0} or C{::}
    for every one) and C{port} would forward to itself at C{upstream}: the
    same port, and the upstream's host the interface or, for every
    interface, one of this host's addresses (loopback, unspecified, or one
    a socket can bind).  For TCP proxies as for UDP ones.
    """
    host, upstream_port = upstream
    if port == 0 or upstream_port != port:
        return False
    try:
        address = ipaddress.ip_address(host.split("%")[0])
        listening = ipaddress.ip_address(interface.split("%")[0]) if interface else None
    except ValueError:
        return False
    if listening is not None and not listening.is_unspecified:
        return _same(address, listening)
    if listening is not None and listening.version != address.version and listening.version == 4:
        return False
    return address.is_loopback or address.is_unspecified or _local(address)


def _same(a: Address, b: Address) -> bool:
    """The same address, an IPv4-mapped IPv6 one (C{::ffff:127.0.0.1}) as its IPv4 address."""
    mapped = [x.ipv4_mapped if isinstance(x, ipaddress.IPv6Address) and x.ipv4_mapped else x for x in (a, b)]
    return mapped[0] == mapped[1]


def _local(address: Address) -> bool:
    """Whether C{address} is this host's: a socket can bind it (no packet sent, no name resolved)."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(address), 0))
        except OSError:
            return False
    return True


def check_tcp_loop(spec: ProxySpec) -> None:
    """
    What the TCP proxy C{spec} would refuse for a loop: a plain TCP listener
    whose upstream is its own address (L{loops_to_itself}).

    @raise Invalid: with a one-line reason.
    """
    listen, _ = check(spec)
    kind, _, rest = listen.endpoint.partition(":")
    upstream = plain_tcp(spec.upstream)
    if kind not in ("tcp", "tcp6") or listen.proxy or upstream is None:
        return
    port, *options = re.split(r"(?<!\\):", rest)  # an IPv6 interface's colons are escaped
    named = dict(option.partition("=")[::2] for option in options if "=" in option)
    interface = named.get("interface", "").replace("\\:", ":")
    if port.isdigit() and loops_to_itself(interface, int(port), upstream):
        raise Invalid(f"TCP proxy {spec.name!r}: its upstream {spec.upstream} is its own listen address")


def check_udp_loop(spec: ProxySpec) -> None:
    """
    What the UDP proxy C{spec} would refuse for a loop (L{loops_to_itself}),
    for the checks that make nothing (the command line's, the API's).

    @raise Invalid: with a one-line reason (for a bad address too).
    """
    listen, upstream = check_udp(spec)
    if loops_to_itself(listen.interface, listen.port, upstream):
        raise Invalid(f"UDP proxy {spec.name!r}: its upstream {spec.upstream} is its own listen address")
