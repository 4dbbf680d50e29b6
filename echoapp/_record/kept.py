"""
What a record keeps, bounded (sans-IO, no clock): one direction's bytes
(L{Kept}), the events as a record holds them (L{Line}, read as L{Event}),
the bounds they are kept within, and what a store hands every event on to
(L{Sink}, the capture file).  L{echoapp._record.store} says the bounds in
words.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from twisted.internet.interfaces import IReactorTime

CLIENT = "client->server"
SERVER = "server->client"
SIDES = {CLIENT: "client", SERVER: "server"}

KEEP_BYTES = 4096
KEEP_EVENTS = 64
EVENT_COST = 128
RECORD_COST = 512
RECORD_BOUND = RECORD_COST + 2 * 2 * KEEP_BYTES + 2 * KEEP_EVENTS * EVENT_COST
STORE_BYTES = 8 << 20

Address = tuple[str, int] | None
# A journaled chunk: (time, its ConnectionRecord, direction, bytes).
Entry = tuple[float, Any, str, bytes]
ConnectionRecord = Any  # what a sink is told of: L{echoapp._record.store.ConnectionRecord}


class Sink(Protocol):
    """
    Where a store hands every event on as it happens (the capture file):
    C{comments} are the fault notes for the packet it writes.
    """

    def opened(self, record: ConnectionRecord) -> None:
        """A connection was accepted (not called for a UDP source)."""

    def batch(self, entries: list[Entry], comments: dict[int, list[str]]) -> None:
        """
        Bytes went on the wire, in order: C{entries} are C{(time, record,
        direction, bytes)} (for a UDP source, one datagram each);
        C{comments} the fault notes for the packet of the entry at each
        index.
        """

    def closed(self, record: ConnectionRecord, side: str, how: str, comments: list[str]) -> None:
        """C{side} closed (C{how}: FIN or RST)."""

    def ended(self, record: ConnectionRecord) -> None:
        """The connection is gone: nothing more will come for C{record}."""

    def comment_last(self, record: ConnectionRecord, text: str) -> bool:
        """Add C{text} to the packet just written for C{record}, if it is still held: done?"""


class Kept:
    """One direction's bytes, bounded: the first and the last L{KEEP_BYTES}, and how many in all."""

    __slots__ = ("head", "tail", "total")

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> int:
        """
        C{data} went this way: kept at the start while there is room, else
        in the rolling tail.  How many more bytes are kept now.
        """
        size = len(data)
        self.total += size
        head = self.head
        room = KEEP_BYTES - len(head)
        if room >= size:
            head += data
            return size
        tail = self.tail
        before = len(tail)
        if room > 0:
            head += data[:room]
            data = data[room:]
        tail += data[-KEEP_BYTES:]
        if len(tail) > KEEP_BYTES:
            del tail[:-KEEP_BYTES]
        return max(room, 0) + len(tail) - before

    @property
    def left_out(self) -> int:
        """How many bytes went this way that are not kept."""
        return max(0, self.total - len(self.head) - len(self.tail))

    def excerpt(self, offset: int, size: int) -> bytes | None:
        """The kept bytes of C{[offset, offset + size)}, or L{None} where they were left out."""
        if offset + size <= len(self.head):
            return bytes(self.head[offset : offset + size])
        start = self.total - len(self.tail)
        if offset >= start:
            return bytes(self.tail[offset - start : offset - start + size])
        return None


class Event(NamedTuple):
    """One line of the record: when, what (C{kind}), which way, its note, and how many bytes from where."""

    at: float
    kind: str
    direction: str | None
    text: str
    size: int = 0
    offset: int = 0


# An event as a record keeps it (a tuple: cheap to make); read as an Event.
Line = tuple[float, str, "str | None", str, int, int]


class Store(Protocol):
    """What a record asks of its store (L{echoapp._record.recorder.Recorder}): clock, journal, budget."""

    clock: IReactorTime
    seconds: Callable[[], float]
    journal: list[Entry]
    waiting: int
    sink: Sink | None
    open_streams: int
    when_idle: Callable[[], object] | None
    _used: int

    def settle(self) -> None:
        """Fold what waits in the journal into the records, and hand it to the sink."""

    def charge(self, record: Any, cost: int) -> None:
        """C{record} keeps C{cost} more bytes."""
