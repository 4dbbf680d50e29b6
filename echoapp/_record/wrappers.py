"""
The recording wrappers, one concern each as C{twisted.protocols.policies}
keeps them: L{RecordingProtocol} (with its L{RecordingFactory}) stands
between a stream listener's transport and the service's protocol (its
faults included) and records what each side sends and how it closes;
L{RecordingDatagramProtocol} does the same for a UDP port, one record per
source.  Standing outermost, they record what went on the wire: a reply
held by a fault is recorded when it is sent, and the fault's own note says
when it was held (L{record_of} finds the record for it).

Recording that is off is no wrapper at all: the services wrap a listener
only when asked to record.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp._limits.guard import Refusal
from echoapp._record.recorder import Recorder
from echoapp._record.store import CLIENT, SERVER, Address, ConnectionRecord

# UDP sources a port keeps a record open for at once: past it, the one
# heard from least recently gets a new record when it is heard again.
MAX_SOURCES = 1024


def address_of(address: IAddress | None) -> Address:
    """C{(host, port)} of an IP address, or L{None} (a UNIX socket: not IP)."""
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return (host, port)
    return None


def refusal_reason(protocol: Any) -> str | None:
    """Why the service refused the connection C{protocol} serves (which limit), if it did."""
    for _ in range(8):  # through the wrappers between (faults), never forever
        if protocol is None:
            return None
        if isinstance(protocol, Refusal):
            return protocol.reason
        protocol = getattr(protocol, "wrappedProtocol", None)
    return None


@dataclass(frozen=True)
class Recording:
    """
    What one listener's records share: the store they go to
    (C{recorder}), the listener's name, what each record's header adds
    when it opens (C{note}: the faults and their seed, as they are then),
    and what the records are of (C{owner}: a named proxy), where a store
    is shared.
    """

    recorder: Recorder
    listener: str
    note: Callable[[], str] = str
    owner: object = None

    def open(self, kind: str, client: Address, server: Address) -> ConnectionRecord:
        """A new record of this listener's: a connection (C{kind} "tcp") or a UDP source ("udp")."""
        return self.recorder.open(kind, self.listener, client, server, self.note(), self.owner)


W = TypeVar("W")


class RecordsListener(Generic[W]):
    """
    What both recording wrappers are made of: the thing they wrap, and
    their listener's L{Recording} (its fields given as the services give
    them).
    """

    recording: Recording

    def __init__(
        self,
        wrapped: W,
        recorder: Recorder,
        listener: str,
        note: Callable[[], str] = str,
        owner: object = None,
    ) -> None:
        self.recording = Recording(recorder, listener, note, owner)
        self.wrap(wrapped)

    def wrap(self, wrapped: W) -> None:
        """Stand in front of C{wrapped}."""
        raise NotImplementedError


class RecordingProtocol(ProtocolWrapper):
    """One connection, recorded: what each side sends, and who closes how."""

    factory: RecordingFactory
    record: ConnectionRecord
    transport: Any
    wrappedProtocol: Any

    def makeConnection(self, transport: Any) -> None:
        self.record = self.factory.recording.open(
            "tcp", address_of(transport.getPeer()), address_of(transport.getHost())
        )
        reason = refusal_reason(self.wrappedProtocol)
        if reason is not None:
            self.record.refused(reason)
        super().makeConnection(transport)

    def dataReceived(self, data: bytes) -> None:
        self.record.data(CLIENT, data)
        self.wrappedProtocol.dataReceived(data)

    def write(self, data: bytes) -> None:
        if data:
            self.record.data(SERVER, data)
        self.transport.write(data)

    def writeSequence(self, data: Any) -> None:
        joined = b"".join(data)
        if joined:
            self.record.data(SERVER, joined)
        self.transport.write(joined)

    def loseConnection(self) -> None:
        """The service closes: a FIN from the server once what it wrote has gone."""
        self.record.closed("server", "FIN")
        super().loseConnection()

    def abortConnection(self) -> None:
        """The service (or a reset fault) aborts: an RST from the server."""
        self.record.closed("server", "RST")
        self.transport.abortConnection()

    @property
    def loseWriteConnection(self) -> Callable[[], None]:
        """The server's half-close, offered only where the transport has one."""
        below = self.transport.loseWriteConnection  # AttributeError where it has none, as without us

        def lose_write() -> None:
            self.record.closed("server", "FIN", half=True)
            below()

        return lose_write

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.record.lost(reason is None or reason.check(ConnectionDone) is not None)
        super().connectionLost(reason)


@implementer(IHalfCloseableProtocol)
class HalfCloseableRecordingProtocol(RecordingProtocol):
    """For a service that takes a client's half-close: the client's FIN is recorded, then passed on."""

    def readConnectionLost(self) -> None:
        """The client closed its write side."""
        self.record.closed("client", "FIN", half=True)
        self.wrappedProtocol.readConnectionLost()

    def writeConnectionLost(self) -> None:
        """Our write side is closed."""
        self.wrappedProtocol.writeConnectionLost()


class RecordingFactory(RecordsListener[Factory], WrappingFactory):
    """
    A listener's factory, recording each connection in C{recorder} as
    C{listener}'s; C{note} says, at each open, what the record's header
    adds (the faults and their seed).
    """

    noisy = False

    def wrap(self, wrapped: Factory) -> None:
        """Twisted's wrapping factory, around C{wrapped}."""
        WrappingFactory.__init__(self, wrapped)  # type: ignore[arg-type]

    def buildProtocol(self, addr: Any) -> Any:
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        half = IHalfCloseableProtocol.providedBy(wrapped)
        kind = HalfCloseableRecordingProtocol if half else RecordingProtocol
        return kind(self, wrapped)  # type: ignore[arg-type]

    def registerProtocol(self, protocol: Any) -> None:
        """Not kept: the service counts its own connections, and a record is not one."""

    def unregisterProtocol(self, protocol: Any) -> None:
        """Nothing kept, nothing to forget."""

    def __getattr__(self, name: str) -> Any:
        """What the service asks of its factory (connections, stats) is the wrapped one's."""
        return getattr(self.wrappedFactory, name)


class RecordingDatagrams:
    """A UDP port's transport as its protocol sees it: each reply recorded in its source's record."""

    def __init__(self, transport: Any, protocol: RecordingDatagramProtocol) -> None:
        self._transport = transport
        self._protocol = protocol

    def write(self, datagram: bytes, addr: Any = None) -> Any:
        """Recorded, then sent."""
        if addr is not None:
            self._protocol.source(addr).data(SERVER, datagram)
        return self._transport.write(datagram, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RecordingDatagramProtocol(RecordsListener[DatagramProtocol], DatagramProtocol):
    """A UDP port's protocol, recorded: one record per source, at most L{MAX_SOURCES} open at once."""

    noisy = False

    def wrap(self, wrapped: DatagramProtocol) -> None:
        """One record per source, none yet."""
        self.wrapped = wrapped
        self.sources: OrderedDict[tuple[str, int], ConnectionRecord] = OrderedDict()
        self.datagrams: RecordingDatagrams | None = None

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.datagrams = RecordingDatagrams(transport, self)
        self.wrapped.makeConnection(self.datagrams)  # type: ignore[arg-type]

    def doStop(self) -> None:
        self.wrapped.doStop()
        super().doStop()

    def source(self, addr: Any) -> ConnectionRecord:
        """The record of the source C{addr}: made when it is first heard (or heard again after eviction)."""
        key = (addr[0], addr[1])
        record = self.sources.get(key)
        if record is not None and record.kept:
            self.sources.move_to_end(key)
            return record
        if len(self.sources) >= MAX_SOURCES:
            self.sources.popitem(last=False)
        host = self.transport.getHost() if self.transport is not None else None
        record = self.sources[key] = self.recording.open("udp", key, address_of(host))
        return record

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.source(addr).data(CLIENT, datagram)
        self.wrapped.datagramReceived(datagram, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


def records_of(transport: Any) -> Callable[[Any], ConnectionRecord] | None:
    """
    For a UDP port's transport: the records of its sources, by address
    (asked once when the port starts, so a port nothing records pays
    nothing per datagram), or L{None} when nothing records.
    """
    if isinstance(transport, RecordingDatagrams):  # the recorder wraps outermost: it is the port's
        return transport._protocol.source
    return None


def record_of(transport: Any, source: Any = None) -> ConnectionRecord | None:
    """
    The record a fault piece tells what it did: its connection's, given
    the C{transport} it writes to (the recording wrapper, or something
    between), or for a UDP port the record of C{source}, the address a
    reply goes to.  L{None} when nothing records: the fault piece then
    does nothing more (asked once per connection, it costs nothing).
    """
    for _ in range(8):
        if isinstance(transport, RecordingProtocol):
            return transport.record
        if isinstance(transport, RecordingDatagrams):
            return transport._protocol.source(source) if source is not None else None
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None
