"""
Bytes held until their time (sans I/O: the pieces of L{echoapp._faults}
ask it what is due and take it): a write is queued whole and cut into
pieces only as they go, so C{slice=1} costs the write's bytes, not an
object per byte (one 64 KiB reply cut as it was queued once held 6.6 MiB).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime

PIECE_COST = 100  # bytes of memory a queued run costs beyond its data


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
        self.call: IDelayedCall | None = None

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
