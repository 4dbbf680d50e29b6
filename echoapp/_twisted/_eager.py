"""
Eager writes for Twisted's own stream transports, part of the seam
(L{echoapp._twisted}): Twisted's C{tcp} and C{unix} connections with one
change, a C{write()} that sends at once when nothing is queued, and the
ports and connector that make them.  What it relies on of Twisted's
transport (its write queue, close states and C{writeSomeData}) is checked
by L{eager_writes_problem} before the first eager port is made.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import abstract, main, tcp, unix
from twisted.internet.interfaces import IProtocolFactory

from echoapp._process import ACCEPT_BATCH


class EagerWrites:
    """
    Eager writes for Twisted's stream transports (Twisted ticket #5303): when
    nothing is queued, C{write()} sends at once instead of queueing the bytes
    and asking the reactor to say when the socket is writable, which costs
    two more epoll calls and a loop pass per reply.  What the kernel does not
    take is queued by Twisted's own C{write}, so buffering, producers, close
    and errors stay Twisted's.

    It relies on C{FileDescriptor}'s write queue (C{dataBuffer},
    C{_tempDataLen}), its close states (C{connected}, C{_writeDisconnected},
    C{_aborting}), C{writeSomeData} (which returns a count, or an exception
    for a failed send; a TCP connection calls its C{socket.send}), and
    C{TLS} (set by C{startTLS}, whose bytes keep to Twisted's path).
    L{eager_writes_problem} checks each of them.
    """

    def write(self, data: bytes) -> None:
        if (
            self.dataBuffer  # type: ignore[attr-defined]
            or self._tempDataLen  # type: ignore[attr-defined]
            or data.__class__ is not bytes
            or not data
            or self.TLS  # type: ignore[attr-defined]
            or not self.connected  # type: ignore[attr-defined]
            or self._writeDisconnected  # type: ignore[attr-defined]
            or self._aborting  # type: ignore[attr-defined]
        ):
            super().write(data)  # type: ignore[misc]
            return
        sent = self.send_now(data)
        if sent < len(data):  # the rest (after a failed send, all of it) is queued
            super().write(data[sent:] if sent else data)  # type: ignore[misc]
        elif self.producer is not None and not self.streamingProducer:  # type: ignore[attr-defined]
            self.startWriting()  # type: ignore[attr-defined]  # a pull producer is asked when it drains

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        A pull producer is asked again once the socket is writable, as
        Twisted's queue asks it when bytes written just before it drain:
        eagerly they have left already.  Asked so whether or not bytes were
        written, one ask more than Twisted's at most, which a pull producer
        takes as any other; knowing would cost every write a mark.
        """
        super().registerProducer(producer, streaming)  # type: ignore[misc]
        if not streaming and self.producer is producer:  # type: ignore[attr-defined]
            self.startWriting()  # type: ignore[attr-defined]

    def send_now(self, data: bytes) -> int:
        """Bytes the kernel took at once: 0 when it took none, or the send failed."""
        sent = self.writeSomeData(data)  # type: ignore[attr-defined]
        return sent if sent.__class__ is int else 0

    def reset_met(self) -> int:
        """
        A send met the peer's reset (C{ECONNRESET}) and took the socket's
        error with it: the reads after it still get what arrived before the
        reset, but then a clean end, where Twisted's own transport, meeting
        the error in its read or write pass, reports the connection lost.
        So a clean end read from now on is a lost connection (the read is
        wrapped in place, as C{abortConnection} replaces it).  Nothing was
        sent: 0.
        """
        read = self.doRead  # type: ignore[attr-defined]

        def read_then_lost() -> Any:
            why = read()
            return main.CONNECTION_LOST if why is main.CONNECTION_DONE else why

        vars(self)["doRead"] = read_then_lost
        return 0

    def writeSequence(self, iovec: Any) -> None:
        iovec = list(iovec)
        if all(chunk.__class__ is bytes for chunk in iovec):
            self.write(b"".join(iovec))
        else:
            super().writeSequence(iovec)  # type: ignore[misc]


class EagerTCPServer(EagerWrites, tcp.Server):
    """A TCP connection Twisted's port accepts, writing eagerly."""

    def send_now(self, data: bytes) -> int:
        """C{socket.send} itself: C{writeSomeData} adds two calls and a memoryview (for Windows)."""
        try:
            return self.socket.send(data)
        except BlockingIOError:
            return 0
        except ConnectionResetError:
            return self.reset_met()
        except OSError:
            # Queued, the rest: Twisted's write pass meets the error again (EPIPE after a
            # peer's clean close and reset, as its own transport would) or retries ENOBUFS.
            return 0


class EagerTCPPort(tcp.Port):
    """
    Twisted's TCP port making eager connections, accepting at most
    L{ACCEPT_BATCH} a read event (the descriptor reserve holds a batch's refusals).
    """

    transport = EagerTCPServer
    _accept_batch = ACCEPT_BATCH

    @property
    def numberAccepts(self) -> int:
        """C{Port.numberAccepts}, which C{doRead} resizes, kept within L{ACCEPT_BATCH}."""
        return self._accept_batch

    @numberAccepts.setter
    def numberAccepts(self, value: int) -> None:
        self._accept_batch = min(value, ACCEPT_BATCH)


class EagerUNIXServer(EagerWrites, unix.Server):
    """A UNIX connection, writing eagerly (file descriptors still go first: C{writeSomeData} sends them)."""


class EagerTCPClient(EagerWrites, tcp.Client):
    """A TCP connection Twisted connects (echoapp-proxy's upstream side), writing eagerly."""

    send_now = EagerTCPServer.send_now


class EagerTCPConnector(tcp.Connector):
    """C{connectTCP}'s connector, making an L{EagerTCPClient} (C{Connector._makeTransport})."""

    def _makeTransport(self) -> EagerTCPClient:
        return EagerTCPClient(self.host, self.port, self.bindAddress, self, self.reactor)


def connect_eager_tcp(
    reactor: Any, host: str, port: int, factory: Any, timeout: float = 30, bindAddress: Any = None
) -> tcp.Connector:
    """C{reactor.connectTCP}, the connection writing eagerly."""
    connector = EagerTCPConnector(host, port, factory, timeout, bindAddress, reactor)
    connector.connect()
    return connector


class EagerUNIXPort(unix.Port):
    """Twisted's UNIX port making eager connections."""

    transport = EagerUNIXServer


def adopt_eager_port(reactor: Any, fd: int, family: int, factory: IProtocolFactory) -> tcp.Port:
    """C{reactor.adoptStreamPort} for a TCP socket, with eager writes (C{Port._fromListeningDescriptor})."""
    port = EagerTCPPort._fromListeningDescriptor(reactor, fd, family, factory)
    port.startListening()
    return port


def mark_tls(port: tcp.Port) -> tcp.Port:
    """A TCP port carrying TLS is logged as C{TLS}, as C{listenSSL} does (C{Port._type})."""
    port._type = "TLS"
    return port


def queued(transport: Any) -> int:
    """
    Bytes a Twisted stream transport holds, not yet taken by the kernel:
    C{dataBuffer} past C{offset}, and C{_tempDataLen} not yet joined to it.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


class _QueueProbe(abstract.FileDescriptor):
    """A descriptor with no socket, to see where Twisted's C{write} queues bytes."""

    connected = 1

    def startWriting(self) -> None:
        pass


def eager_writes_problem() -> str | None:
    """
    What in this Twisted no longer matches what L{EagerWrites} relies on,
    or L{None}.  Checked before the first eager port is made; on a problem
    echoapp says so once and uses Twisted's own transport.
    """
    for name, base in (("tcp", tcp), ("unix", unix)):
        if base.Port.transport is not base.Server:
            return f"{name}.Port.transport is not {name}.Server"
        send = getattr(base.Server, "writeSomeData", None)
        if send is None or send is abstract.FileDescriptor.writeSomeData:
            return f"{name}.Server has no writeSomeData"
        for attribute in ("TLS", "_aborting", "_writeDisconnected", "dataBuffer", "offset", "producer"):
            if not hasattr(base.Server, attribute):
                return f"{name}.Server has no {attribute}"
    if not hasattr(tcp.Port, "_fromListeningDescriptor"):
        return "tcp.Port has no _fromListeningDescriptor"
    probe = _QueueProbe(reactor=object())  # type: ignore[arg-type]
    probe.write(b"queued")
    if getattr(probe, "_tempDataLen", None) != 6 or queued(probe) != 6:
        return "FileDescriptor.write no longer queues into _tempDataLen"
    return None
