"""
Every byte both ways between a client and its upstream, as
C{twisted.protocols.portforward} does, with what it lacks:

  - backpressure both ways: each transport is the other's streaming
    producer, so a peer that does not read pauses reading from the one that
    sends, and the proxy holds about one write buffer per direction, not the
    flood;
  - half-close passed through: both sides are L{IHalfCloseableProtocol}s, so
    a FIN from either is a FIN to the other, and the connection ends once
    both directions have;
  - a refused or reset upstream is a reset to the client (and a reset client
    a reset to the upstream), not a polite close that hides the failure;
  - echoapp's limits: the client side is a L{GuardedProtocol}, so it counts
    against C{max-connections} and the per-peer limit, times out when idle
    (traffic either way is activity), and is drained at shutdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectingCancelledError, ConnectionDone, NoProtocol
from twisted.internet.interfaces import (
    IConnector,
    IHalfCloseableProtocol,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.posixbase import PosixReactorBase
from twisted.internet.protocol import ClientFactory, Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp._faults import reset
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._limits.guard import ClosesWithGrace, GuardedFactory, GuardedProtocol, ReadPauser, half_closer
from echoapp._proxy.addresses import plain_tcp, upstream_description
from echoapp._proxy.hops import ARRIVED, UPSTREAMS, Ends, attempt, attempting, ends
from echoapp._transports.eager import eager_problem, switched_off
from echoapp._transports.native_connect import NativeTCPClientEndpoint, TCPEndpoint
from echoapp._transports.polled import polled
from echoapp._twisted import asyncio_loop, connect_eager_tcp

# Wraps the per-connection upstream factory (upstream faults), or leaves it be.
UpstreamWrapper = Callable[[Factory], Factory]


def _half_close(transport: Any) -> bool:
    """A FIN, if the transport can send one alone (L{half_closer}, the one rule: TLS cannot)."""
    close = half_closer(transport)
    if close is not None:
        close()
    return close is not None


def _send_no_more(upstream: Any) -> None:
    """
    The client is done: a FIN to the upstream, or over TLS its close
    (close_notify), which TLS holds back while a producer is registered.
    """
    if not _half_close(upstream):
        upstream.unregisterProducer()
        upstream.loseConnection()


def _clean(reason: Failure | None) -> bool:
    return reason is None or reason.check(ConnectionDone) is not None


@implementer(IHalfCloseableProtocol)
class ServerSide(HoldsDescriptor, ClosesWithGrace, Protocol):
    """
    The proxy's connection to the upstream: what it sends goes to the
    client.  Its socket counts against the descriptor ceiling too: each
    proxied client holds two.
    """

    transport: Any
    _ends: Ends | None = None  # while connected (L{UPSTREAMS})

    def __init__(self, client: ClientSide) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.hold_descriptor()
        self._ends = ends(self.transport.getHost(), self.transport.getPeer())
        if self._ends is not None:
            UPSTREAMS[self._ends] = self.client
            arrived = ARRIVED.get(self._ends)
            if arrived is not None:  # accepted before we heard we were connected: told now
                arrived.came_from(self.client)
        self.client.upstream_connected(self)

    def dataReceived(self, data: bytes) -> None:
        client = self.client
        client._last_seen = client.factory.now()
        client.stats.bytes_out += len(data)
        client.transport.write(data)

    def readConnectionLost(self) -> None:
        self.client.upstream_finished()

    def writeConnectionLost(self) -> None:
        """The upstream stopped reading; the client's bytes stop with the close that follows."""

    def close_cleanly(self, clock: IReactorTime, grace: float) -> None:
        """
        A FIN once what is buffered has gone, and a reset if the upstream
        has not taken it within C{grace} seconds, as the client's side
        closes: an upstream that never reads held its connection for ever
        (and an abort alone leaves the kernel sending what it holds).
        """
        if self._abort is None:  # armed first: loseConnection may lose the connection at once
            self._abort = clock.callLater(grace, reset, self.transport)  # an RST: unsent bytes go too
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.cancel_abort()
        self.release_descriptor()
        if self._ends is not None and UPSTREAMS.get(self._ends) is self.client:
            del UPSTREAMS[self._ends]
        self.client.upstream_lost(_clean(reason))


class _UpstreamSlot(HoldsDescriptor):
    """A client's upstream descriptor, from its admission until its upstream side holds it (or fails)."""


class _UpstreamFactory(Factory):
    noisy = False

    def __init__(self, client: ClientSide) -> None:
        self.client = client

    def buildProtocol(self, addr: Any) -> Protocol:
        protocol = ServerSide(self.client)
        protocol.factory = self
        return protocol


@implementer(IHalfCloseableProtocol)
class ClientSide(GuardedProtocol):
    """
    The client's connection.  Reading from the client waits until the
    upstream is connected; what arrived before is held (one read's worth,
    as reading is paused) and sent first.
    """

    factory: ProxyFactory
    upstream: ServerSide | None = None
    _connecting: Deferred[Any] | None = None
    _client_done = False  # the client sent its FIN
    _upstream_done = False  # the upstream sent its FIN
    _gone = False

    passed: frozenset[int] = frozenset()  # the proxies this connection's bytes have passed
    _upstream_fd: HoldsDescriptor = HoldsDescriptor()  # its upstream's descriptor (made at admission)
    _arrived: Ends | None = None  # while connected (L{ARRIVED})

    def connectionMade(self) -> None:
        super().connectionMade()
        # The upstream's descriptor counts from admission, not from when it
        # connects: an accept batch admitted its clients before any upstream
        # was counted, and past the ceiling accept() met EMFILE.
        self._upstream_fd = _UpstreamSlot()
        self._upstream_fd.hold_descriptor()
        self._early: list[bytes] = []
        self.passed = frozenset({id(self.factory)})
        self._arrived = arrived = ends(self.transport.getPeer(), self.transport.getHost())
        if arrived is not None:
            ARRIVED[arrived] = self
            sender = UPSTREAMS.get(arrived)
            if sender is not None and not self.came_from(sender):
                return
        self.transport.pauseProducing()
        if arrived is not None and sender is None and attempting(self.clock):
            # One of this process's attempts may be this connection, its maker
            # not yet told it is connected (it is, in this reactor pass): a
            # turn later, it is known.  Connecting at once, a loop's next hop
            # went on ahead of its cut, hop after hop.
            self._wait = self.clock.callLater(0, self.connect_upstream)
        else:
            self.connect_upstream()

    _wait: Any = None

    def connect_upstream(self) -> None:
        """Connect to the upstream, unless this connection has come round in a loop."""
        self._wait = None
        if self._gone:
            return
        sender = UPSTREAMS.get(self._arrived) if self._arrived is not None else None
        if sender is not None and not self.came_from(sender):
            return
        upstream: Factory = _UpstreamFactory(self)
        if self.factory.wrap_upstream is not None:
            upstream = self.factory.wrap_upstream(upstream)
        over = attempt(self.clock)
        self._connecting = self.factory.upstream.connect(upstream)
        self._connecting.addBoth(over)
        self._connecting.addErrback(self._upstream_failed)

    def came_from(self, sender: ClientSide) -> bool:
        """
        This connection is C{sender}'s upstream connection, arrived: cut if
        it has come round to a proxy it passed (False), else carrying what
        C{sender}'s bytes passed on (True).
        """
        if id(self.factory) in sender.passed:
            self.closing_because("forwarding loop")
            self.transport.abortConnection()
            return False
        self.passed = self.passed | sender.passed
        return True

    def _upstream_failed(self, failure: Failure) -> None:
        self._upstream_fd.release_descriptor()
        self._connecting = None
        if not self._gone:
            self.closing_because("upstream unreachable")
            reset(self.transport)

    def upstream_connected(self, upstream: ServerSide) -> None:
        """
        The upstream answered: start forwarding both ways (or drop it, if the
        client left meanwhile).
        """
        self._connecting = None
        self._upstream_fd.release_descriptor()  # the upstream's side holds it now
        if self._gone:
            upstream.transport.abortConnection()
            return
        self.upstream = upstream
        # Each side pauses the other when its own write buffer is full.  Not
        # the transports themselves: a consumer that goes away stops its
        # producer, and a transport's stopProducing is a close, which would
        # cut what the faults still hold for this side; closes are ours.
        upstream.transport.registerProducer(ReadPauser(self.transport), True)
        self.transport.registerProducer(ReadPauser(upstream.transport), True)
        self._flow_controlled = True  # the guard unregisters it when it closes
        early, self._early = self._early, []
        for data in early:
            upstream.transport.write(data)
        if self._client_done:
            _send_no_more(upstream.transport)
        elif not self._closing:
            self.transport.resumeProducing()

    def dataReceived(self, data: bytes) -> None:
        self._last_seen = self.factory.now()
        self.stats.bytes_in += len(data)
        self.stats.messages += 1
        upstream = self.upstream
        if upstream is None:
            self._early.append(data)
        else:
            upstream.transport.write(data)

    def readConnectionLost(self) -> None:
        self._client_done = True
        upstream = self.upstream
        if upstream is None:
            return  # passed on once it connects
        if self._upstream_done:
            self.both_done()
        else:
            _send_no_more(upstream.transport)

    def writeConnectionLost(self) -> None:
        """The client stopped reading; the upstream is paused by backpressure, then closed with us."""

    def upstream_finished(self) -> None:
        """
        The upstream sent its FIN: pass it on to the client, or close once
        both sides are done.
        """
        self._upstream_done = True
        if self._client_done:
            self.both_done()
        elif not self._gone and not _half_close(self.transport):
            self.close()  # over TLS: close_notify, by the guard's close

    def both_done(self) -> None:
        """Each side has sent its FIN: what is buffered goes, then both close."""
        if self.upstream is not None:
            self.upstream.close_cleanly(self.clock, self.factory.limits.close_grace)
        if not self._gone:
            self.close()

    def upstream_lost(self, clean: bool) -> None:
        """
        The upstream went: a clean close closes the client too, anything else
        resets it.
        """
        self.upstream = None
        if self._gone:
            return
        if clean:
            self.close()
        else:
            self.closing_because("upstream reset")
            reset(self.transport)

    def close(self, last_words: bytes = b"", linger: bool = False) -> None:
        """
        The guard's close; but a transport already half-closed loses the
        connection inside C{loseConnection}, before the guard arms its abort
        timer, which would then outlive the connection: disarm it.
        """
        super().close(last_words, linger)
        if self._gone and self._abort is not None and self._abort.active():
            self._abort.cancel()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._gone = True
        if self._wait is not None and self._wait.active():
            self._wait.cancel()
        if self._arrived is not None and ARRIVED.get(self._arrived) is self:
            del ARRIVED[self._arrived]
        super().connectionLost(reason)
        if self._connecting is not None:
            self._connecting.cancel()
        self._upstream_fd.release_descriptor()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            if _clean(reason):
                upstream.close_cleanly(self.clock, self.factory.limits.close_grace)
            else:
                reset(upstream.transport)


class EagerConnecting:
    """
    A reactor whose C{connectTCP} connections write eagerly (as echoapp's
    listeners do): for the upstream side, so a forwarded chunk is sent at
    once, not after a trip through the reactor.  Everything else, and any
    reactor that is not one of Twisted's own, is the real reactor's.
    """

    def __init__(self, reactor: Any) -> None:
        self.reactor = reactor

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reactor, name)

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
    ) -> Any:
        return connect_eager_tcp(polled(self.reactor), host, port, factory, timeout, bindAddress)


def eager_connecting(reactor: Any) -> Any:
    """C{reactor}, its TCP connections eager where that works (see L{echoapp._transports.eager})."""
    if not isinstance(reactor, PosixReactorBase) or asyncio_loop(reactor) is not None:
        return reactor
    # As the listeners: off where they cannot work, or where --no-eager-writes (or the variable) said so.
    return reactor if eager_problem() is not None or switched_off() is not None else EagerConnecting(reactor)


class _Connecting(ClientFactory):
    """
    The factory C{connectTCP} is given by L{TCPUpstream}: the caller's own
    protocol is the transport's, with nothing between (Twisted's endpoints
    put a wrapper there, one more call on every chunk the upstream sends),
    and C{connected} says how the attempt ended.  The caller's factory is
    started and stopped by the endpoint (L{TCPEndpoint.connect}).
    """

    noisy = False
    connector: IConnector | None = None

    def __init__(self, factory: IProtocolFactory) -> None:
        self.factory = factory
        self.connected: Deferred[IProtocol] = Deferred(self._cancel)

    def _cancel(self, connected: Deferred[IProtocol]) -> None:
        assert self.connector is not None  # connectTCP told us before anyone could cancel
        connected.errback(ConnectingCancelledError(self.connector.getDestination()))
        self.connector.stopConnecting()

    def startedConnecting(self, connector: IConnector) -> None:
        self.connector = connector

    def buildProtocol(self, addr: Any) -> Any:
        """
        The caller's protocol for the connection just made (its
        C{connectionMade} follows at once): C{connected} fires with it.
        """
        try:
            protocol = self.factory.buildProtocol(addr)
            if protocol is None:
                raise NoProtocol()
        except BaseException:
            self.connected.errback()
            return None
        self.connected.callback(protocol)
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if not self.connected.called:
            self.connected.errback(reason)


class TCPUpstream(TCPEndpoint):
    """
    A plain TCP upstream on one of Twisted's reactors (C{driver}):
    C{connectTCP} as Twisted's C{tcp:} client endpoint calls it (its
    timeout, resolving a name the same way), eager where that works, but
    with the protocol straight on the transport.  C{connect} fires with the
    protocol as its connection is made, just before its C{connectionMade}.
    """

    def attempt(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        connecting = _Connecting(protocolFactory)
        try:
            self.driver.connectTCP(self.host, self.port, connecting, timeout=self.timeout)
        except BaseException:
            return fail()
        return connecting.connected


def upstream_endpoint(reactor: Any, upstream: str) -> IStreamClientEndpoint:
    """
    Where a proxy connects for each client.  A plain TCP upstream is
    connected with nothing between its transport and the proxy: on a
    reactor over an asyncio loop (uvloop) by the loop itself
    (L{NativeTCPClientEndpoint}), as its listeners are served; on
    Twisted's own by L{TCPUpstream}, eager where that works.  Anything else
    (TLS, UNIX, options) through Twisted's endpoint for C{upstream}.
    """
    loop = asyncio_loop(reactor)
    found = plain_tcp(upstream)
    if loop is not None and found is not None:
        return NativeTCPClientEndpoint(loop, *found)
    if found is not None:
        return TCPUpstream(eager_connecting(reactor), *found)
    endpoint: IStreamClientEndpoint = clientFromString(
        eager_connecting(reactor), upstream_description(upstream)
    )
    return endpoint


class ProxyFactory(GuardedFactory):
    """
    The client-facing factory of one proxy: each connection is forwarded to
    C{upstream}, through C{wrap_upstream} (faults on what goes up) if given.
    """

    def __init__(
        self, upstream: IStreamClientEndpoint, wrap_upstream: UpstreamWrapper | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.upstream = upstream
        self.wrap_upstream = wrap_upstream

    def make_protocol(self) -> ClientSide:
        return ClientSide()
