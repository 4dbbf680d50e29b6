"""
What a faulty connection sends: the service's writes held for their
latency, paced by the bandwidth, cut into slices, cut off after a number
of bytes (a FIN, an RST, or toxiproxy's C{limit_data} close), or never sent
(C{stall=answer}).  What it holds is bounded: past L{HELD_BYTES} the side
that feeds it is paused.
"""

from __future__ import annotations

from typing import Any

from echoapp._faults.closing import CloseState
from echoapp._faults.held import PIECE_COST, Held, Hub
from echoapp._faults.notes import held, kind_of_hold, slice_note
from echoapp._faults.plan import LIMIT_CLOSES, Shape
from echoapp._record import SERVER

# Replies a connection may hold back (latency, bandwidth, slices) before it
# stops reading from its client, as a full write buffer would: a client
# that floods a slow peer pauses itself, it does not grow the server.
HELD_BYTES = 1 << 20
PIECES_PER_PASS = 1024  # per pass of a queue: slice=1 must not hold the reactor for seconds
# ... and where the wire record keeps the connection, whose every slice is a
# note and a packet of its own in the capture: 1,024 of those held every other
# connection for 100 ms and more.
RECORDED_PIECES_PER_PASS = 32
_EMITTING = (CloseState.OPEN, CloseState.WRITE_CLOSING, CloseState.CLOSING)


class Sending:
    """
    One connection's writes.  C{passing} is the one thing the connection
    asks before passing a write straight on: nothing is held and the
    connection is open.
    """

    def __init__(self, connection: Hub) -> None:
        self.connection = connection
        self.queue = Held()
        self.passing = True
        self.full = False  # the transport says its buffer is full (L{transport_full})
        self.settled: Shape | None = None  # the faults of every chunk until the next change, if no condition
        self._delay: float | None = None  # their one delay, where that is all they do to a write (L{settle})
        self._jittered = False  # ... give or take their jitter
        self._unlimited = False  # they have no byte limit: a piece sent needs no count against one
        self._holding = False  # what is held passed its bound: the feeding side was told to pause
        self._release = self.release  # the one bound method every wake-up calls
        # Asked of the connection once: each lookup on it passes ProtocolWrapper's __getattr__ hook.
        self._clock = connection.clock
        self._wakeups = connection.wakeups
        self._sent = 0  # bytes sent since the faults began (for the byte limits)
        self._stalled = 0  # bytes a stall=answer swallowed since it began (for the record)
        self._last_slice: float | None = None  # when the last slice went (for the record)
        self._notes: dict[int, str] = {}  # a held run's note, for its first bytes in the capture

    def holds(self) -> bool:
        """Whether any write is still held."""
        return bool(self.queue.items)

    def settle(self, shape: Shape | None) -> None:
        """
        The faults every chunk has until the next change (L{settled}, no
        condition switches them), and what a chunk then need not ask: a
        plain delay (latency, jitter: toxiproxy's C{latency}) is all most
        toxics do to a write, and with nothing recording it a write is queued
        without the questions the other faults need (L{write_settled}).
        """
        self.settled = shape
        self._delay = None
        if shape is None:
            self._unlimited = False
            return
        faults = shape.faults
        self._unlimited = faults.reset_after_bytes is None and faults.half_close_after_bytes is None
        plain = shape.output and self._unlimited and not (faults.stall or faults.slice or faults.bandwidth)
        if plain and not shape.timing and self.connection.record is None:
            self._delay, self._jittered = faults.latency, bool(faults.jitter)

    def write_settled(self, data: bytes) -> None:
        """
        The connection's C{write} while the L{settled} faults apply and it
        is open (L{Hub.straighten}): a plain delay is queued at once, the
        rest is L{write}'s.
        """
        delay = self._delay
        if delay is None:
            self.write(data, self.settled)
            return
        connection = self.connection
        if self._jittered:
            delay = connection.draws.delay(self.settled.faults)  # type: ignore[union-attr]
        queue = self.queue
        queue.add_whole(data, self._clock.seconds() + delay)
        self.passing = False
        if queue.held > HELD_BYTES:
            self._holding = True
            connection.hold(True)
        if queue.call is None and not self.full:
            queue.call = self._wakeups.at(queue.items[0][0], self._release)

    def write(self, data: bytes, shape: Shape | None) -> None:
        """A write that does not simply pass: shaped, swallowed, or queued behind held ones."""
        connection = self.connection
        if connection.closing.state is not CloseState.OPEN:
            return
        record = connection.record
        if shape is not None and shape.timing and connection.closing.chunk(shape):
            if record is not None:
                record.fault("reset_peer", f"{len(data)} B swallowed: the reset is coming", SERVER)
            return  # toxiproxy's reset_peer holds every chunk from the first one
        faults = shape.faults if shape is not None else None
        if faults is not None and faults.stall == "answer":
            if record is not None:
                self._stall_note(record, len(data))
                self.passing = False  # the next write comes here, to say when the stall ended
            return
        if self._stalled and record is not None:
            ended = f"stall ended: replies are sent again ({self._stalled} B swallowed)"
            record.fault("stall", ended, SERVER)
            self._stalled = 0
            self.passing = not self.queue.items
        if (shape is None or not shape.output) and not self.queue.items:
            connection.transport.write(data)
            return
        now = connection.clock.seconds()
        if faults is None:  # behind what is held, with no fault of its own
            self.queue.add(data, now, max(1, len(data)), 0.0, 0)
        else:
            size = faults.slice or (max(1, faults.bandwidth // 20) if faults.bandwidth else len(data)) or 1
            gap = faults.slice_delay if faults.slice else 0.0
            variation = faults.slice_variation if faults.slice else 0
            at = now + connection.draws.delay(faults)
            self.queue.add(data, at, size, gap, faults.bandwidth, variation, connection.draws.random)
        if record is not None and faults is not None:
            delay = self.queue.items[-1][0] - now
            if delay > 0 or faults.slice or faults.bandwidth:  # not a byte limit's queue alone
                kind, note = kind_of_hold(faults), held(len(data), delay, faults)
                record.fault(kind, note, SERVER, capture=False)  # now in the timeline
                self._notes[id(self.queue.items[-1])] = f"{kind}: {note}"  # on its bytes in the capture
        self.passing = False
        if self.queue.held > HELD_BYTES:
            self._holding = True
            connection.hold(True)
        self.schedule()

    def _stall_note(self, record: Any, size: int) -> None:
        """C{stall=answer} swallowed a reply: said when the stall begins, counted until it ends."""
        if not self._stalled:
            record.fault("stall", f"stall begun: replies are not sent (the first, {size} B, swallowed)")
        self._stalled += size

    def schedule(self) -> None:
        """A timer for the first piece held, unless one is set or the transport is full."""
        queue = self.queue
        if queue.call is None and queue.items and not self.full:
            queue.call = self._wakeups.at(queue.items[0][0], self._release)

    def transport_full(self, full: bool) -> None:
        """The transport's buffer is full (or has room again): hold the pieces (or send them)."""
        self.full = full
        if not full and self.connection.closing.state is not CloseState.LOST:
            self.schedule()

    def release(self) -> None:
        """
        What is due, in one pass (bounded); a slice with a delay is sent
        alone, one per timer, so slices leave one at a time as toxiproxy's
        do, however late a timer fires.
        """
        queue = self.queue
        queue.call = None
        connection = self.connection
        closing = connection.closing
        items = queue.items
        now = self._clock.seconds()
        record = connection.record
        budget = PIECES_PER_PASS if record is None else RECORDED_PIECES_PER_PASS
        lean = self._unlimited and record is None  # whole runs may skip the cutting and counting
        write = connection.transport.write
        while items and items[0][0] <= now and not self.full and budget and closing.state in _EMITTING:
            budget -= 1
            run = items[0]
            if lean and not (run[2] or run[4] or run[5] or run[6]) and run[3] >= len(run[1]):
                # A whole run (a plain delay's) in one piece, with no byte limit to count it against.
                items.popleft()
                data = run[1]
                queue.held -= len(data) + PIECE_COST
                self._sent += len(data)
                write(data)
                continue
            start = run[2]
            piece, gap = queue.take(now)
            if record is not None:
                if not start and self._notes:
                    note = self._notes.pop(id(run), None)
                    if note is not None:
                        record.comment(note, SERVER)
                if gap or (run[3] < len(run[1]) and not run[5]):
                    self._slice_note(record, run, start, piece, now)  # a slice (not a paced piece)
            self._emit(piece)
            if gap:
                break
        if closing.state not in _EMITTING:
            self.drop()
            return
        if self._holding and queue.held <= HELD_BYTES // 2:
            self._holding = False
            connection.hold(False)
        if items:
            self.schedule()
        else:
            self.passing = closing.state is CloseState.OPEN
            if connection.quiet:  # else straightening has nothing to do with what is held
                connection.straighten()
            if not self.passing:
                closing.finish()  # a close that waited for what was held

    def _slice_note(self, record: Any, run: list[Any], start: int, piece: bytes, now: float) -> None:
        """A slice goes: which, its bytes, and how long after the one before (one run's)."""
        data, whole = run[1], run[3]
        since = now - self._last_slice if self._last_slice is not None and start else None
        self._last_slice = now
        record.fault("slice", slice_note(start, len(piece), len(data), whole, since), SERVER)

    def _emit(self, piece: bytes) -> None:
        connection = self.connection
        if self._unlimited:  # the settled faults have no byte limit
            self._sent += len(piece)
            connection.transport.write(piece)
            return
        shape = self.settled or connection.draws.current()
        faults = shape.faults if shape is not None else None
        limit = None
        if faults is not None:
            limit = (
                faults.reset_after_bytes
                if faults.reset_after_bytes is not None
                else faults.half_close_after_bytes
            )
        if limit is not None and self._sent + len(piece) >= limit:
            connection.transport.write(piece[: max(0, limit - self._sent)])
            self._sent = limit
            assert faults is not None and shape is not None
            record = connection.record
            if faults.reset_after_bytes is not None:
                self.drop()
                connection.closing.reset_when_flushed(f"reset after {limit} B")
            elif LIMIT_CLOSES in shape.timing:
                if record is not None:
                    record.fault("limit_data", f"closed after {limit} B")
                connection.closing.close_at_once()
            else:
                if record is not None:
                    record.fault("half-close", f"FIN after {limit} B")
                self.drop()
                connection.closing.write_closed()
            return
        if faults is not None:
            self._sent += len(piece)  # counted from when the faults begin
        connection.transport.write(piece)

    def drop(self) -> None:
        """What is held goes unsent (a close at once, a byte limit, the connection lost)."""
        self.queue.drop()
        self._notes.clear()
        self.passing = self.connection.closing.state is CloseState.OPEN
        self.connection.straighten()
        if self._holding:
            self._holding = False
            self.connection.hold(False)

    def writeSequence(self, data: Any) -> None:
        self.connection.write(b"".join(data))
