"""
Protections that keep one client from costing the server more than its
share: backpressure, connection limits, timeouts with escalation, graceful
drain, the process-wide file-descriptor ceiling, and token buckets.

The TCP protocols share their connection bookkeeping through
L{GuardedProtocol} and L{GuardedFactory}, so every rule lives here once.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp.metrics import TCPStats

log = Logger()


@implementer(IPushProducer)
class ReadPauser:
    """
    Backpressure for a protocol that writes in answer to what it reads.

    Registered as the streaming producer of its own transport: when the
    transport's write buffer fills (a client that sends but never reads), the
    transport asks us to pause and we stop reading from the socket, so the
    kernel's buffers, not the server's memory, absorb the rest.
    """

    def __init__(self, transport: Any) -> None:
        self._transport = transport

    def pauseProducing(self) -> None:
        self._transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._transport.resumeProducing()

    def stopProducing(self) -> None:
        """The connection is going away; there is nothing of ours to stop."""


def pause_reading_when_full(transport: Any) -> None:
    """
    C{transport} is any transport that is both a consumer and a push
    producer (TCP, UNIX, TLS, the test transports); no one interface says so.
    """
    transport.registerProducer(ReadPauser(transport), True)


# --- file descriptors -------------------------------------------------------

# Descriptors kept free for listening sockets, log files and the like.
FD_RESERVE = 16
_fd_ceiling: int | None = None
_open_connections = 0


def raise_fd_limit() -> int:
    """
    Raise the soft RLIMIT_NOFILE to the hard limit, once, and log the figure:
    the connection ceiling below follows from it.
    """
    global _fd_ceiling
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if _fd_ceiling is None:
        log.info(
            "File descriptor limit {limit}; at most {ceiling} connections",
            limit=soft,
            ceiling=soft - FD_RESERVE,
        )
    _fd_ceiling = max(soft - FD_RESERVE, 1)
    return soft


def fd_ceiling() -> int:
    """How many connections this process may hold before accept() would fail."""
    if _fd_ceiling is None:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        return max(soft - FD_RESERVE, 1)
    return _fd_ceiling


# --- TCP connections -------------------------------------------------------


@dataclass(frozen=True)
class TCPLimits:
    """Per-service connection limits and timeouts, in connections and seconds."""

    max_connections: int = 10_000
    max_per_peer: int = 100
    idle_timeout: float = 300.0
    line_timeout: float = 30.0
    session_timeout: float = 3600.0
    close_grace: float = 5.0


@dataclass(frozen=True)
class UDPLimits:
    """
    Replies per second per source address and for the whole port, and how
    many sources the rate table remembers.
    """

    rate: float = 50.0
    burst: int = 100
    global_rate: float = 10_000.0
    max_sources: int = 65_536


def peer_key(addr: IAddress | None) -> str:
    """Connections are counted per source host; UNIX peers share one key."""
    host = getattr(addr, "host", None)
    return str(host) if host is not None else "local"


# Why a connection is refused, and what its client is told.
REFUSALS = {
    "draining": "server shutting down",
    "fd": "server busy",
    "limit": "too many connections",
    "per-peer": "too many connections from your address",
}
# Why a connection timed out, and what a greeter client is told.
TIMEOUTS = {"idle": "idle timeout", "line": "line timeout", "session": "session time limit"}


class Connections:
    """
    One service's open connections: admission against its limits and the
    process-wide descriptor ceiling, and the drain at shutdown.
    """

    def __init__(self, limits: TCPLimits) -> None:
        self.limits = limits
        self.live: set[GuardedProtocol] = set()
        self.per_peer: dict[str, int] = {}
        self._idle_waiters: list[Deferred[None]] = []
        self.draining = False

    def refusal(self, peer: str) -> str | None:
        """Why (a key of L{REFUSALS}) a new connection from C{peer} is refused, if it is."""
        if self.draining:
            reason = "draining"
        elif _open_connections >= fd_ceiling():
            reason = "fd"
        elif len(self.live) >= self.limits.max_connections:
            reason = "limit"
        elif self.per_peer.get(peer, 0) >= self.limits.max_per_peer:
            reason = "per-peer"
        else:
            return None
        return reason

    def add(self, protocol: GuardedProtocol) -> None:
        global _open_connections
        _open_connections += 1
        self.live.add(protocol)
        self.per_peer[protocol.peer] = self.per_peer.get(protocol.peer, 0) + 1

    def remove(self, protocol: GuardedProtocol) -> None:
        global _open_connections
        if protocol not in self.live:
            return
        _open_connections -= 1
        self.live.discard(protocol)
        remaining = self.per_peer[protocol.peer] - 1
        if remaining:
            self.per_peer[protocol.peer] = remaining
        else:
            del self.per_peer[protocol.peer]
        if not self.live:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    def drain(self) -> Deferred[None]:
        """
        Say goodbye to every client and close; stragglers are aborted after
        the grace period.  Fires once every connection is gone.
        """
        self.draining = True
        if not self.live:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idle_waiters.append(waiter)
        for protocol in list(self.live):
            protocol.shutdown()
        return waiter


# A deadline this close is met: re-arming a timer for a rounding error would
# only fire it again a moment later.
_SLACK = 1e-3


class Deadlines:
    """
    The idle and session deadlines of a listener's connections, checked in
    one-second slots: each slot is one timer for every connection due in
    that second.  A timer per connection would cost ~0.5 KiB each (10,000
    idle connections hold 5 MiB of them); a slot entry costs a set member.
    A deadline is therefore met up to a second late, never early.  Activity
    moves no timer: each connection notes the time, and when its slot comes
    it checks, and either closes or takes a later slot.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._slots: dict[int, set[Any]] = {}
        self._timers: dict[int, IDelayedCall] = {}

    def add(self, protocol: Any, when: float) -> int:
        """Check C{protocol} at C{when}, rounded up to a whole second; the slot is the key to L{remove}."""
        slot = math.ceil(when - _SLACK)
        members = self._slots.get(slot)
        if members is None:
            members = self._slots[slot] = set()
            delay = max(0.0, slot - self._clock.seconds())
            self._timers[slot] = self._clock.callLater(delay, self._due, slot)
        members.add(protocol)
        return slot

    def remove(self, protocol: Any, slot: int) -> None:
        members = self._slots.get(slot)
        if members is None:
            return
        members.discard(protocol)
        if not members:
            del self._slots[slot]
            self._timers.pop(slot).cancel()

    def _due(self, slot: int) -> None:
        del self._timers[slot]
        for protocol in self._slots.pop(slot, ()):
            protocol.check_deadlines()

    def __len__(self) -> int:
        return sum(map(len, self._slots.values()))


class GuardedProtocol(Protocol):
    """
    What every echoapp TCP connection shares: backpressure, its place in the
    service's L{Connections}, the idle and session timers, and closing that
    escalates from C{loseConnection} to C{abortConnection}.

    Subclasses call L{activity} when data arrives and say what a client is
    told on a timeout or at shutdown (L{notice}).
    """

    factory: GuardedFactory
    transport: Any
    peer = "local"
    _closing = False
    _lingering = False
    _abort: IDelayedCall | None = None
    _slot: int | None = None

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    _flow_controlled = False

    def connectionMade(self) -> None:
        limits = self.factory.limits
        self.stats = self.factory.stats
        self.stats.accepted += 1
        self.stats.open += 1
        log.info("Connection from {peer} to {service}", peer=self.peer, service=self.stats.service)
        self.factory.connections.add(self)
        self._last_seen = now = self.factory.now()
        self._session_end = now + limits.session_timeout
        self._slot = self.factory.deadlines.add(self, now + min(limits.idle_timeout, limits.session_timeout))

    def activity(self) -> None:
        """
        Data arrived.  Backpressure starts here rather than at connect:
        under TLS, a write before the handshake is done (the banner) pauses
        the producer, and pausing reads then would stall the handshake for
        good; by the time a client's data arrives the handshake is over.

        No timer is moved on every chunk (that was most of the cost of a
        request); the time is noted, and L{check_deadlines} reads it.
        """
        if not self._flow_controlled:
            self._flow_controlled = True
            pause_reading_when_full(self.transport)
        self._last_seen = self.factory.now()

    def check_deadlines(self) -> None:
        """
        Called by L{Deadlines} at (or just after) the nearer of the idle and
        session deadlines: close on one that has passed, or wait for what
        is left.
        """
        now = self.factory.now()
        session_left = self._session_end - now
        idle_left = self._last_seen + self.factory.limits.idle_timeout - now
        if session_left <= _SLACK:
            self._slot = None
            self.timedOut("session")
        elif idle_left <= _SLACK:
            self._slot = None
            self.timedOut("idle")
        else:
            self._slot = self.factory.deadlines.add(self, now + min(idle_left, session_left))

    def notice(self, reason: str) -> bytes:
        """The line a client gets before the server closes on it."""
        return b""

    def timedOut(self, kind: str) -> None:
        """C{kind} is a key of L{TIMEOUTS}."""
        log.info("Closing {peer}: {reason}", peer=self.peer, reason=TIMEOUTS[kind])
        self.stats.timeouts[kind] += 1
        self.close(self.notice(TIMEOUTS[kind]))

    def shutdown(self) -> None:
        self.close(self.notice("server shutting down"))

    def close(self, last_words: bytes = b"", linger: bool = False) -> None:
        """
        Close cleanly (flushing what is buffered), and abort if the client
        has not let go when the grace period ends.

        With C{linger}, for a client that is still sending (an oversized
        line): closing a socket with unread input makes the kernel send a
        reset, which can destroy C{last_words} before the client reads
        them.  So only the write side is closed; what the client still
        sends is read and dropped (the subclass ignores it once finished)
        until it closes its side (L{close} is called again from
        C{readConnectionLost}) or the grace period ends.
        """
        if self._closing:
            if self._lingering:
                self.transport.loseConnection()
            return
        self._closing = True
        if last_words:
            self.transport.write(last_words)
            self.stats.bytes_out += len(last_words)
        if self._flow_controlled:
            # A registered producer would hold a TLS close open until it left.
            self.transport.unregisterProducer()
        half_close = getattr(self.transport, "loseWriteConnection", None)  # TLS has none
        if linger and half_close is not None and IHalfCloseableProtocol.providedBy(self):
            self._lingering = True
            self.transport.resumeProducing()  # reads may be paused by backpressure
            half_close()
        else:
            self.transport.loseConnection()
        self._abort = self.clock.callLater(self.factory.limits.close_grace, self.transport.abortConnection)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._slot is not None:
            self.factory.deadlines.remove(self, self._slot)
            self._slot = None
        if self._abort is not None and self._abort.active():
            self._abort.cancel()
        self.stats.open -= 1
        self.factory.connections.remove(self)
        log.info("Connection from {peer} to {service} closed", peer=self.peer, service=self.stats.service)


class Refusal(Protocol):
    """Says why in one line, then closes: over a limit, or shutting down."""

    transport: Any

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def connectionMade(self) -> None:
        self.transport.write(b"ERROR: %s\r\n" % self.reason.encode())
        self.transport.loseConnection()


class GuardedFactory(Factory):
    """
    Builds L{GuardedProtocol}s within the service's limits, and a
    L{Refusal} for a connection over them; existing clients are untouched.
    """

    noisy = False

    def __init__(
        self,
        limits: TCPLimits | None = None,
        clock: IReactorTime | None = None,
        connections: Connections | None = None,
        stats: TCPStats | None = None,
    ) -> None:
        """
        Listeners of one service each have a factory (their own metrics
        labels) and share one L{Connections} (one set of limits).
        """
        self.limits = limits or TCPLimits()
        self.connections = connections or Connections(self.limits)
        self.stats = stats or TCPStats("echoapp", "")
        self._clock = clock
        self._refusal_log = ThrottledLog("Refused {count} connections ({reasons})")
        # The clock's time, one bound method per factory rather than per connection.
        self.now: Callable[[], float] = self._first_now
        self._deadlines: Deadlines | None = None

    @property
    def deadlines(self) -> Deadlines:
        if self._deadlines is None:
            self._deadlines = Deadlines(self.clock)
        return self._deadlines

    def _first_now(self) -> float:
        self.now = self.clock.seconds
        return self.now()

    @property
    def clock(self) -> IReactorTime:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        peer = peer_key(addr)
        reason = self.connections.refusal(peer)
        if reason is not None:
            self.stats.refused[reason] += 1
            self._refusal_log.note(self.clock, reason)
            return Refusal(REFUSALS[reason])
        protocol = self.makeProtocol()
        protocol.factory = self
        protocol.peer = peer
        return protocol

    def makeProtocol(self) -> GuardedProtocol:
        raise NotImplementedError


# --- rate limits and throttled logs -----------------------------------------


class ThrottledLog:
    """
    Logs an attack at most once per C{interval} seconds with a count of what
    happened since, never one line per packet or connection.
    """

    def __init__(self, text: str, interval: float = 10.0) -> None:
        self.text = text
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._last: float | None = None

    def note(self, clock: IReactorTime, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = clock.seconds()
        if self._last is None or now - self._last >= self.interval:
            self._last = now
            reasons = ", ".join(f"{why}: {n}" for why, n in sorted(self.counts.items()))
            log.warn(self.text, count=sum(self.counts.values()), reasons=reasons)
            self.counts = {}


class TokenBucket:
    """
    One token bucket: the global cap on replies.  Its refill-then-take rule
    is written out again in L{TokenBuckets.allow} on purpose: a shared helper
    measured 0.2 us more per bucket, twice per datagram (timeit, this VM).
    """

    def __init__(self, rate: float, burst: float, now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._now = now
        self._tokens = float(burst)
        self._then = now()

    def allow(self) -> bool:
        now = self._now()
        tokens = self._tokens + (now - self._then) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self._then = now
        allowed = tokens >= 1.0
        self._tokens = tokens - 1.0 if allowed else tokens
        return allowed


class TokenBuckets:
    """
    Per-source token buckets in a table of bounded size: the least recently
    seen source is forgotten first, so spoofed sources cannot grow memory
    (a forgotten source simply starts again with a full bucket).

    A plain dict keeps insertion order: taking a source out and putting it
    back makes it the newest, so the first key is the least recently seen.
    (Twice as fast as an OrderedDict here, on every datagram.)
    """

    def __init__(
        self, rate: float, burst: float, max_sources: int, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._now = now
        self._buckets: dict[Any, tuple[float, float]] = {}

    def allow(self, source: Any) -> bool:
        now = self._now()
        buckets = self._buckets
        entry = buckets.pop(source, None)
        if entry is None:
            tokens = self.burst
            if len(buckets) >= self.max_sources:
                del buckets[next(iter(buckets))]
        else:
            tokens = entry[0] + (now - entry[1]) * self.rate
            if tokens > self.burst:
                tokens = self.burst
        allowed = tokens >= 1.0
        buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)
