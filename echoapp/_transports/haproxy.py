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
balancer's own health check) is served without counting against any peer;
a header that names no client (v1 C{UNKNOWN}, its short form too, or v2
with an C{AF_UNSPEC} family) counts against the connection's own address,
as the spec says; a v1 source that is not an IP address of its family with
a port from 0 to 65535 is malformed.  Under C{haproxy:ssl:} the header is
read before the TLS handshake, where balancers send it.
A connection that sends no complete header within L{HEADER_TIMEOUT}, or a
malformed one, is closed.  All of these are counted and logged at most once
per 10 s, never with a traceback.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from twisted.internet.address import IPv6Address
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

from echoapp._limits.connections import Connections
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._limits.ratelimit import ThrottledLog
from echoapp._peers import BALANCER, BalancerAddress, host_of, peer_host
from echoapp._transports.tls import ListensSSLOwnWay
from echoapp._twisted import global_reactor, mark_tls, parse_proxy_header

PREFIX = "haproxy:"
# The defaults of TCPLimits.proxy_header_timeout and proxy_silent_after,
# for a service without limits of its own.
HEADER_TIMEOUT = 5.0  # seconds for the whole header, from the connection
SILENT_AFTER = 1.0  # seconds without a header after which a connection counts against its address
MAX_HEADER = 16 + 2048  # far more than any balancer sends (v2 allows 64 KiB of extensions)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# The v1 form HAProxy sends for a client that is not TCP over IP; Twisted's
# parser wants the four address fields after UNKNOWN, which the spec makes
# optional.
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# A v2 LOCAL header: the balancer speaking for itself (its health checks).
LOCAL = BalancerAddress(None)


def valid_source(source: IAddress) -> IAddress:
    """
    C{source} if it is an IP literal of its family with a port from 0 to
    65535.  Twisted's v1 parser takes any word and any integer: C{PROXY
    TCP4 balancer ...} took the key L{BALANCER} and counted against no
    peer, ports 99999 and -1 passed, and escape bytes reached the log.

    @raise ValueError: it is not.
    """
    host, port = getattr(source, "host", None), getattr(source, "port", None)
    family = ipaddress.IPv6Address if isinstance(source, IPv6Address) else ipaddress.IPv4Address
    family(str(host))  # raises ValueError
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port {port!r} is out of range")
    return source


def read_header(data: bytes) -> tuple[bool, IAddress | None, bytes]:
    """
    The PROXY header at the start of C{data}, as the spec reads it.

    @return: C{(complete, header, rest)}: C{header} is the client's
        address, L{LOCAL} for a v2 LOCAL header, or L{None} when the header
        names no client (v1 C{UNKNOWN}, short or long; v2 PROXY with an
        C{AF_UNSPEC} family), for which the spec says to use the
        connection's own addresses.
    @raise ValueError: the header is malformed or names an invalid address.
    """
    if data.startswith(V1_UNKNOWN):
        return True, None, data[len(V1_UNKNOWN) :]
    complete, source, rest = parse_proxy_header(data)
    if not complete:
        return False, None, b""
    if source is not None:
        return True, valid_source(source), rest
    if data.startswith(V2_SIGNATURE) and data[12] & 0x0F == 0:
        return True, LOCAL, rest
    return True, None, rest


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
class HeaderReader(HoldsDescriptor, Protocol):
    """
    One connection until its header is read, then the service's protocol's.

    Until then it is one of the service's connections (L{Connections}):
    against the descriptor ceiling and C{--max-connections} from the start,
    and against C{--max-per-peer} of its real address once it has been
    silent for L{SILENT_AFTER}; before that it counts as L{BALANCER},
    against no peer.  Not at once, whether its sender is trusted
    (C{--proxy-from}) or believed as every sender is without it: the
    sender carries every client, and counting a balancer's burst of
    connections, each header on its way, by its address refused clients
    that were each under their limit (the shipped HAProxy front with no
    C{--proxy-from} welcomed 543-589 of 600).  A sender whose silent
    connections are over its limit opens no more
    (L{HAProxyFactory.buildProtocol} asks by its address).  So connections
    that never send a header are held to the limits every other connection
    is (4,196 of them from one address once used up every descriptor of
    the process).  Once the header is read it leaves, just before the
    service is asked to admit the client by the header's address.  Behind
    a service with no L{Connections} it counts only its descriptor.
    """

    transport: Any
    inner: IProtocol | None = None
    _deadline: IDelayedCall | None = None

    def __init__(self, factory: HAProxyFactory, balancer: IAddress | None) -> None:
        self._factory = factory
        self._balancer = balancer
        self._buffer = b""
        self.peer = BALANCER  # what L{Connections} counts it by until it has been silent

    def connectionMade(self) -> None:
        connections = self._factory.connections
        if connections is not None:
            connections.add(self)
        else:
            self.hold_descriptor()
        timeout, silent = self._factory.timeouts()
        self._deadline = self._factory.clock.callLater(min(silent, timeout), self._silent)

    def _silent(self) -> None:
        """No header yet: from now on the connection counts against its real address's limit."""
        connections = self._factory.connections
        if connections is not None and self.peer == BALANCER:
            connections.remove(self)
            self.peer = peer_host(self._balancer)
            connections.add(self)
        timeout, silent = self._factory.timeouts()
        left = max(0.0, timeout - silent)
        self._deadline = self._factory.clock.callLater(left, self._refuse, "slow")

    def shutdown(self) -> None:
        """
        The service drains: a connection with no header yet has no client
        to say goodbye to (nor a refusal to count: the listener is gone).
        """
        self._stop_waiting()
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        inner = self.inner
        if inner is not None:
            inner.dataReceived(data)
            return
        buffer = self._buffer = self._buffer + data
        try:
            complete, header, rest = read_header(buffer)
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
        balancer: IAddress | None = self._balancer
        if header is LOCAL:
            peer: IAddress = BalancerAddress(balancer)
        elif header is None:  # no client address in it: the connection's own peer is the one
            peer, balancer = balancer if balancer is not None else self.transport.getPeer(), None
        else:
            peer = header
        inner = self.inner = self._factory.wrapped.buildProtocol(peer)
        if inner is None:
            self.transport.loseConnection()
            return
        inner.makeConnection(ProxiedTransport(self.transport, peer, balancer))  # type: ignore[arg-type]
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
        connections = self._factory.connections
        if connections is not None:
            connections.remove(self)
        self.release_descriptor()


class HAProxyFactory(Factory):
    """
    Wraps a service's factory: trusted senders get a L{HeaderReader}, the
    rest are closed at once (the port closes a connection it gets no
    protocol for).
    """

    noisy = False
    tls = False  # TLS starts after the header (L{wrap_tls})

    def __init__(
        self, wrapped: IProtocolFactory, trusted: tuple[Network, ...] = (), clock: IReactorTime | None = None
    ) -> None:
        self.wrapped = wrapped
        self.trusted = trusted
        self.clock: IReactorTime = clock if clock is not None else global_reactor()
        self._log = ThrottledLog("Refused {count} PROXY protocol connections ({reasons})")
        # Counted where the service counts its refusals, when it has such counts.
        self._stats = getattr(wrapped, "stats", None)
        # The service's connections and admission, when it has them (a
        # guarded factory, or one wrapped by the faults, which hands them on).
        self.connections: Connections | None = getattr(wrapped, "connections", None)
        self._refusal_for = getattr(wrapped, "refusal_for", None)

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        if self.trusted and not self._trusts(addr):
            self.refused("untrusted")
            return None
        if self._refusal_for is not None:
            refusal: Any = self._refusal_for(peer_host(addr))  # checked by its real address
            if refusal is not None:
                refusal.silent = self.tls  # a line in clear would reach a client speaking TLS
                return refusal
        return HeaderReader(self, addr)

    def timeouts(self) -> tuple[float, float]:
        """The header timeout and the silence after which a trusted sender counts per peer (the limits')."""
        limits = getattr(self.connections, "limits", None)
        if limits is None:
            return HEADER_TIMEOUT, SILENT_AFTER
        return limits.proxy_header_timeout, limits.proxy_silent_after

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

    def wrap_tls(self, context: Any) -> None:
        """
        TLS inside: the header is read from the bare connection and TLS
        starts after it, as balancers send it (HAProxy's C{ssl
        send-proxy-v2}, nginx's C{proxy_protocol on}: the header comes
        before the ClientHello).
        """
        from twisted.protocols.tls import TLSMemoryBIOFactory

        self.wrapped = TLSMemoryBIOFactory(context, False, self.wrapped)
        self.tls = True

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self._log.flush()
        self.wrapped.doStop()


class HeaderBeforeTLS(ListensSSLOwnWay):
    """
    The reactor a C{haproxy:ssl:} listener's TLS endpoint is given: its
    C{listenSSL} listens in plain TCP and puts TLS inside the
    L{HAProxyFactory} (L{HAProxyFactory.wrap_tls}), so the header is read
    before the handshake.  Twisted's C{ssl:} endpoint does the parsing
    (certificates, options) as for any C{ssl:} listener; everything else is
    the real reactor's.
    """

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, backlog: int = 50, interface: str = ""
    ) -> IListeningPort:
        if not isinstance(factory, HAProxyFactory):
            return self._reactor.listenSSL(port, factory, contextFactory, backlog, interface)
        factory.wrap_tls(contextFactory)
        return mark_tls(self._reactor.listenTCP(port, factory, backlog, interface))


@implementer(IStreamServerEndpoint)
class HAProxyEndpoint:
    """C{haproxy:ENDPOINT}: the endpoint, with a L{HAProxyFactory} around what listens on it."""

    def __init__(self, wrapped: IStreamServerEndpoint, trusted: tuple[Network, ...] = ()) -> None:
        self.wrapped = wrapped
        self.trusted = trusted

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.wrapped.listen(HAProxyFactory(factory, self.trusted))
