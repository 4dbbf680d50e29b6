"""
What a faulty connection reads: the client's bytes held for the read
latency, paced by the read bandwidth, or not read at all (C{stall=read});
the client's FIN waits behind what is held.  What it holds is bounded: past
L{HELD_READS} it stops reading, and the client's own send buffer fills, as
it would against a slow server.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol

from echoapp._faults.closing import CloseState
from echoapp._faults.held import Held, Hub
from echoapp._faults.notes import ms
from echoapp._faults.plan import Shape
from echoapp._faults.sending import PIECES_PER_PASS
from echoapp._record import CLIENT

HELD_READS = 64 * 1024


class Reading:
    """One connection's reads; C{passing} while nothing is held."""

    def __init__(self, connection: Hub) -> None:
        self.connection = connection
        self.queue = Held()
        self.passing = True
        self._eof = False  # the client's FIN, waiting behind slowed reads

    def changed(self, shape: Shape | None) -> None:
        """The faults changed (or the connection opened): a stalled read follows them."""
        if shape is not None and shape.faults.stall == "read":
            self.connection.pause("stall")
        else:
            self.connection.resume("stall")

    def received(self, data: bytes, shape: Shape | None) -> None:
        """Bytes that do not simply pass: stalled, slowed, or behind held ones."""
        connection = self.connection
        faults = shape.faults if shape is not None else None
        if faults is not None and faults.stall == "read":
            connection.pause("stall")
        if (faults is None or not faults.shapes_input()) and not self.queue.items:
            connection.wrappedProtocol.dataReceived(data)
            return
        now = connection.clock.seconds()
        if faults is None:
            self.queue.add(data, now, max(1, len(data)), 0.0, 0)
        else:
            rate = faults.read_bandwidth
            at = now + connection.draws.delay(faults, faults.read_latency)
            self.queue.add(data, at, max(1, rate // 20) if rate else max(1, len(data)), 0.0, rate)
            if connection.record is not None:  # on the client's packet just recorded
                note = f"read {len(data)} B {ms(self.queue.items[-1][0] - now)} late"
                note += f", paced at {rate} B/s" if rate else ""
                kind = "read-bandwidth" if rate else "read-latency"
                connection.record.fault(kind, note, CLIENT, last=True)
        self.passing = False
        if self.queue.held > HELD_READS:
            connection.pause("reads")
        self._schedule()

    def _schedule(self) -> None:
        queue = self.queue
        if queue.call is None and queue.items:
            queue.call = self.connection.wakeups.at(queue.items[0][0], self._deliver)

    def _deliver(self) -> None:
        connection = self.connection
        queue = self.queue
        queue.call = None
        now = connection.clock.seconds()
        budget = PIECES_PER_PASS
        while queue.due(now) and connection.closing.state is not CloseState.LOST and budget:
            budget -= 1
            connection.wrappedProtocol.dataReceived(queue.take(now)[0])
        if queue.held <= HELD_READS // 2:
            connection.resume("reads")
        if queue.items:
            self._schedule()
            return
        self.passing = True
        connection.straighten()
        if self._eof and connection.closing.state is not CloseState.LOST:
            self._eof = False
            self.finished()

    def finished(self) -> None:
        """The client half-closed: the service hears it after what it has yet to read."""
        connection = self.connection
        if self.queue.items:
            self._eof = True
        elif IHalfCloseableProtocol.providedBy(connection.wrappedProtocol):
            connection.wrappedProtocol.readConnectionLost()
        else:
            connection.loseConnection()  # what the transport would do, but after the queued replies

    def drop(self) -> None:
        """The connection is gone: what is held is never read, and its timer goes."""
        self.queue.drop()
