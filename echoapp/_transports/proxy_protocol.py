"""
The PROXY protocol (v1 and v2) in front of the TCP services: a listener
described as C{haproxy:ENDPOINT} (Twisted's own convention, e.g.
C{haproxy:tcp:9001:interface=127.0.0.1}) expects each connection to start
with the header a load balancer sends (HAProxy's C{send-proxy-v2}, nginx's
C{proxy_protocol on}), and the client address in it is the peer everywhere:
per-peer limits, logs, metrics.

Twisted's C{haproxy:} endpoint builds the service's protocol as soon as the
connection is accepted, with the balancer's address, and only reads the
header afterwards, so every limit counted the balancer.  Here the header is
read first (with Twisted's parsers, through L{echoapp._twisted}) and only
then is the service asked to admit the client, by its own address.

A header lets its sender claim any source address, so it is believed only
from the balancer: with trusted networks given (C{--proxy-from}), a
connection from anywhere else is refused.  A v2 LOCAL header (the
balancer's own health check) is served without counting against any peer.
A connection that sends no complete header within L{HEADER_TIMEOUT}, or a
malformed one, is closed.  All of these are counted and logged at most once
per 10 s, never with a traceback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._limits.ratelimit import ThrottledLog
from echoapp._peers import BalancerAddress, host_of
from echoapp._twisted import global_reactor, parse_proxy_header

PREFIX = "haproxy:"
HEADER_TIMEOUT = 5.0  # seconds for the whole header, from the connection
MAX_HEADER = 16 + 2048  # far more than any balancer sends (v2 allows 64 KiB of extensions)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(texts: Sequence[str]) -> tuple[Network, ...]:
    """
    C{--proxy-from} values: an address or a network each.

    @raise ValueError: with a one-line reason naming the value.
    """
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{text!r} is not an address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


class ProxiedTransport:
    """
    The connection as the service sees it behind a balancer: C{getPeer} is
    the client named in the header (or the balancer, for its own checks);
    everything else is the real transport's.
    """

    def __init__(self, transport: Any, peer: IAddress, balancer: IAddress | None) -> None:
        self._transport = transport
        self._peer = peer
        self.balancer = balancer
        directlyProvides(self, *providedBy(transport))

    def getPeer(self) -> IAddress:
        return self._peer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@implementer(IHalfCloseableProtocol)
class HeaderReader(Protocol):
    """One connection until its header is read, then the service's protocol's."""

    transport: Any
    inner: IProtocol | None = None
    _deadline: IDelayedCall | None = None
    _holding = False  # counted in the descriptors while it reads the header

    def __init__(self, factory: ProxyFactory, balancer: IAddress | None) -> None:
        self._factory = factory
        self._balancer = balancer
        self._buffer = b""

    def connectionMade(self) -> None:
        DESCRIPTORS.open += 1  # while it reads the header; the service's protocol counts itself after
        self._holding = True
        self._deadline = self._factory.clock.callLater(HEADER_TIMEOUT, self._refuse, "slow")

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        buffer = self._buffer = self._buffer + data
        try:
            complete, source, rest = parse_proxy_header(buffer)
        except ValueError:
            self._refuse("malformed")
            return
        if not complete:
            if len(buffer) > MAX_HEADER:
                self._refuse("malformed")
            return
        self._stop_waiting()
        self._release()
        self._buffer = b""
        peer = source if source is not None else BalancerAddress(self._balancer)
        inner = self.inner = self._factory.wrapped.buildProtocol(peer)
        if inner is None:
            self.transport.loseConnection()
            return
        inner.makeConnection(ProxiedTransport(self.transport, peer, self._balancer))  # type: ignore[arg-type]
        if rest:
            inner.dataReceived(rest)

    def _refuse(self, reason: str) -> None:
        self._stop_waiting()
        self._factory.refused(reason)
        self.transport.abortConnection()

    def _stop_waiting(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def readConnectionLost(self) -> None:
        inner = self.inner
        if inner is not None and IHalfCloseableProtocol.providedBy(inner):
            inner.readConnectionLost()
        else:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        inner = self.inner
        if inner is not None and IHalfCloseableProtocol.providedBy(inner):
            inner.writeConnectionLost()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)  # type: ignore[arg-type]
            return
        self._stop_waiting()
        self._release()

    def _release(self) -> None:
        if self._holding:
            self._holding = False
            DESCRIPTORS.open -= 1


class ProxyFactory(Factory):
    """
    Wraps a service's factory: trusted senders get a L{HeaderReader}, the
    rest are closed at once (the port closes a connection it gets no
    protocol for).
    """

    noisy = False

    def __init__(
        self, wrapped: IProtocolFactory, trusted: tuple[Network, ...] = (), clock: IReactorTime | None = None
    ) -> None:
        self.wrapped = wrapped
        self.trusted = trusted
        self._clock = clock
        self._log = ThrottledLog("Refused {count} PROXY protocol connections ({reasons})")
        # Counted where the service counts its refusals, when it has such counts.
        self._stats = getattr(wrapped, "stats", None)

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            self._clock = global_reactor()
        return self._clock

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if self.trusted and not self._trusts(addr):
            self.refused("untrusted")
            return None
        return HeaderReader(self, addr)

    def _trusts(self, addr: IAddress | None) -> bool:
        host = getattr(addr, "host", None)
        if host is None:
            return True  # a UNIX socket: whoever can reach it is local
        try:
            address = ipaddress.ip_address(host_of(str(host)).partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self.trusted)

    def refused(self, reason: str) -> None:
        """C{reason}: C{untrusted}, C{malformed} or C{slow}."""
        if self._stats is not None:
            self._stats.refused["proxy"] += 1
        self._log.note(self.clock, reason)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self._log.flush()
        self.wrapped.doStop()


@implementer(IStreamServerEndpoint)
class ProxyEndpoint:
    """C{haproxy:ENDPOINT}: the endpoint, with a L{ProxyFactory} around what listens on it."""

    def __init__(self, wrapped: IStreamServerEndpoint, trusted: tuple[Network, ...] = ()) -> None:
        self.wrapped = wrapped
        self.trusted = trusted

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.wrapped.listen(ProxyFactory(factory, self.trusted))
