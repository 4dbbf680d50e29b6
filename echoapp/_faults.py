"""
Network faults on demand, for people testing their clients against echoapp:
latency, bandwidth, slicing, resets, half-closes, slow closes, stalls and
refusals on the TCP services; loss, duplication and reordering on the UDP
greeter.  Every random choice comes from one seeded generator, so a failing
test reproduces exactly with the seed it printed.

The faults wrap a service's factory or datagram protocol, as
C{twisted.protocols.policies} wrappers do: with no fault configured nothing
is wrapped, and the path a request takes is the one the benchmark measures.
"""

from __future__ import annotations

import random
import socket
import struct
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ISSLTransport
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from echoapp import _fault_syntax as syntax
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._twisted import LazyReactor

_duration, _size, _probability = syntax.duration, syntax.size, syntax.probability
_stall, _flag, _seed = syntax.stall, syntax.flag, syntax.seed

# Replies a connection may hold back (latency, bandwidth, slices) before it
# stops reading from its client, as a full write buffer would: a client
# that floods a slow peer pauses itself, it does not grow the server.
HELD_BYTES = 1 << 20
PIECE_COST = 100  # bytes of memory a queued chunk costs beyond its data
PIECES_PER_PASS = 1024  # per pass of the queue: slice=1 must not hold the reactor for seconds


@dataclass(frozen=True)
class Faults:
    """
    What goes wrong, and for how many connections.  Durations in seconds,
    sizes in bytes; C{None} and zeros mean the fault is off.
    """

    latency: float = field(default=0.0, metadata={"parse": _duration, "help": "delay before each reply"})
    jitter: float = field(default=0.0, metadata={"parse": _duration, "help": "latency varies by up to this"})
    bandwidth: int = field(default=0, metadata={"parse": _size, "help": "bytes per second the server sends"})
    slice: int = field(default=0, metadata={"parse": _size, "help": "replies sent in writes of this size"})
    slice_delay: float = field(default=0.0, metadata={"parse": _duration, "help": "pause between slices"})
    reset_after_bytes: int | None = field(
        default=None, metadata={"parse": _size, "help": "RST after N bytes"}
    )
    reset_after: float | None = field(default=None, metadata={"parse": _duration, "help": "RST after a time"})
    half_close_after_bytes: int | None = field(
        default=None, metadata={"parse": _size, "help": "FIN after N bytes; reading goes on"}
    )
    slow_close: float = field(default=0.0, metadata={"parse": _duration, "help": "delay every close"})
    stall: str = field(
        default="", metadata={"parse": _stall, "help": "read: never read; answer: never reply"}
    )
    refuse: bool = field(default=False, metadata={"parse": _flag, "help": "accept, then close at once"})
    stall_handshake: bool = field(
        default=False, metadata={"parse": _flag, "help": "ssl: listeners never finish the handshake"}
    )
    loss: float = field(default=0.0, metadata={"parse": _probability, "help": "UDP: drop a reply"})
    duplicate: float = field(default=0.0, metadata={"parse": _probability, "help": "UDP: send a reply twice"})
    reorder: float = field(
        default=0.0, metadata={"parse": _probability, "help": "UDP: hold a reply until after the next"}
    )
    fraction: float = field(
        default=1.0,
        metadata={"parse": _probability, "help": "share of connections that get the faults"},
    )
    seed: int | None = field(default=None, metadata={"parse": _seed, "help": "for every random choice"})

    @classmethod
    def parse(cls, text: str, base: Faults | None = None) -> Faults:
        """
        C{latency=50ms,jitter=10ms} (keys with C{-} or C{_}), on top of
        C{base}.

        @raise ValueError: with a one-line reason naming the key.
        """
        known = {f.name: f for f in fields(cls)}
        changes: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, _, value = item.partition("=")
            name = key.strip().replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown fault {key!r} (known: {', '.join(cls.names())})")
            try:
                changes[name] = known[name].metadata["parse"](value.strip())
            except ValueError as error:
                raise ValueError(f"fault {key}: {error}") from None
        return replace(base or cls(), **changes)

    @classmethod
    def names(cls) -> list[str]:
        return [f.name.replace("_", "-") for f in fields(cls)]

    def __bool__(self) -> bool:
        return any(
            getattr(self, f.name) != f.default for f in fields(self) if f.name not in ("fraction", "seed")
        )

    def shapes_output(self) -> bool:
        """
        Whether any fault delays, slows, cuts or stops the bytes sent, so the
        stream wrapper is needed at all.
        """
        return bool(
            self.latency
            or self.jitter
            or self.bandwidth
            or self.slice
            or self.reset_after_bytes is not None
            or self.half_close_after_bytes is not None
        )

    def __str__(self) -> str:
        """As C{--fault} takes it, so a logged line can be pasted back."""
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value == f.default:
                continue
            if f.metadata["parse"] is _duration:
                value = f"{value * 1000:g}ms"
            elif value is True:
                shown.append(f.name.replace("_", "-"))
                continue
            shown.append(f"{f.name.replace('_', '-')}={value}")
        return ",".join(shown) or "none"


class FaultPlan:
    """
    The faults a service applies now, and the seeded generator behind every
    random choice; tests change C{faults} while the service runs (new
    connections and later replies see the change).
    """

    def __init__(self, faults: Faults, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self.seed = faults.seed if faults.seed is not None else random.SystemRandom().randrange(1 << 32)
        self.random = random.Random(self.seed)
        self.faults = faults

    clock: IReactorTime = LazyReactor()  # type: ignore[assignment]  # options are parsed before the reactor is installed

    def applies(self) -> bool:
        """Does a new connection (or a datagram) get the faults?"""
        faults = self.faults
        return bool(faults) and (faults.fraction >= 1 or self.random.random() < faults.fraction)

    def delay(self) -> float:
        faults = self.faults
        if not faults.jitter:
            return faults.latency
        return max(0.0, faults.latency + self.random.uniform(-faults.jitter, faults.jitter))


def reset(transport: Any) -> None:
    """Close with an RST, not a FIN: SO_LINGER 0, then abort."""
    try:
        transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except Exception:  # not a socket (a test transport): the abort alone
        pass
    transport.abortConnection()


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


class FaultyConnection(ProtocolWrapper):
    """One connection's faults, between the service's protocol and the transport."""

    factory: FaultyFactory
    transport: Any
    _pump: IDelayedCall | None = None
    _timer: IDelayedCall | None = None

    def __init__(self, factory: FaultyFactory, wrapped: Protocol, faults: Faults) -> None:
        super().__init__(factory, wrapped)  # type: ignore[arg-type]
        self._faults = faults
        # Replies not yet sent, whole: [when the next piece is due, reply, bytes of it sent].
        self._queue: deque[list[Any]] = deque()
        self._free_at = 0.0
        self._sent = 0
        self._closing = ""  # "", "write" or "all": a close waiting for the queue
        self._write_closed = False
        self._lost = False
        self._held_bytes = 0
        self._reading_paused = False
        self._transport_full = False
        self._closer: IDelayedCall | None = None

    def makeConnection(self, transport: Any) -> None:
        faults, plan = self._faults, self.factory.plan
        super().makeConnection(transport)
        if faults.stall_handshake and ISSLTransport.providedBy(transport):
            # Below TLS: the ClientHello is never read, so no handshake ends.
            below: Any = getattr(transport, "transport", transport)
            below.pauseProducing()
        if faults.stall == "read":
            transport.pauseProducing()
        if faults.reset_after is not None:
            self._timer = plan.clock.callLater(faults.reset_after, reset, transport)

    def write(self, data: bytes) -> None:
        faults = self._faults
        if faults.stall == "answer" or self._write_closed:
            return
        if not faults.shapes_output():
            self.transport.write(data)
            return
        self._enqueue(data)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Tapped on its way to the transport: while the transport is full no
        piece is sent either (under C{slice=1}, some 40 bytes of queue a byte).
        """
        if streaming:
            producer = _FullnessTap(self, producer)
        super().registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        super().unregisterProducer()
        self.transport_full(False)  # no one tells us any more: send, as before it registered

    def transport_full(self, full: bool) -> None:
        self._transport_full = full
        if not full and not self._lost:
            self._schedule()

    def _piece_size(self, data: bytes) -> int:
        faults = self._faults
        return faults.slice or (max(1, faults.bandwidth // 20) if faults.bandwidth else len(data)) or 1

    def _after(self, piece: int) -> float:
        """How long after a piece of C{piece} bytes the next may go."""
        faults = self._faults
        return (faults.slice_delay if faults.slice else 0.0) + (
            piece / faults.bandwidth if faults.bandwidth else 0.0
        )

    def _enqueue(self, data: bytes) -> None:
        """
        A reply is queued whole and cut only as it is sent (cut up front, 64
        KiB under C{slice=1} was 6.6 MiB of pieces); the bound is checked
        before it is queued: at most L{HELD_BYTES} and one reply are held.
        """
        plan = self.factory.plan
        now = plan.clock.seconds()
        at = max(now + plan.delay(), self._free_at)
        if self._held_bytes + len(data) > HELD_BYTES:  # again, too, should the service's producer resume it
            self._reading_paused = True
            self.transport.pauseProducing()
        self._queue.append([at, data, 0])
        size = self._piece_size(data)
        pieces, last = divmod(len(data), size)
        self._free_at = at + pieces * self._after(size) + (self._after(last) if last else 0.0)
        self._held_bytes += len(data) + PIECE_COST
        self._schedule()

    def _schedule(self) -> None:
        if self._pump is None and self._queue:
            clock = self.factory.plan.clock
            self._pump = clock.callLater(max(0.0, self._queue[0][0] - clock.seconds()), self._release)

    def _release(self) -> None:
        self._pump = None
        now = self.factory.plan.clock.seconds()
        queue = self._queue
        budget = PIECES_PER_PASS
        while queue and queue[0][0] <= now and not self._lost and not self._transport_full and budget:
            budget -= 1
            entry = queue[0]
            at, data, offset = entry
            size = self._piece_size(data)
            piece = data[offset : offset + size]
            offset += len(piece)
            if offset >= len(data):
                queue.popleft()
                self._held_bytes -= PIECE_COST
            else:
                entry[0], entry[2] = at + self._after(len(piece)), offset
            self._held_bytes -= len(piece)
            self._emit(piece)
            if self._write_closed:
                queue.clear()
        if self._reading_paused and self._held_bytes <= HELD_BYTES // 2 and not self._lost:
            self._reading_paused = False
            if self._faults.stall != "read":
                self.transport.resumeProducing()
        if self._queue:
            if not self._transport_full:  # else it says when it has room again
                self._schedule()
        elif self._closing:
            self._close_now()

    def _emit(self, piece: bytes) -> None:
        faults = self._faults
        limit = faults.reset_after_bytes
        if limit is None:
            limit = faults.half_close_after_bytes
        if limit is not None and self._sent + len(piece) >= limit:
            self.transport.write(piece[: limit - self._sent])
            self._sent = limit
            self._write_closed = True
            if faults.reset_after_bytes is not None:
                reset(self.transport)
            else:
                self.transport.loseWriteConnection()
            return
        self._sent += len(piece)
        self.transport.write(piece)

    def loseConnection(self) -> None:
        """The service closes: after what is queued has gone, and after the slow close."""
        self._closing = "all"
        self.disconnecting = 1
        if not self._queue:
            self._close_now()

    def loseWriteConnection(self) -> None:
        self._closing = self._closing or "write"
        if not self._queue:
            self._close_now()

    def _close_now(self) -> None:
        close = (
            self.transport.loseConnection if self._closing == "all" else self.transport.loseWriteConnection
        )
        if self._write_closed and self._closing == "write":
            return
        delay = self._faults.slow_close
        if delay:
            if self._closer is None:  # cancelled with the connection: it held a dead transport for the delay
                self._closer = self.factory.plan.clock.callLater(delay, close)
        else:
            close()

    def connectionLost(self, reason: Any = None) -> None:
        for call in (self._pump, self._timer, self._closer):
            if call is not None and call.active():
                call.cancel()
        self._pump = self._timer = self._closer = None
        self._queue.clear()
        self._lost = True
        super().connectionLost(reason)


class FaultyFactory(WrappingFactory):
    """A service's factory with faults in front of every connection it builds."""

    noisy = False  # the service's own factory says when it starts and stops

    def __init__(self, wrapped: Factory, plan: FaultPlan) -> None:
        super().__init__(wrapped)
        self.plan = plan

    def buildProtocol(self, addr: Any) -> Any:
        faults = self.plan.faults if self.plan.applies() else Faults()
        if faults.refuse:
            return Refused()
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        if not faults:
            return wrapped  # this connection is spared: the service's protocol, unwrapped
        return FaultyConnection(self, wrapped, faults)

    def __getattr__(self, name: str) -> Any:
        """What the service asks of its factory (connections, stats, drain) is the wrapped one's."""
        return getattr(self.wrappedFactory, name)


class FaultyDatagrams:
    """The UDP greeter's transport with loss, duplication and reordering of replies."""

    def __init__(self, transport: Any, plan: FaultPlan) -> None:
        self._transport = transport
        self._plan = plan
        self._held: tuple[bytes, Any] | None = None

    def write(self, datagram: bytes, addr: Any = None) -> None:
        plan = self._plan
        faults = plan.faults
        if not plan.applies():
            self._transport.write(datagram, addr)
            return
        if faults.loss and plan.random.random() < faults.loss:
            return
        copies = 2 if faults.duplicate and plan.random.random() < faults.duplicate else 1
        if self._held is None and faults.reorder and plan.random.random() < faults.reorder:
            self._held = (datagram, addr)  # sent after the next reply
            return
        for _ in range(copies):
            self._transport.write(datagram, addr)
        held, self._held = self._held, None
        if held is not None:
            self._transport.write(*held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class FaultyDatagramProtocol(DatagramProtocol):
    """Wraps a datagram protocol so that its replies go through L{FaultyDatagrams}."""

    noisy = False

    def __init__(self, wrapped: DatagramProtocol, plan: FaultPlan) -> None:
        self.wrapped = wrapped
        self.plan = plan

    def makeConnection(self, transport: Any) -> None:
        super().makeConnection(transport)
        self.wrapped.makeConnection(FaultyDatagrams(transport, self.plan))  # type: ignore[arg-type]

    def doStop(self) -> None:
        self.wrapped.doStop()
        super().doStop()

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.wrapped.datagramReceived(datagram, addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)
