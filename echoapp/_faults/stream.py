"""
Faults on a byte stream: one L{FaultyConnection} between a service's
protocol and its transport, for every connection of a service (or proxy)
that has faults, so that faults set later reach it too.  Whether none
apply to it (L{FaultyConnection.quiet}), or the same apply to every chunk,
is worked out once per change of its source, not per chunk: while none do
and nothing is held, its chunks pass straight on with no method of the
wrapper in the way (L{FaultyConnection.straighten}: a proxy's stream with
no toxic, or a connection a toxic spares, costs about a call per chunk),
and while the same do, a chunk goes to the piece that shapes it; each
concern is its own piece, as C{twisted.protocols.policies} keeps one
concern per wrapper: L{Sending} (what is sent), L{Reading} (what is read),
L{Closing} (how it closes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from echoapp._faults.closing import CloseState, Closing, Refused
from echoapp._faults.notes import switched
from echoapp._faults.plan import Draws, FaultSource, Shape
from echoapp._faults.reading import Reading
from echoapp._faults.sending import Sending
from echoapp._faults.spec import OFF, Faults
from echoapp._limits.guard import half_closer
from echoapp._record import ConnectionRecord, record_of


class _FullnessTap:
    """The service's push producer, passing on what the transport says and telling the faults too."""

    def __init__(self, sending: Sending, producer: Any) -> None:
        self._sending = sending
        self._producer = producer

    def pauseProducing(self) -> None:
        self._sending.transport_full(True)
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._sending.transport_full(False)
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


def _passing_reads(draws: Draws, service: Any) -> Callable[[bytes], None]:
    """A quiet connection's C{dataReceived}: lines counted (for an C{after-messages} yet to come), then on."""

    def dataReceived(data: bytes) -> None:
        draws.messages += data.count(b"\n")
        service.dataReceived(data)

    return dataReceived


@implementer(IHalfCloseableProtocol)
class FaultyConnection(ProtocolWrapper):
    """
    One connection's faults, between the service's protocol and the
    transport: the hub its three pieces share (the transport, the clock,
    timers that none outlives the connection, the reasons reading is
    paused).  A half-close from the client is passed on
    (L{IHalfCloseableProtocol}), so every reply still held goes out.
    """

    factory: FaultyFactory
    transport: Any

    def __init__(self, factory: FaultyFactory, wrapped: Protocol, draws: Draws | None = None) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self.source: FaultSource = factory.plan
        self.clock = self.source.clock
        self.wakeups = self.source.wakeups
        self.draws = draws if draws is not None else self.source.arrival()
        self._timers: set[IDelayedCall] = set()
        self._pauses: set[str] = set()
        self._producer: Any = None  # kept where what is held pauses the producer (a proxy's other side)
        self._producer_paused = False
        self.record: ConnectionRecord | None = None  # the wire record, where one is kept (else no cost)
        # No fault applies until the source changes, and no condition needs
        # to see the bytes: set once per change (L{_quieten}), then L{straighten}.
        self.quiet = False
        # The faults until the next change, where no condition switches them
        # (L{Draws.settled}), and whether reads then pass as they come.
        self._settled: Shape | None = None
        self._reads_pass = False
        self.sending = Sending(self)
        self.reading = Reading(self)
        self.closing = Closing(self)
        # What straighten puts in place, made once, not at each change.
        self._straight_reads = _passing_reads(self.draws, wrapped)
        self._settled_write = self.sending.write_settled

    def faults(self) -> Faults:
        """The faults that apply to this connection now (L{OFF} for none)."""
        shape = self.draws.current()
        return shape.faults if shape is not None else OFF

    def later(self, delay: float, call: Any, *args: Any) -> IDelayedCall:
        """A timer that is cancelled should the connection go first: none outlives it."""

        def run() -> None:
            self._timers.discard(timer)
            call(*args)

        timer = self.clock.callLater(max(0.0, delay), run)
        self._timers.add(timer)
        return timer

    def makeConnection(self, transport: Any) -> None:
        self.source.watch(self)
        record = self.record = record_of(transport)  # the recorder wraps outermost: asked once
        if record is not None:
            self.draws.watch(lambda on, faults: record.fault("condition", switched(on, faults)))
        shape = self.draws.current()
        # The timers' opening first: the service (or a proxy's early bytes)
        # may write inside connectionMade, and that write is the first chunk.
        self.closing.changed(shape)
        super().makeConnection(transport)
        if shape is not None and shape.faults.stall_handshake and ISSLTransport.providedBy(transport):
            # Below TLS: the ClientHello is never read, so no handshake ends.
            below: Any = getattr(transport, "transport", transport)
            below.pauseProducing()
            if record is not None:
                record.fault("stall", "stall begun: the TLS handshake is never read")
        self._follow()

    def faults_changed(self) -> None:
        """The source's faults changed: a stalled read and the timers follow, and the record says so."""
        if self.record is not None and self.closing.state is not CloseState.LOST:
            self.record.fault("change", self.source.change)
        self._follow()

    def _quieten(self) -> None:
        draws = self.draws
        self.quiet = draws.quiet()
        settled = self._settled = draws.settled()
        self.sending.settle(settled)
        self._reads_pass = self.quiet or (
            settled is not None and settled.passes_reads and draws.plan.match is None
        )
        self.straighten()

    def straighten(self) -> None:
        """
        Each chunk asks only what may differ from the one before: while no
        fault applies and nothing is held, C{write} is the transport's (while
        it is open); while the same faults apply to every chunk (no
        condition switches them), C{write} is the sending piece's own for
        them; and while reads pass as they come (no fault slows, stalls or
        waits on them), C{dataReceived} is a function that counts lines and
        hands the chunk on.  A method of this wrapper costs more than the
        work: C{ProtocolWrapper.__getattr__} slows every attribute it reads.
        Every change that could end that (the faults, the close, held bytes
        gone) comes here again.
        """
        found = self.__dict__
        if self.transport is None:
            found.pop("write", None)
            found.pop("dataReceived", None)
            return
        if self.quiet and self.sending.passing and self.closing.state is CloseState.OPEN:
            found["write"] = self.transport.write
        elif self._settled is not None and self.closing.state is CloseState.OPEN:
            found["write"] = self._settled_write
        else:
            found.pop("write", None)
        if self._reads_pass and self.reading.passing:
            found["dataReceived"] = self._straight_reads
        else:
            found.pop("dataReceived", None)

    def _follow(self) -> None:
        """The faults changed (or the connection opened): a stalled read and the timers follow."""
        self._quieten()
        if self.closing.state is CloseState.LOST or self.transport is None:
            return
        shape = self.draws.current()
        self.reading.changed(shape)
        self.closing.changed(shape)

    # --- reading ---

    def pause(self, reason: str) -> None:
        """Stop reading for C{reason} (a stall, held bytes, the service) until every reason is gone."""
        if not self._pauses and self.closing.state is not CloseState.LOST:
            self.transport.pauseProducing()
        if reason == "stall" and reason not in self._pauses and self.record is not None:
            self.record.fault("stall", "stall begun: the client's bytes are not read")
        self._pauses.add(reason)

    def resume(self, reason: str) -> None:
        """C{reason} is gone; reading goes on once no other is left."""
        if reason in self._pauses:
            self._pauses.discard(reason)
            if reason == "stall" and self.record is not None:
                self.record.fault("stall", "stall ended: reading again")
            if not self._pauses and self.closing.state is not CloseState.LOST:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """The service pauses reading (its own backpressure), beside any fault's pause."""
        self.pause("service")

    def resumeProducing(self) -> None:
        self.resume("service")

    def dataReceived(self, data: bytes) -> None:
        """A chunk while faults apply or reads are held (a quiet connection's is L{_passing_reads})."""
        draws = self.draws
        draws.note(data)
        shape = draws.current()
        if shape is None and self.reading.passing:
            self.wrappedProtocol.dataReceived(data)
        else:
            self.reading.received(data, shape)

    def readConnectionLost(self) -> None:
        self.reading.finished()

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    # --- writing ---

    def write(self, data: bytes) -> None:
        """A write while faults apply, or behind what is held (a quiet connection's is the transport's)."""
        shape = self.draws.current()
        if shape is None and self.sending.passing:
            self.transport.write(data)
        else:
            self.sending.write(data, shape)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def hold(self, over: bool) -> None:
        """
        What is held passed L{HELD_BYTES} (C{over}), or fell to half of it:
        a service's client stops being read, as a full write buffer would
        stop it; a proxy (C{factory.pauses_producer}) pauses its other side.
        """
        if not self.factory.pauses_producer:
            self.pause("held") if over else self.resume("held")
        elif self._producer is not None and over != self._producer_paused:
            self._producer_paused = over
            (self._producer.pauseProducing if over else self._producer.resumeProducing)()

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Tapped on its way to the transport: while the transport is full no
        piece is sent either (under C{slice=1}, pieces would pile up in its
        buffer instead of in the bounded queue).
        """
        self._producer = producer
        if streaming:
            producer = _FullnessTap(self.sending, producer)
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._producer_paused = False
        super().unregisterProducer()
        self.sending.transport_full(False)  # no one tells us any more: send, as before it registered

    # --- closing ---

    def loseConnection(self) -> None:
        """The service closes: after what is held has gone, and after the slow close."""
        self.disconnecting = 1
        self.closing.lose()

    @property
    def loseWriteConnection(self) -> Any:
        """Offered only where the transport half-closes cleanly (L{half_closer}: not TLS)."""
        if half_closer(self.transport) is None:
            raise AttributeError("loseWriteConnection")
        return self.closing.lose_write

    def connectionLost(self, reason: Any = None) -> None:
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self.closing.lost()
        self.sending.queue.drop()
        self.reading.drop()
        self.source.unwatch(self)
        super().connectionLost(reason)


class FaultyFactory(WrappingFactory):
    """
    A service's factory with faults in front of every connection it builds,
    from one L{FaultSource}.  C{pauses_producer}: what the faults hold
    pauses the connection's producer (a proxy's other side) rather than its
    own reads.
    """

    noisy = False  # the service's own factory says when it starts and stops
    protocol: Any = FaultyConnection

    def __init__(self, wrapped: Factory, plan: FaultSource, pauses_producer: bool = False) -> None:
        super().__init__(wrapped)
        self.plan = plan
        self.pauses_producer = pauses_producer

    def startFactory(self) -> None:
        self.plan.start()
        super().startFactory()

    def buildProtocol(self, addr: Any) -> Any:
        draws = self.plan.arrival()
        shape = draws.current()
        if shape is not None and shape.faults.refuse:
            return Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped, draws)

    def __getattr__(self, name: str) -> Any:
        """What the service asks of its factory (connections, stats, drain) is the wrapped one's."""
        return getattr(self.wrappedFactory, name)
