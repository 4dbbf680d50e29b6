"""
Faults on a byte stream: one L{FaultyConnection} between a service's
protocol and its transport, for every connection of a service that has a
plan, so that faults set later reach it too; with nothing to do it passes
each call straight on.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import implementer

from echoapp._faults.plan import Draws, FaultPlan
from echoapp._faults.resets import FLUSH_CHECK, FLUSH_WAIT, kernel_unsent, reset, socket_of
from echoapp._faults.spec import OFF, Faults
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._limits.guard import half_closer
from echoapp._twisted import unsent

# Replies a connection may hold back (latency, bandwidth, slices) before it
# stops reading from its client, as a full write buffer would: a client
# that floods a slow peer pauses itself, it does not grow the server.
HELD_BYTES = 1 << 20
PIECES_PER_PASS = 1024  # per pass of a queue: slice=1 must not hold the reactor for seconds
PIECE_COST = 100  # bytes of memory a queued slice costs beyond its data (slice=1 is 100x)
# What a slowed reader holds before it stops reading: the client's own
# send buffer fills, as it would against a slow server.
HELD_READS = 64 * 1024


class Refused(HoldsDescriptor, Protocol):
    """
    C{refuse}: the connection is accepted, then closed at once; the service
    never sees it.  It holds a descriptor until it is gone, as any refusal.
    """

    def connectionMade(self) -> None:
        self.hold_descriptor()
        self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Any = None) -> None:
        self.release_descriptor()


class _Queue:
    """
    Bytes held until their time, as runs C{[at, data, offset, size, gap,
    rate, variation, random]}: a reply is queued whole and cut into pieces only as they go, so
    C{slice=1} costs the reply's bytes, not an object per byte (one 64 KiB
    reply cut as it was queued once held 6.6 MiB).
    """

    def __init__(self) -> None:
        self.items: deque[list[Any]] = deque()
        self.free_at = 0.0
        self.held = 0
        self.call: IDelayedCall | None = None

    def add(
        self, data: bytes, at: float, size: int, gap: float, rate: int, variation: int = 0, chance: Any = None
    ) -> None:
        """C{data}, due at C{at} in pieces of C{size} (give or take C{variation}, drawn from C{chance})."""
        at = max(at, self.free_at)
        self.items.append([at, data, 0, size, gap, rate, variation, chance])
        pieces = -(-len(data) // size)
        self.free_at = at + pieces * gap + (len(data) / rate if rate else 0.0)
        self.held += len(data) + PIECE_COST

    def due(self, now: float) -> bool:
        """Whether the first piece's time has come."""
        return bool(self.items) and self.items[0][0] <= now

    def take(self) -> bytes:
        """The first piece; its run's next piece is due a gap (and its bytes at the rate) later."""
        run = self.items[0]
        at, data, offset, size, gap, rate, variation, chance = run
        if variation:
            size = max(1, size + chance.randint(-variation, variation))
        piece = data[offset : offset + size]
        offset += len(piece)
        self.held -= len(piece)
        if offset >= len(data):
            self.items.popleft()
            self.held -= PIECE_COST
        else:
            run[0], run[2] = at + gap + (len(piece) / rate if rate else 0.0), offset
        return piece

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.items.clear()
        self.held = 0


class _FullnessTap:
    """The service's push producer, passing on what the transport says and telling the faults too."""

    def __init__(self, connection: FaultyConnection, producer: Any) -> None:
        self._connection = connection
        self._producer = producer

    def pauseProducing(self) -> None:
        self._connection.transport_full(True)
        self._producer.pauseProducing()

    def resumeProducing(self) -> None:
        self._connection.transport_full(False)
        self._producer.resumeProducing()

    def stopProducing(self) -> None:
        self._producer.stopProducing()


@implementer(IHalfCloseableProtocol)
class FaultyConnection(ProtocolWrapper):
    """
    One connection's faults, between the service's protocol and the
    transport.  Each event asks the connection's L{Draws} which faults apply
    now (conditions, C{fraction}, a change at run time); the faults that
    hold state (a stalled read, a reset timer) are re-applied when the plan
    says its faults changed.  A half-close from the client is passed on
    (L{IHalfCloseableProtocol}), so every reply still queued goes out.
    """

    factory: FaultyFactory
    transport: Any

    def __init__(
        self, factory: FaultyFactory, wrapped: Protocol, draws: Draws | Faults | None = None
    ) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self.draws = draws if isinstance(draws, Draws) else factory.plan.arrival()
        self._out = _Queue()
        self._full = False  # the transport says its buffer is full (L{transport_full})
        self._in = _Queue()
        self._sent = 0
        self._closing = ""  # "", "write" or "all": a close waiting for the queue
        self._write_closed = False
        self._resetting = False
        self._eof = False  # the client's FIN, waiting behind slowed reads
        self._lost = False
        self._pauses: set[str] = set()
        self._timers: set[IDelayedCall] = set()
        self._timed: dict[str, IDelayedCall] = {}  # reset_after, close_after
        self._since: dict[str, tuple[float, float]] = {}  # their values, and when each began to apply

    def faults(self) -> Faults:
        """The faults that apply to this connection now (L{OFF} for none)."""
        return self.draws.current() or OFF

    def _later(self, delay: float, call: Any, *args: Any) -> IDelayedCall:
        """A timer that is cancelled should the connection go first: none outlives it."""

        def run() -> None:
            self._timers.discard(timer)
            call(*args)

        timer = self.factory.plan.clock.callLater(max(0.0, delay), run)
        self._timers.add(timer)
        return timer

    def makeConnection(self, transport: Any) -> None:
        plan = self.factory.plan
        plan.listeners.add(self)
        faults = self.faults()
        super().makeConnection(transport)
        if faults.stall_handshake and ISSLTransport.providedBy(transport):
            # Below TLS: the ClientHello is never read, so no handshake ends.
            below: Any = getattr(transport, "transport", transport)
            below.pauseProducing()
        self.faults_changed()

    def faults_changed(self) -> None:
        """The plan's faults changed (or the connection opened): a stalled read and the timers follow."""
        if self._lost or self.transport is None:
            return
        faults = self.faults()
        self._pause("stall") if faults.stall == "read" else self._resume("stall")
        now = self.factory.plan.clock.seconds()
        for name, call in (("reset_after", self._timed_reset), ("close_after", self._timed_close)):
            timer = self._timed.pop(name, None)
            if timer is not None and timer.active():
                timer.cancel()
            after = getattr(faults, name)
            if after is None:
                self._since.pop(name, None)
                continue
            # Counted from when this value began to apply: the opening, or
            # the change that set it on an open connection (toxiproxy's
            # timeout and reset_peer count from the toxic's arrival).
            since = self._since.get(name)
            if since is None or since[0] != after:
                since = self._since[name] = (after, now)
            self._timed[name] = self._later(since[1] + after - now, call)

    def _timed_reset(self) -> None:
        reset(self.transport)

    def _timed_close(self) -> None:
        """C{close-after}: a FIN now (after the slow close); what is still queued is dropped."""
        self._out.cancel()
        self.holding(False)
        self._closing = "all"
        self._close_now()

    # --- reading: what the client sent, on its way to the service ---

    def _pause(self, reason: str) -> None:
        if not self._pauses and not self._lost:
            self.transport.pauseProducing()
        self._pauses.add(reason)

    def _resume(self, reason: str) -> None:
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses and not self._lost:
                self.transport.resumeProducing()

    def pauseProducing(self) -> None:
        """The service pauses reading (its own backpressure), beside any fault's pause."""
        self._pause("service")

    def resumeProducing(self) -> None:
        self._resume("service")

    def dataReceived(self, data: bytes) -> None:
        self.draws.note(data)
        faults = self.faults()
        if faults.stall == "read":
            self._pause("stall")
        if not faults.shapes_input() and not self._in.items:
            self.wrappedProtocol.dataReceived(data)
            return
        clock = self.factory.plan.clock
        at = clock.seconds() + self.draws.delay(faults, faults.read_latency)
        rate = faults.read_bandwidth
        self._in.add(data, at, max(1, rate // 20) if rate else max(1, len(data)), 0.0, rate)
        if self._in.held > HELD_READS:
            self._pause("reads")
        self._schedule(self._in, self._deliver)

    def _schedule(self, queue: _Queue, release: Any) -> None:
        if queue.call is None and queue.items:
            now = self.factory.plan.clock.seconds()
            queue.call = self._later(queue.items[0][0] - now, release)

    def _deliver(self) -> None:
        queue = self._in
        queue.call = None
        now = self.factory.plan.clock.seconds()
        budget = PIECES_PER_PASS
        while queue.due(now) and not self._lost and budget:
            budget -= 1
            self.wrappedProtocol.dataReceived(queue.take())
        if queue.held <= HELD_READS // 2:
            self._resume("reads")
        if queue.items:
            self._schedule(queue, self._deliver)
        elif self._eof and not self._lost:
            self._eof = False
            self.readConnectionLost()

    def readConnectionLost(self) -> None:
        """The client half-closed: the service hears it after what it has yet to read."""
        if self._in.items:
            self._eof = True
        elif IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.readConnectionLost()
        else:
            self.loseConnection()  # what the transport would do, but after the queued replies

    def writeConnectionLost(self) -> None:
        if IHalfCloseableProtocol.providedBy(self.wrappedProtocol):
            self.wrappedProtocol.writeConnectionLost()

    # --- writing: the service's replies, on their way to the client ---

    def write(self, data: bytes) -> None:
        if self._write_closed or self._lost:
            return
        faults = self.faults()
        if faults.stall == "answer":
            return
        if not faults.shapes_output() and not self._out.items:
            self.transport.write(data)
            return
        queue = self._out
        now = self.factory.plan.clock.seconds()
        size = faults.slice or (max(1, faults.bandwidth // 20) if faults.bandwidth else len(data)) or 1
        gap = faults.slice_delay if faults.slice else 0.0
        variation = faults.slice_variation if faults.slice else 0
        at = now + self.draws.delay(faults)
        queue.add(data, at, size, gap, faults.bandwidth, variation, self.draws.random)
        if queue.held > HELD_BYTES:
            self.holding(True)
        self._schedule(queue, self._release)

    def holding(self, over: bool) -> None:
        """
        The replies held passed L{HELD_BYTES} (C{over}), or fell to half of
        it: a service's client stops being read, as a full write buffer
        would stop it.  A proxy pauses its other side instead.
        """
        self._pause("held") if over else self._resume("held")

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Tapped on its way to the transport: while the transport is full no
        piece is sent either (under C{slice=1}, pieces would pile up in its
        buffer instead of in our bounded queue).
        """
        if streaming:
            producer = _FullnessTap(self, producer)
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self.transport_full(False)  # no one tells us any more: send, as before it registered

    def transport_full(self, full: bool) -> None:
        """The transport's buffer is full (or has room again): hold the pieces (or send them)."""
        self._full = full
        if not full and not self._lost:
            self._schedule(self._out, self._release)

    def _release(self) -> None:
        queue = self._out
        queue.call = None
        now = self.factory.plan.clock.seconds()
        budget = PIECES_PER_PASS
        while queue.due(now) and not self._lost and not self._write_closed and not self._full and budget:
            budget -= 1
            self._emit(queue.take())
        if self._write_closed:
            queue.items.clear()
            queue.held = 0
        if queue.held <= HELD_BYTES // 2:
            self.holding(False)
        if queue.items:
            if not self._full:  # else the transport says when it has room again
                self._schedule(queue, self._release)
        elif self._closing and not self._write_closed:
            self._close_now()

    def _emit(self, piece: bytes) -> None:
        faults = self.faults()
        limit = faults.reset_after_bytes
        if limit is None:
            limit = faults.half_close_after_bytes
        if limit is not None and self._sent + len(piece) >= limit:
            self.transport.write(piece[: max(0, limit - self._sent)])
            self._sent = limit
            self._write_closed = True
            if faults.reset_after_bytes is not None:
                self._resetting = True
                self._reset_when_flushed(self.factory.plan.clock.seconds() + FLUSH_WAIT)
            elif (close := half_closer(self.transport)) is not None:
                close()
            return
        if faults is not OFF:
            self._sent += len(piece)  # counted from when the faults begin
        self.transport.write(piece)

    def _reset_when_flushed(self, deadline: float) -> None:
        """
        C{reset-after-bytes}: the RST once the transport has sent every byte
        it holds (TLS and uvloop buffer a write; an abort drops the buffer).
        """
        if self._lost:
            return
        left = unsent(self.transport) or kernel_unsent(socket_of(self.transport))
        if left and self.factory.plan.clock.seconds() < deadline:
            self._later(FLUSH_CHECK, self._reset_when_flushed, deadline)
        else:
            reset(self.transport)

    # --- closing ---

    def loseConnection(self) -> None:
        """The service closes: after what is queued has gone, and after the slow close."""
        self._closing = "all"
        self.disconnecting = 1
        if not self._out.items:
            self._close_now()

    @property
    def loseWriteConnection(self) -> Any:
        """Offered only where the transport half-closes cleanly (L{half_closer}: not TLS)."""
        if half_closer(self.transport) is None:
            raise AttributeError("loseWriteConnection")
        return self._lose_write_connection

    def _lose_write_connection(self) -> None:
        self._closing = self._closing or "write"
        if not self._out.items:
            self._close_now()

    def _close_now(self) -> None:
        """
        Close on a later turn, never inside the service's own call: a close
        can end the connection before it returns (a TCP transport whose write
        side is shut), and a service that arms a timer after asking would
        leave that timer behind.
        """
        if self._write_closed and self._closing == "write":
            return
        close = self._close_all if self._closing == "all" else self._close_write
        self._later(self.faults().slow_close, close)

    def _close_all(self) -> None:
        if not self._resetting:  # a FIN now would beat the RST
            self.transport.loseConnection()

    def _close_write(self) -> None:
        if self._closing == "write" and not self._write_closed:
            self._write_closed = True
            (half_closer(self.transport) or self.transport.loseConnection)()

    def connectionLost(self, reason: Any = None) -> None:
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._out.cancel()
        self._in.cancel()
        self._lost = True
        self.factory.plan.listeners.discard(self)
        super().connectionLost(reason)


class FaultyFactory(WrappingFactory):
    """A service's factory with faults in front of every connection it builds."""

    noisy = False  # the service's own factory says when it starts and stops
    protocol: Any = FaultyConnection  # the proxy's connections add to it

    def __init__(self, wrapped: Factory, plan: FaultPlan) -> None:
        super().__init__(wrapped)
        self.plan = plan

    def startFactory(self) -> None:
        self.plan.start()
        super().startFactory()

    def buildProtocol(self, addr: Any) -> Any:
        draws = self.plan.arrival()
        faults = draws.current()
        if faults is not None and faults.refuse:
            return Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped, draws)

    def __getattr__(self, name: str) -> Any:
        """What the service asks of its factory (connections, stats, drain) is the wrapped one's."""
        return getattr(self.wrappedFactory, name)
