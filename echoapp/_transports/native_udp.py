"""
Native datagram ports: on a reactor that sits on an asyncio loop, UDP ports
are served by the loop itself, with a Twisted C{DatagramProtocol} unchanged
on top.  A protocol that reads its own socket (the UDP greeter's
C{read_ready}: every datagram ready per wake-up, in one frame) is called by
the loop's reader callback (C{add_reader}); any other protocol gets the
loop's own C{create_datagram_endpoint} (uvloop's C transport), one call per
datagram.  Measured on uvloop, the greeter's own loop costs less per
datagram than uvloop's transport does for a bare asyncio protocol.

L{watch_readable} is the same idea for a socket that is no listening port
(the UDP proxy's session sockets): the loop's reader callback where there is
a loop, a bare C{IReadDescriptor} on Twisted's own reactors.  Neither logs a
line per socket, as Twisted's C{listenUDP} does ("Session starting on N").
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IReadDescriptor, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp._twisted import asyncio_loop

log = Logger(namespace="echoapp.native_udp")

# Replies the loop may hold for a full socket buffer before it drops them:
# UDP may lose a datagram, but the server must not grow without bound.
DATAGRAM_BUFFER_LIMIT = 1 << 20
# What one read may take: every UDP payload whole (as Twisted's ports are given).
MAX_PACKET_SIZE = 65535


def _udp_address(sockaddr: Any) -> IPv4Address | IPv6Address:
    if len(sockaddr) == 4:
        return IPv6Address("UDP", sockaddr[0], sockaddr[1], sockaddr[2], sockaddr[3])
    return IPv4Address("UDP", sockaddr[0], sockaddr[1])


@implementer(IListeningPort, IUDPTransport)
class NativeDatagramPort:
    """
    What a Twisted C{DatagramProtocol} sees as its transport and its port,
    as with Twisted's own UDP port: C{write(data, addr)}, C{getHost},
    C{stopListening}.
    """

    maxPacketSize = MAX_PACKET_SIZE

    def __init__(self, protocol: DatagramProtocol, host: IPv4Address | IPv6Address) -> None:
        self.protocol = protocol
        self._host = host
        self._transport: Any = None
        self._socket: Any = None  # when the protocol reads the socket itself (L{read_by})
        self._unwatch: Callable[[], object] | None = None
        self.stopped = False
        self.dropped = 0
        self._closed = False
        self._waiting: list[Deferred[None]] = []

    def write(self, datagram: bytes, addr: Any = None) -> bool | None:  # type: ignore[override]
        """C{False} when the reply is dropped for a full buffer, so the greeter counts it so."""
        if self._socket is not None:
            return self._send(datagram, addr)
        transport = self._transport
        if transport is None or transport.is_closing():
            return None
        if transport.get_write_buffer_size() > DATAGRAM_BUFFER_LIMIT:
            self.dropped += 1
            return False
        transport.sendto(datagram, addr)
        return None

    def getHost(self) -> IPv4Address | IPv6Address:
        return self._host

    def _send(self, datagram: bytes, addr: Any) -> bool | None:
        """
        Straight to the socket: the kernel's send buffer is the bound (a
        full one drops the reply, as UDP may), and an ICMP error for an
        earlier reply is nothing to an unconnected port, as in L{DatagramBridge}.
        """
        try:
            self._socket.sendto(datagram, addr)
        except BlockingIOError:
            self.dropped += 1
            return False
        except OSError:
            pass
        return None

    @property
    def read_directly(self) -> bool:
        """Whether the protocol reads the socket itself (L{read_by}), so may also send on it."""
        return self._socket is not None

    def getHandle(self) -> Any:
        if self._socket is not None:
            return self._socket
        return self._transport.get_extra_info("socket") if self._transport is not None else None

    def read_by(self, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
        """
        Serve C{sock} with the protocol's own C{read_ready}, called by the
        loop whenever the socket is readable; the port is the protocol's
        transport and owns the socket from now on.
        """
        self._socket = sock
        if self.stopped:
            self._close_socket()
            return
        self.protocol.makeConnection(self)
        if self.stopped:  # stopped while starting
            return
        loop.add_reader(sock.fileno(), self.protocol.read_ready)  # type: ignore[attr-defined]
        self._unwatch = lambda: loop.remove_reader(sock.fileno())

    def _close_socket(self) -> None:
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        self._socket.close()
        self.closed()

    def setBroadcastAllowed(self, enabled: bool) -> None:
        sock = self.getHandle()
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1 if enabled else 0)

    def getBroadcastAllowed(self) -> bool:
        sock = self.getHandle()
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST)) if sock is not None else False

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> Deferred[None]:
        """
        Fires once the loop has let the socket go and the protocol has been
        stopped (its C{stopProtocol} ran), as Twisted's own UDP port does:
        whoever waits for the service to stop sees all of that done.
        """
        self.stopped = True
        if self._socket is not None and not self._closed:
            try:
                if self.protocol.numPorts:
                    self.protocol.doStop()
            finally:
                self._close_socket()
        if self._transport is not None:
            self._transport.close()  # the protocol is stopped by connection_lost
        if self._closed:
            return succeed(None)
        waiting: Deferred[None] = Deferred()
        self._waiting.append(waiting)
        return waiting

    def closed(self) -> None:
        """The loop is done with the socket (or never took it)."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        for each in waiting:
            each.callback(None)

    loseConnection = stopListening

    def connect(self, host: str, port: int) -> None:
        raise NotImplementedError("echoapp's datagram ports answer whoever writes; they do not connect")

    def logPrefix(self) -> str:
        return self.protocol.__class__.__name__


class DatagramBridge(asyncio.DatagramProtocol):
    """
    asyncio's side of a native datagram port: it hands datagrams and errors
    to the Twisted protocol, in Twisted's terms.
    """

    def __init__(self, port: NativeDatagramPort) -> None:
        self._port = port

    def connection_made(self, transport: Any) -> None:
        self._port._transport = transport
        if self._port.stopped:  # stopped before the loop got to it
            transport.close()
            return
        self._port.protocol.makeConnection(self._port)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            self._port.protocol.datagramReceived(data, addr)
        except Exception:
            # As Twisted's UDP port does: log it, keep serving.
            log.failure("Unhandled error in {protocol!r}", protocol=self._port.protocol)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error for an earlier reply: nothing to do for an unconnected port."""

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            if self._port.protocol.numPorts:
                self._port.protocol.doStop()
        finally:
            # The loop closes the socket only after this returns (asyncio in a
            # finally, uvloop on its close callback): whoever waits for the
            # port to stop hears it on the next turn, when the port is free.
            try:
                asyncio.get_running_loop().call_soon(self._port.closed)
            except RuntimeError:  # no loop running (a test driving it by hand)
                self._port.closed()


def serve_datagrams(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: DatagramProtocol
) -> NativeDatagramPort:
    """
    C{protocol} on C{sock}, a bound datagram socket: read by the protocol
    itself if its class has a C{read_ready} (asked of the class, so that a
    wrapper forwarding attributes is not mistaken for what it wraps), else
    through the loop's own transport.
    """
    port = NativeDatagramPort(protocol, _udp_address(sock.getsockname()))
    if callable(getattr(type(protocol), "read_ready", None)):
        sock.setblocking(False)
        # On the loop's next turn, as the loop's own transport starts.
        loop.call_soon(_start_reading, port, loop, sock)
        return port
    # The loop hands over the transport on its next turn (both asyncio and
    # uvloop wait for connection_made); the socket is bound already.
    starting = asyncio.ensure_future(
        loop.create_datagram_endpoint(lambda: DatagramBridge(port), sock=sock), loop=loop
    )
    starting.add_done_callback(lambda done: _report(done, port))
    return port


def _report(done: asyncio.Future[Any], port: NativeDatagramPort) -> None:
    """A port the loop could not take is closed: nothing will wait for it to stop."""
    if done.cancelled() or done.exception() is not None:
        if not done.cancelled():
            log.failure("Cannot serve datagrams", Failure(done.exception()))
        port.closed()


def _start_reading(port: NativeDatagramPort, loop: asyncio.AbstractEventLoop, sock: socket.socket) -> None:
    try:
        port.read_by(loop, sock)
    except Exception:
        log.failure("Cannot serve datagrams")
        if not port._closed:
            port._close_socket()


@implementer(IReadDescriptor)
class _Readable:
    """
    A socket as Twisted's reactor watches it: C{callback} on each wake-up,
    and nothing else (no port, no protocol, no log line).
    """

    def __init__(self, sock: socket.socket, callback: Callable[[], object]) -> None:
        self._fileno = sock.fileno()
        self._callback = callback

    def fileno(self) -> int:
        return self._fileno

    def doRead(self) -> None:
        self._callback()

    def connectionLost(self, reason: Failure) -> None:
        """
        The reactor let it go: an error without data to read (EPOLLERR: a
        connected datagram socket's ICMP port unreachable) is reported so,
        not as readable.  The callback is called anyway, so its read meets
        the error and its owner hears of it; at shutdown the read finds
        nothing.
        """
        self._callback()

    def logPrefix(self) -> str:
        return "UDP"


def watch_readable(reactor: Any, sock: socket.socket, callback: Callable[[], object]) -> Callable[[], None]:
    """
    Call C{callback} whenever C{sock} (non-blocking) is readable, on the
    loop under C{reactor} if it sits on one (its reader callback, no Twisted
    frame per wake-up), else through C{reactor}'s C{addReader}.  The
    callback reads what is ready itself; it must not raise.  Returns what
    stops the watch, to be called before the socket is closed.
    """
    loop = asyncio_loop(reactor)
    fd = sock.fileno()
    if loop is not None:
        loop.add_reader(fd, callback)
        return lambda: (loop.remove_reader(fd), None)[1]
    readable = _Readable(sock, callback)
    reactor.addReader(readable)
    return lambda: reactor.removeReader(readable)
