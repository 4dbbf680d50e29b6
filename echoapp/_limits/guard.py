"""
What every echoapp TCP connection shares: backpressure, admission against
the service's limits and the process's descriptor ceiling, the idle,
session and line deadlines, closing that escalates from C{loseConnection}
to C{abortConnection}, and the drain at shutdown.

The greeter and echo protocols subclass L{GuardedProtocol} and
L{GuardedFactory}, so each of these rules lives here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from echoapp._limits.connections import Connections
from echoapp._limits.deadlines import SLACK, Deadlines
from echoapp._limits.descriptors import HoldsDescriptor
from echoapp._limits.ratelimit import ThrottledLog
from echoapp._metrics import TCPStats
from echoapp._peers import peer_host
from echoapp._reasons import REFUSALS, SHUTDOWN, TIMEOUTS
from echoapp._twisted import global_reactor, queued

log = Logger(namespace="echoapp.guard")


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


class ClosesWithGrace:
    """
    A connection closed cleanly and aborted if the client has not let go
    when the grace period ends.  The abort timer is armed I{before} the
    close is asked for: C{loseConnection()} may call C{connectionLost}
    before it returns (a transport that is already done, a test transport),
    and a timer armed after that would find no one to cancel it, holding
    the transport for the whole grace and failing a test's clean reactor.
    L{GuardedProtocol} and L{Refusal} both close this way.
    """

    transport: Any
    _abort: IDelayedCall | None = None

    def close_within(self, clock: IReactorTime, grace: float, close: Callable[[], object]) -> None:
        """Arm the abort for C{grace} seconds from now, then C{close()}."""
        self._abort = clock.callLater(grace, self.transport.abortConnection)
        close()

    def cancel_abort(self) -> None:
        """The connection is gone: its abort timer goes with it."""
        abort, self._abort = self._abort, None
        if abort is not None and abort.active():
            abort.cancel()


def half_closer(transport: Any) -> Callable[[], object] | None:
    """
    The transport's C{loseWriteConnection}, or L{None} where closing only
    the write side is not a clean close.  Over TLS it is not: Twisted's TLS
    wrapper has no such method of its own, and C{ProtocolWrapper.__getattr__}
    hands out the I{TCP} transport's, which sends a FIN with no TLS
    close_notify (a strict client sees C{UNEXPECTED_EOF_WHILE_READING}).
    TLS's own C{loseConnection} is the half-close there anyway: it sends
    close_notify and goes on reading until the client answers with its own.
    """
    if ISSLTransport.providedBy(transport):
        return None
    return getattr(transport, "loseWriteConnection", None)


def peer_text(peer: str, port: int | None) -> str:
    """C{host:port} (C{[host]:port} for IPv6) for logs: the port pairs a connection's open and close lines."""
    if port is None:
        return peer
    return f"[{peer}]:{port}" if ":" in peer else f"{peer}:{port}"


class GuardedProtocol(ClosesWithGrace, Protocol):
    """
    The connection side of the guard.  Subclasses call L{activity} when data
    arrives, L{message_started} when a partial message begins to be held,
    and say what a client is told on a timeout or at shutdown (L{notice}).
    """

    factory: GuardedFactory
    transport: Any
    peer = "local"
    peer_port: int | None = None
    _closing = False
    _lingering = False
    _slot: int | None = None
    # When the partial message now held began; None while none is.
    _message_started: float | None = None
    _flow_controlled = False

    @property
    def clock(self) -> IReactorTime:
        return self.factory.clock

    def connectionMade(self) -> None:
        limits = self.factory.limits
        self.stats = self.factory.stats
        self.stats.accepted += 1
        self.stats.open += 1
        if self.factory.log_connections:
            balancer = getattr(self.transport, "balancer", None)  # behind a PROXY protocol listener
            log.info(
                "Connection from {address} to {service}" + (" via {via}" if balancer is not None else ""),
                address=peer_text(self.peer, self.peer_port),
                peer=self.peer,
                port=self.peer_port,
                via=peer_text(str(getattr(balancer, "host", "")), getattr(balancer, "port", None)),
                service=self.stats.service,
            )
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

    def message_started(self) -> None:
        """
        A partial message began: it must be complete within the line
        timeout, counted from now, so a client trickling a byte at a time
        cannot hold the connection by never finishing.  The deadline joins
        the idle and session ones: the connection's slot moves earlier if
        need be.
        """
        if self._closing:
            return
        now = self._message_started = self.factory.now()
        deadline = now + self.factory.limits.line_timeout
        slot = self._slot
        if slot is None or Deadlines.slot(deadline) < slot:
            deadlines = self.factory.deadlines
            if slot is not None:
                deadlines.remove(self, slot)
            self._slot = deadlines.add(self, deadline)

    def message_finished(self) -> None:
        """No partial message is held any more; a slot taken for it finds nothing due."""
        self._message_started = None

    def check_deadlines(self) -> None:
        """
        Called by L{Deadlines} at (or just after) the nearest deadline:
        close on one that has passed, or wait for what is left.
        """
        now = self.factory.now()
        limits = self.factory.limits
        session_left = self._session_end - now
        idle_left = self._last_seen + limits.idle_timeout - now
        started = self._message_started
        line_left = started + limits.line_timeout - now if started is not None else session_left
        self._slot = None
        if session_left <= SLACK:
            self.timed_out("session")
        elif idle_left <= SLACK:
            self.timed_out("idle")
        elif line_left <= SLACK:
            self.timed_out("line")
        else:
            self._slot = self.factory.deadlines.add(self, now + min(idle_left, session_left, line_left))

    def notice(self, key: str) -> bytes:
        """
        The line a client gets before the server closes on it: C{key} is a
        key of L{TIMEOUTS}, or L{SHUTDOWN}.
        """
        return b""

    def timed_out(self, kind: str) -> None:
        """C{kind} is a key of L{TIMEOUTS}."""
        self.closing_because(TIMEOUTS[kind])
        self.stats.timeouts[kind] += 1
        self.close(self.notice(kind))

    def closing_because(self, reason: str) -> None:
        """
        Say why the server closes this connection: a line of its own with
        C{--log-connections}, else counted in a summary at most every 10 s,
        so a flood of clients that time out cannot grow the log.
        """
        factory = self.factory
        if factory.log_connections:
            log.info(
                "Closing {address}: {reason}", address=peer_text(self.peer, self.peer_port), reason=reason
            )
        else:
            factory.closing_log.note(factory.clock, reason)

    def shutdown(self) -> None:
        """
        The service drains: say goodbye (the farewell or the shutdown notice)
        and close within the grace.
        """
        self.close(self.notice(SHUTDOWN))

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
        half_close = half_closer(self.transport)
        close = self.transport.loseConnection
        if linger and half_close is not None and IHalfCloseableProtocol.providedBy(self):
            self._lingering = True
            self.transport.resumeProducing()  # reads may be paused by backpressure
            close = half_close
        self.close_within(self.clock, self.factory.limits.close_grace, close)

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._slot is not None:
            self.factory.deadlines.remove(self, self._slot)
            self._slot = None
        self.cancel_abort()
        self.stats.open -= 1
        self.factory.connections.remove(self)
        if self.factory.log_connections:
            log.info(
                "Connection from {address} to {service} closed",
                address=peer_text(self.peer, self.peer_port),
                peer=self.peer,
                port=self.peer_port,
                service=self.stats.service,
            )


def close_told(transport: Any) -> bool:
    """
    Close a connection of Twisted's own (a socket the reactor watches) at
    once, cleanly, when the kernel has taken everything written to it;
    C{False}, and nothing done, for any other transport or while bytes wait.

    C{loseConnection} closes on the reactor's next look at the socket, and
    that look may come after the listening port's: the port accepts another
    batch first.  Near the descriptor ceiling the refusals of two batches
    then held more descriptors than were left, and C{accept()} met
    C{EMFILE}: Twisted's recovery closed clients without a word, logging a
    line for each.  Closed here, a refusal gives its descriptor back before
    the port accepts the next client.  This is what the reactor itself does
    once the write buffer is empty (C{connectionLost} with
    C{ConnectionDone}: the socket is shut down in order and closed, the
    line first).  uvloop's transports close at once already.
    """
    if not isinstance(transport, FileDescriptor) or not transport.connected or transport.disconnecting:
        return False
    if queued(transport):
        return False
    transport.connectionLost(Failure(ConnectionDone()))
    return True


class Refusal(HoldsDescriptor, ClosesWithGrace, Protocol):
    """
    Says why in one line, then closes: over a limit, or shutting down.

    A refused connection holds a descriptor until it is gone, so it counts
    against the process's ceiling, and it is gone within the close grace
    whatever the client does: a client that does not read is aborted.  On
    Twisted's own TCP, where the line almost always leaves at once (eager
    writes), it is gone before the port accepts another client
    (L{close_told}), so refusals never pile up near the ceiling.

    Over TLS it says nothing and aborts at once.  Twisted's C{ssl:}
    endpoint wraps this factory, so the refusal is decided inside TLS,
    where a line waits for a handshake the client may never start, and
    Twisted's TLS C{loseConnection} waits for that handshake too (that is
    how refused connections stayed open for good).  Deciding before TLS
    wraps the connection would spare a refused client the OpenSSL object it
    costs for that moment, but would mean taking Twisted's C{ssl:} endpoint
    apart (its context factory is private); aborting does the same job with
    the public API.
    """

    # Aborts at once without a word, as over TLS: set for a connection whose
    # client speaks TLS after a PROXY header, refused before the handshake.
    silent = False

    def __init__(self, reason: str, clock: IReactorTime, grace: float) -> None:
        self.reason = reason
        self._clock = clock
        self._grace = grace

    def connectionMade(self) -> None:
        self.hold_descriptor()
        if self.silent or ISSLTransport.providedBy(self.transport):
            self.transport.abortConnection()
            return
        self.transport.write(b"ERROR: %s\r\n" % self.reason.encode())
        if close_told(self.transport):
            return
        self.close_within(self._clock, self._grace, self.transport.loseConnection)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.release_descriptor()
        self.cancel_abort()


class GuardedFactory(Factory):
    """
    Builds L{GuardedProtocol}s within the service's limits, and a
    L{Refusal} for a connection over them; existing clients are untouched.
    """

    noisy = False

    def __init__(
        self,
        connections: Connections | None = None,
        clock: IReactorTime | None = None,
        stats: TCPStats | None = None,
        log_connections: bool = False,
    ) -> None:
        """
        Listeners of one service each have a factory (their own metrics
        labels) and share one L{Connections}, which owns the service's
        limits (a new one with the defaults when none is given; a factory
        keeps C{limits} as a plain attribute for the per-connection reads).
        With C{log_connections}, every connection's open, close and
        timeout is a log line; without, only summaries are (the counts are
        in the metrics), so the log stays small whatever clients do.
        """
        self.connections = connections or Connections()
        self.limits = self.connections.limits
        self.stats = stats or TCPStats("echoapp", "")
        self.log_connections = log_connections
        self.clock: IReactorTime = clock if clock is not None else global_reactor()
        self._refusal_log = ThrottledLog("Refused {count} connections ({reasons})")
        self.closing_log = ThrottledLog("Closed {count} connections ({reasons})")
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

    def refusal_for(self, peer: str) -> Refusal | None:
        """
        The L{Refusal} for a new connection from host C{peer} when it is
        over a limit (counted and logged as refused), else L{None}.  A
        PROXY protocol listener asks this before the header is read too, by
        the connection's real address.
        """
        reason = self.connections.refusal(peer)
        if reason is None:
            return None
        self.stats.refused[reason] += 1
        self._refusal_log.note(self.clock, reason)
        return Refusal(REFUSALS[reason], self.clock, self.limits.close_grace)

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        peer = peer_host(addr)
        refusal = self.refusal_for(peer)
        if refusal is not None:
            return refusal
        protocol = self.make_protocol()
        protocol.factory = self
        protocol.peer = peer
        if self.log_connections:  # only the log lines need it: it is not kept otherwise
            protocol.peer_port = getattr(addr, "port", None)
        return protocol

    def stopFactory(self) -> None:
        """The listener stopped: what the summaries hold back is logged now."""
        self._refusal_log.flush()
        self.closing_log.flush()

    def make_protocol(self) -> GuardedProtocol:
        """
        The service's own protocol for an admitted connection: each service's
        factory says which.
        """
        raise NotImplementedError
