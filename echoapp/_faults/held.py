"""
Bytes held until their time (sans I/O: the pieces of L{echoapp._faults}
ask it what is due and take it): a write is queued whole and cut into
pieces only as they go, so C{slice=1} costs the write's bytes, not an
object per byte (one 64 KiB reply cut as it was queued once held 6.6 MiB).
Every queue of a plan's connections waits on one reactor timer
(L{Wakeups}), not one of its own per chunk held.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from echoapp._twisted import asyncio_loop

log = Logger(namespace="echoapp.faults")

PIECE_COST = 100  # bytes of memory a queued run costs beyond its data
NEVER = float("inf")
LOOP_RESOLUTION = 0.001  # seconds: uvloop's timers count whole milliseconds


class Wakeup:
    """
    One queue's turn in L{Wakeups}, due at C{when}: C{active} and
    C{cancel} as a reactor timer's, so that a queue drops it as it would
    drop its own timer.
    """

    __slots__ = ("call", "short", "wakeups", "when")

    def __init__(
        self, wakeups: Wakeups, when: float, call: Callable[[], object], short: bool = False
    ) -> None:
        self.wakeups = wakeups
        self.when = when
        self.short = short  # asked for less than half the loop's resolution ahead
        self.call: Callable[[], object] | None = call

    def active(self) -> bool:
        """Whether it is still to come (neither called nor cancelled)."""
        return self.call is not None

    def cancel(self) -> None:
        """It will not be called; the reactor timer goes with the last one waiting."""
        if self.call is not None:
            self.call = None
            self.wakeups.gone()


class Wakeups:
    """
    One reactor timer for every held queue of a plan's connections, armed
    for the earliest of them: a chunk held costs a push onto a heap, not a
    reactor timer of its own (on a reactor over an asyncio loop, each of
    those was a Twisted timer and an asyncio one, set and fired: most of
    what a latency toxic cost).  Each queue is woken at its time as its
    own timer would have woken it, those due together in one pass in the
    order they fell due; one woken may ask for another turn, which waits
    for the next pass, so no pass holds the reactor longer than its
    queues' own budgets.  The timer is cancelled when no turn is left
    waiting: none outlives the connections.  On a reactor over an asyncio
    loop it is the loop's own timer: Twisted's there is an asyncio one
    too, with Twisted's pass over its timers and a new asyncio timer each
    time it fires.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._loop = asyncio_loop(clock)
        self._heap: list[tuple[float, int, Wakeup]] = []
        self._order = count()  # among turns due at the same time: first asked, first woken
        self._live = 0  # turns neither called nor cancelled (the rest are dropped as they surface)
        self._timer: Any = None  # the reactor's IDelayedCall, or the loop's TimerHandle
        self._timer_at = NEVER

    def at(self, when: float, call: Callable[[], object]) -> Wakeup:
        """C{call()} at C{when} (the clock's seconds), or as soon after as the reactor comes round."""
        # Only a loop's millisecond timers need to know (no clock read per chunk elsewhere).
        # Under half of one: uvloop would run it at once anyway, and a wait of
        # a whole millisecond, a hair under it by the time it gets here, is
        # not short (it spun for that millisecond).
        short = self._loop is not None and when - self.clock.seconds() < LOOP_RESOLUTION / 2
        wakeup = Wakeup(self, when, call, short)
        heappush(self._heap, (when, next(self._order), wakeup))
        self._live += 1
        if when < self._timer_at:
            self._arm(when, wakeup.short)
        return wakeup

    def gone(self) -> None:
        """A turn was cancelled: with none left the timer goes; cancelled ones never pile up."""
        self._live -= 1
        heap = self._heap
        if not self._live:
            heap.clear()
            self._disarm()
        elif len(heap) > 2 * self._live + 64:
            heap[:] = [entry for entry in heap if entry[2].call is not None]
            heapify(heap)

    def _arm(self, when: float, short: bool = False) -> None:
        delay = max(0.0, when - self.clock.seconds())
        timer = self._timer
        if self._loop is not None:
            if timer is not None:
                timer.cancel()
            if short:
                # Asked for under half a millisecond ahead (a slicer's delay in
                # microseconds, as toxiproxy's): the loop comes round at once
                # until the time has come, a wait no longer than was asked.
                delay = 0.0
            elif delay > 0.0:
                # uvloop keeps time in whole milliseconds, on a clock cached
                # per loop pass: a longer wait may fire early, and re-arming
                # for what is left would spin the loop for up to a
                # millisecond each time.  What is left waits a millisecond
                # at least: late by less than that, never early (so a wait
                # of 0.5 to 1 ms asked comes after about 1.1).
                delay = max(delay, LOOP_RESOLUTION)
            self._timer = self._loop.call_later(delay, self._fire)
        elif timer is not None and timer.active():
            timer.reset(delay)
        else:
            self._timer = self.clock.callLater(delay, self._fire)
        self._timer_at = when

    def _disarm(self) -> None:
        timer, self._timer, self._timer_at = self._timer, None, NEVER
        if timer is not None and (self._loop is not None or timer.active()):
            timer.cancel()

    def _fire(self) -> None:
        self._timer, self._timer_at = None, NEVER
        heap = self._heap
        now = self.clock.seconds()
        due = []
        while heap and heap[0][0] <= now:
            due.append(heappop(heap)[2])
        for wakeup in due:
            call = wakeup.call
            if call is not None:  # not cancelled by one woken before it
                wakeup.call = None
                self._live -= 1
                try:
                    call()
                except Exception:  # one queue's failure is its own: the others are still woken
                    log.failure("a held queue's wake-up failed")
        while heap and heap[0][2].call is None:
            heappop(heap)
        if heap and heap[0][0] < self._timer_at:
            self._arm(heap[0][0], heap[0][2].short)


class Held:
    """
    Runs C{[at, data, offset, size, gap, rate, variation, random]}: each
    due at C{at}, in pieces of C{size} (give or take C{variation}), a gap
    and (at C{rate} bytes a second) its bytes' time apart.
    """

    def __init__(self) -> None:
        self.items: deque[list[Any]] = deque()
        self.free_at = 0.0
        self.held = 0
        self.call: IDelayedCall | Wakeup | None = None

    def add(
        self,
        data: bytes,
        at: float,
        size: int,
        gap: float,
        rate: int,
        variation: int = 0,
        chance: random.Random | None = None,
    ) -> None:
        """C{data}, due at C{at} (after what is queued before it) in pieces of C{size}."""
        at = max(at, self.free_at)
        self.items.append([at, data, 0, size, gap, rate, variation, chance])
        pieces = -(-len(data) // size)
        self.free_at = at + pieces * gap + (len(data) / rate if rate else 0.0)
        self.held += len(data) + PIECE_COST

    def add_whole(self, data: bytes, at: float) -> None:
        """C{data} due at C{at} (after what is queued before it) in one piece: L{add}'s common case."""
        if at < self.free_at:
            at = self.free_at
        self.items.append([at, data, 0, len(data) or 1, 0.0, 0, 0, None])
        self.free_at = at
        self.held += len(data) + PIECE_COST

    def due(self, now: float) -> bool:
        """Whether the first piece's time has come."""
        return bool(self.items) and self.items[0][0] <= now

    def take(self, now: float) -> tuple[bytes, float]:
        """
        The first piece, and the gap that must pass before the next one: a
        run's next piece is due a gap after this one really left (as
        toxiproxy's slicer waits after each send), never at a time already
        past, so late timers do not send several slices at once.
        """
        run = self.items[0]
        at, data, offset, size, gap, rate, variation, chance = run
        if variation and chance is not None:
            size = max(1, size + chance.randint(-variation, variation))
        piece = data[offset : offset + size]
        offset += len(piece)
        self.held -= len(piece)
        wait = len(piece) / rate if rate else 0.0
        if offset >= len(data):
            self.items.popleft()
            self.held -= PIECE_COST
            if gap and self.items:
                following = self.items[0]
                following[0] = max(following[0], now + gap)
        else:
            run[0], run[2] = (max(at, now) + gap + wait if gap else at + wait), offset
        return piece, gap

    def drop(self) -> None:
        """Everything held goes, and its timer."""
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None
        self.items.clear()
        self.held = 0


class Hub(Protocol):
    """
    What the pieces of a faulty connection share (L{echoapp._faults.stream}'s
    C{FaultyConnection}): named here, below them, so that no piece imports
    the connection that holds it.
    """

    transport: Any
    wrappedProtocol: Any
    clock: IReactorTime
    wakeups: Wakeups  # the plan's one timer for every held queue
    quiet: bool  # no fault applies until the faults change (writes may pass straight on)
    draws: Any
    sending: Any
    reading: Any
    closing: Any
    record: Any  # the wire record's L{echoapp._record.ConnectionRecord}, or None: nothing records

    def later(self, delay: float, call: Any, *args: Any) -> IDelayedCall:
        """A timer that goes with the connection."""

    def pause(self, reason: str) -> None:
        """Stop reading, for C{reason}."""

    def resume(self, reason: str) -> None:
        """C{reason} to stop reading is gone."""

    def hold(self, over: bool) -> None:
        """What is held passed its bound (or fell back)."""

    def straighten(self) -> None:
        """Whether writes may pass straight on changed (the close began, what was held has gone)."""

    def loseConnection(self) -> None:
        """The service's close."""

    def write(self, data: bytes) -> None:
        """The service's write."""
