"""
Native stream transports: on a reactor that sits on an asyncio loop
(C{--reactor=uvloop} or C{asyncio}), C{tcp:} and C{tcp6:} listeners are
served by the loop's own C{create_server}, so uvloop's C transports do the
accepting, reading and writing.  Twisted's asyncio reactor runs its own
sockets through C{add_reader} callbacks, where uvloop gains nothing.  (UDP
ports: L{echoapp._transports.native_udp}.)

The unchanged Twisted protocol sees a L{NativeConnection}: an
C{ITCPTransport} with Twisted's semantics (flushing C{loseConnection},
C{ConnectionDone}/C{ConnectionLost}/C{ConnectionAborted} reasons, a
streaming producer paused by a full write buffer, reads paused by
C{pauseProducing}), so every protection in L{echoapp._limits.guard} works as on
Twisted's own TCP.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IConsumer,
    IHalfCloseableProtocol,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="echoapp.native_tcp")

Address = IPv4Address | IPv6Address

# What Twisted's TCP reads at once (FileDescriptor.bufferSize).
READ_SIZE = 65536


def _address(sockaddr: Any) -> Address:
    """
    As Twisted's TCP gives it: a scope ID is part of the IPv6 host.  A
    connection that is gone may have no address left (C{None}): then
    C{0.0.0.0:0}, rather than an exception from C{getPeer}.
    """
    if not sockaddr:
        return IPv4Address("TCP", "0.0.0.0", 0)
    if len(sockaddr) == 4:
        host = sockaddr[0]
        if sockaddr[3]:
            host = socket.getnameinfo(sockaddr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV)[0]
        return IPv6Address("TCP", host, sockaddr[1], sockaddr[2], sockaddr[3])
    return IPv4Address("TCP", sockaddr[0], sockaddr[1])


@implementer(ITCPTransport, IConsumer, IPushProducer)
class NativeConnection(asyncio.Protocol):
    """
    One connection, both ways: the asyncio protocol the loop drives, and
    the Twisted transport the Twisted protocol writes to.  It builds the
    protocol from the factory for the peer and turns each asyncio callback
    into the Twisted call with Twisted's arguments.

    One object, with slots and no stored addresses (they are asked of the
    loop's transport when someone wants them): ten thousand idle
    connections each hold one.  A reply goes from the protocol to uvloop's
    C code in two calls.
    """

    __slots__ = (
        "_factory",
        "_failure",
        "_held",
        "_protocol",
        "_reads_paused",
        "_streaming",
        "_transport",
        "_writes_paused",
        "aborted",
        "connected",
        "disconnected",
        "disconnecting",
        "producer",
    )

    def __init__(self, factory: IProtocolFactory) -> None:
        self._factory = factory
        self._protocol: IProtocol | None = None
        self._transport: Any = None
        self._failure: Failure | None = None
        self.connected = False
        self.disconnecting = False
        self.disconnected = False
        self.aborted = False
        self.producer: Any = None
        self._streaming = False
        self._writes_paused = False
        self._reads_paused = False
        self._held = b""

    # --- asyncio.Protocol: what the loop calls ---

    def connection_made(self, transport: Any) -> None:
        peername = transport.get_extra_info("peername")
        if not peername:
            # Reset before the loop got to it: the kernel no longer knows the
            # peer, and there is no one to serve.  Quietly, as a reset storm
            # must not write a traceback per connection.
            transport.abort()
            return
        protocol = self._factory.buildProtocol(_address(peername))
        if protocol is None:
            transport.close()  # refused by the factory, as Twisted's Port does
            return
        self._protocol = protocol
        self._transport = transport
        self.connected = True
        try:
            protocol.makeConnection(self)
        except Exception:
            self._fail()

    def data_received(self, data: bytes) -> None:
        protocol = self._protocol
        if protocol is None or self._failure is not None:
            return
        if self._reads_paused:
            # The loop read although the protocol paused it: uvloop (and
            # asyncio before 3.12, CPython gh-76002) ignore a pause_reading()
            # made in connection_made.  Twisted's promise is no dataReceived
            # while paused: the chunk is held for resumeProducing.
            self._held += data
            self._transport.pause_reading()
            return
        try:
            if len(data) <= READ_SIZE:
                protocol.dataReceived(data)
            else:
                self._in_pieces(protocol, data)
        except Exception:
            self._fail()

    def _in_pieces(self, protocol: IProtocol, data: bytes) -> None:
        """
        uvloop reads up to 256 KiB at once, Twisted 64 KiB: the protocol gets
        Twisted's chunk sizes, which raw framing (a chunk is a message, at
        most C{--max-line-length}) depends on.
        """
        view = memoryview(data)
        for start in range(0, len(data), READ_SIZE):
            if self._failure is not None or self.disconnecting:
                return
            protocol.dataReceived(bytes(view[start : start + READ_SIZE]))

    def _fail(self) -> None:
        """As Twisted's reactor does: log the error and drop the connection with it."""
        self._failure = Failure()
        log.failure(
            "Unhandled error in {protocol!r}; connection dropped", self._failure, protocol=self._protocol
        )
        self._transport.abort()

    def eof_received(self) -> bool:
        protocol = self._protocol
        if protocol is not None and IHalfCloseableProtocol.providedBy(protocol):
            protocol.readConnectionLost()
            return True  # keep the write side open
        return False  # the loop closes the transport: ConnectionDone

    def pause_writing(self) -> None:
        self._writes_paused = True
        if self.producer is not None and self._streaming:
            self.producer.pauseProducing()

    def resume_writing(self) -> None:
        self._writes_paused = False
        self._wake_producer()

    def connection_lost(self, exc: Exception | None) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        self.connected = False
        self.disconnected = True
        if self._failure is not None:
            reason = self._failure
        elif self.aborted:
            reason = Failure(ConnectionAborted())
        elif exc is None:
            reason = Failure(ConnectionDone())
        else:
            reason = Failure(ConnectionLost(str(exc) or type(exc).__name__))
        producer, self.producer = self.producer, None
        if producer is not None:
            producer.stopProducing()
        protocol.connectionLost(reason)

    # --- ITransport: what the Twisted protocol calls ---

    def write(self, data: bytes) -> None:
        if not isinstance(data, bytes):
            raise TypeError(f"Data must be bytes, not {type(data).__name__}")
        if self.connected:
            self._transport.write(data)

    def writeSequence(self, data: Any) -> None:
        for piece in data:
            if not isinstance(piece, bytes):
                raise TypeError(f"Data must be bytes, not {type(piece).__name__}")
        if self.connected:
            self._transport.writelines(data)

    def unsent(self) -> int:
        """Bytes the loop still holds for this connection (a reset waits for them to go)."""
        return self._transport.get_write_buffer_size() if self.connected else 0

    def loseConnection(self) -> None:
        """Flush what is buffered, then close; nothing more is read."""
        if self.connected and not self.disconnecting:
            self.disconnecting = True
            self._transport.close()

    def abortConnection(self) -> None:
        """Close now, dropping what is buffered, whatever the peer does."""
        if self.connected:
            self.aborted = True
            self.disconnecting = True
            self._transport.abort()

    def loseWriteConnection(self) -> None:
        """Half-close: the peer reads end of file once the buffer is flushed."""
        if self.connected and self._transport.can_write_eof():
            self._transport.write_eof()
            if IHalfCloseableProtocol.providedBy(self._protocol):
                asyncio.get_running_loop().call_soon(self._protocol.writeConnectionLost)

    def getPeer(self) -> Address:
        return _address(self._transport.get_extra_info("peername"))

    def getHost(self) -> Address:
        return _address(self._transport.get_extra_info("sockname"))

    def getHandle(self) -> Any:
        return self._transport.get_extra_info("socket")

    def logPrefix(self) -> str:
        return self._protocol.__class__.__name__

    # ITCPTransport socket options
    def _option(self, level: int, name: int) -> bool:
        sock = self.getHandle()
        return bool(sock.getsockopt(level, name)) if sock is not None else False

    def _set_option(self, level: int, name: int, enabled: Any) -> None:
        sock = self.getHandle()
        if sock is not None:
            sock.setsockopt(level, name, 1 if enabled else 0)

    def getTcpNoDelay(self) -> bool:
        return self._option(socket.IPPROTO_TCP, socket.TCP_NODELAY)

    def setTcpNoDelay(self, enabled: Any) -> None:
        self._set_option(socket.IPPROTO_TCP, socket.TCP_NODELAY, enabled)

    def getTcpKeepAlive(self) -> bool:
        return self._option(socket.SOL_SOCKET, socket.SO_KEEPALIVE)

    def setTcpKeepAlive(self, enabled: Any) -> None:
        self._set_option(socket.SOL_SOCKET, socket.SO_KEEPALIVE, enabled)

    # IConsumer: the loop's pause_writing/resume_writing drive the producer.
    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer!r}, "
                f"because producer {self.producer!r} was never unregistered."
            )
        if self.disconnected:
            producer.stopProducing()
            return
        self.producer = producer
        self._streaming = bool(streaming)
        if not streaming or self._writes_paused:
            self._wake_producer()

    def unregisterProducer(self) -> None:
        self.producer = None

    def _wake_producer(self) -> None:
        producer = self.producer
        if producer is None:
            return
        if self._streaming:
            if self._writes_paused:
                producer.pauseProducing()
            else:
                producer.resumeProducing()
        elif not self._writes_paused:
            # A pull producer is asked for more each time the buffer drains.
            producer.resumeProducing()

    # IPushProducer: reading from the socket.
    def pauseProducing(self) -> None:
        self._reads_paused = True
        if self.connected and not self._transport.is_closing():
            self._transport.pause_reading()

    def resumeProducing(self) -> None:
        self._reads_paused = False
        held, self._held = self._held, b""
        if held:
            self.data_received(held)
        if self.connected and not self._transport.is_closing() and not self._reads_paused:
            self._transport.resume_reading()

    def stopProducing(self) -> None:
        self.loseConnection()

    def __repr__(self) -> str:
        return f"<NativeConnection for {self._protocol!r}>"


@implementer(IListeningPort)
class NativePort:
    """
    A listening asyncio server, as the C{IListeningPort} services keep.  As
    Twisted's ports do, it starts its factory (C{doStart}) when it listens
    and stops it (C{doStop}) when it stops listening.
    """

    def __init__(self, server: asyncio.AbstractServer, host: Address, factory: IProtocolFactory) -> None:
        self._server = server
        self._host = host
        self._factory: IProtocolFactory | None = factory
        factory.doStart()

    def startListening(self) -> None:
        """Already listening: the socket was bound and listening before the loop took it."""

    def stopListening(self) -> Deferred[None]:
        """
        Stop accepting; connections already made stay up, as with Twisted's
        ports.  The listening socket is closed before this returns.
        """
        self._server.close()
        factory, self._factory = self._factory, None
        if factory is not None:
            factory.doStop()
        return succeed(None)

    def getHost(self) -> Address:
        return self._host


def serve(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, factory: IProtocolFactory, backlog: int
) -> IListeningPort:
    """
    Serve C{factory} on C{sock}, a bound socket, from C{loop}, listening
    before this returns, as Twisted's C{listenTCP} does: callers (and tests
    on port 0) read the port at once.
    """
    host = _address(sock.getsockname())
    server = _finish_now(loop.create_server(lambda: NativeConnection(factory), sock=sock, backlog=backlog))
    log.info(
        "Connections to port {port} use the {loop} loop's own transports",
        port=host.port,
        loop=type(loop).__module__.partition(".")[0],
    )
    return NativePort(server, host, factory)


def _finish_now(coroutine: Any) -> Any:
    """
    Step a coroutine that never waits on a future to its end.  Given a
    ready socket, C{create_server} is one: uvloop's finishes at once, and
    asyncio's yields once only to give the loop a turn.
    """
    try:
        while True:
            if coroutine.send(None) is not None:
                coroutine.close()
                raise RuntimeError("create_server waited on a future; cannot listen synchronously")
    except StopIteration as finished:
        return finished.value
