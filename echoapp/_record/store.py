"""
The wire record's core, sans-IO: what one connection or UDP source
carried (L{ConnectionRecord}) and the bounded store of them (L{Recorder}).

Nothing here touches a socket: the recording wrappers
(L{echoapp._record.wrappers}) and the fault pieces tell a record what
happened, the record keeps a bounded copy in memory for the text timeline
(L{echoapp._record.timeline}), and hands each event on, whole, to the
store's sink, if any (the capture file, L{echoapp._record.capture}), which
streams it to disk.  Times are the clock's (the reactor's), so a test with
a fake clock gets the same record every run.

The bounds, stated once: a record keeps the first and last L{KEEP_BYTES}
bytes each way (the count of the bytes between is kept) and the first and
last L{KEEP_EVENTS} events (the count between is kept); each is accounted
as its bytes plus L{EVENT_COST} per event and L{RECORD_COST} for itself,
at most L{RECORD_BOUND} bytes.  The store holds records up to its budget
(L{STORE_BYTES} unless told): past it the oldest goes first, counted in
L{Recorder.evicted}; an evicted record that is still open keeps nothing
more in memory (its capture goes on in the file).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

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


class Sink(Protocol):
    """
    Where a store hands every event on as it happens (the capture file):
    C{comments} are the fault notes for the packet it writes.
    """

    def opened(self, record: ConnectionRecord) -> None:
        """A connection was accepted (not called for a UDP source)."""

    def data(self, record: ConnectionRecord, direction: str, data: bytes, comments: list[str]) -> None:
        """Bytes (or one datagram, for a UDP source) went C{direction}."""

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

    def add(self, data: bytes) -> None:
        """C{data} went this way: kept at the start while there is room, else in the rolling tail."""
        self.total += len(data)
        room = KEEP_BYTES - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data[-KEEP_BYTES:]
            del self.tail[:-KEEP_BYTES]

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


class Event:
    """One line of the record: when, what (C{kind}), which way, how many bytes from where, and a note."""

    __slots__ = ("at", "direction", "kind", "offset", "size", "text")

    def __init__(
        self, at: float, kind: str, direction: str | None, text: str, size: int = 0, offset: int = 0
    ):
        self.at = at
        self.kind = kind
        self.direction = direction
        self.text = text
        self.size = size
        self.offset = offset


class ConnectionRecord:
    """
    One connection's (or UDP source's) record, and the hook the fault
    pieces call: L{fault}.  The wrappers call the rest.
    """

    def __init__(
        self,
        store: Recorder,
        number: int,
        kind: str,
        listener: str,
        client: Address,
        server: Address,
        note: str,
    ) -> None:
        self.store = store
        self.number = number
        self.kind = kind
        self.listener = listener
        self.client = client
        self.server = server
        self.note = note
        self.opened = store.clock.seconds()
        self.head: list[Event] = []
        self.tail: deque[Event] = deque(maxlen=KEEP_EVENTS)
        self.events_left_out = 0
        self.bytes = {CLIENT: Kept(), SERVER: Kept()}
        self.refusal: str | None = None
        self.faulted = False
        self.reset = False
        self.ended = False
        self.closed_sides: set[tuple[str, str]] = set()
        self.kept = True
        self.cost = 0
        self._pending: list[tuple[str | None, str]] = []

    def events(self) -> Iterator[Event]:
        """The kept events, in order (the first and the last L{KEEP_EVENTS})."""
        yield from self.head
        yield from self.tail

    def _event(self, event: Event, kept_bytes: int = 0) -> None:
        if not self.kept:
            return
        if len(self.head) < KEEP_EVENTS:
            self.head.append(event)
            cost = EVENT_COST
        elif len(self.tail) == KEEP_EVENTS:
            self.events_left_out += 1
            self.tail.append(event)
            cost = 0
        else:
            self.tail.append(event)
            cost = EVENT_COST
        self.store.charge(self, cost + kept_bytes)

    def _comments(self, direction: str | None) -> list[str]:
        """The fault notes waiting for the next packet that goes C{direction} (any, for L{None})."""
        if not self._pending:
            return []
        taken: list[str] = []
        left: list[tuple[str | None, str]] = []
        for way, text in self._pending:
            if direction is None or way is None or way == direction:
                taken.append(text)
            else:
                left.append((way, text))
        self._pending = left
        return taken

    # --- what the wrappers call ---

    def refused(self, reason: str) -> None:
        """The service refused this connection: C{reason} says which limit, in its own words."""
        self.refusal = reason
        self._event(Event(self.store.clock.seconds(), "refused", None, reason))
        if self.store.sink is not None:  # a comment on the server's answer to it
            self._pending.append((SERVER, f"refused: {reason}"))

    def data(self, direction: str, data: bytes) -> None:
        """C{data} went C{direction} (L{CLIENT} or L{SERVER}) on the wire."""
        kept = self.bytes[direction]
        before = len(kept.head) + len(kept.tail)
        offset = kept.total
        if self.kept:
            kept.add(data)
        else:
            kept.total += len(data)  # counted, not kept
        self._event(
            Event(self.store.clock.seconds(), "data", direction, "", len(data), offset),
            len(kept.head) + len(kept.tail) - before,
        )
        sink = self.store.sink
        if sink is not None:
            sink.data(self, direction, data, self._comments(direction))

    def closed(self, side: str, how: str, half: bool = False) -> None:
        """
        C{side} ("client" or "server") closed, C{how} ("FIN" or "RST");
        C{half}: its write side only (a FIN, the other side may go on).
        """
        if self.ended or (side, how) in self.closed_sides:
            return
        self.reset = self.reset or how == "RST"
        self.closed_sides.add((side, how))
        text = f"{side} half-closed ({how})" if half else f"{side} closed ({how})"
        self._event(Event(self.store.clock.seconds(), "close", None, text))
        sink = self.store.sink
        if sink is not None:
            sink.closed(self, side, how, self._comments(None))

    def lost(self, clean: bool) -> None:
        """
        The connection is gone, C{clean}ly (its reason was a clean close)
        or not: a side that had not closed yet closed then (the client's
        FIN, or its RST for an unclean end nobody recorded).
        """
        if self.ended:
            return
        sides = {side for side, _ in self.closed_sides}
        if not clean and not self.reset:
            self.closed("client", "RST")
        elif clean and "client" not in sides and "server" not in sides:
            self.closed("client", "FIN")
        self.ended = True
        store = self.store
        if store.sink is not None:
            store.sink.ended(self)
        store.open_streams -= 1
        if not store.open_streams and store.when_idle is not None:
            store.when_idle()

    # --- the fault hook ---

    def fault(
        self, kind: str, note: str | None = None, direction: str | None = None, **details: object
    ) -> None:
        """
        A fault acted on this connection or source: C{kind} names it
        (C{"latency"}, C{"slice"}, C{"reset"}, C{"loss"}, ...), C{note} says
        what it did in words (C{"held 10 B for 200 ms"}); without one, the
        C{details} are shown as C{key=value}.  C{direction} (L{CLIENT} or
        L{SERVER}) is the way of the bytes it changed.  In the capture the
        note is a comment on the next packet going that way (a fault acts
        before its bytes go); C{last=True} puts it on the packet just
        recorded instead, where the fault acted on that one (a reply
        dropped while its request was being handled); C{capture=False}
        keeps it out of the capture (the fault piece says it later, with
        L{comment}, on the packet it is about).
        """
        last = bool(details.pop("last", False))
        capture = bool(details.pop("capture", True))
        words = note or " ".join([kind, *(f"{key}={value}" for key, value in details.items())])
        text = words if note is None or words.startswith(kind) else f"{kind}: {words}"
        self.faulted = True
        self._event(Event(self.store.clock.seconds(), "fault", direction, text))
        sink = self.store.sink
        if sink is None or not capture:
            return
        if last and sink.comment_last(self, text):
            return
        self._pending.append((direction, text))

    def comment(self, text: str, direction: str) -> None:
        """
        A comment on the next packet going C{direction}, in the capture
        only: a fault's note said in the timeline when it acted (a reply
        held), put on the bytes it changed when they go.
        """
        if self.store.sink is not None:
            self._pending.append((direction, text))

    def forget(self) -> None:
        """Evicted from the store: nothing more is kept in memory (the sink still hears everything)."""
        self.kept = False
        self.head.clear()
        self.tail.clear()
        for kept in self.bytes.values():
            kept.head.clear()
            kept.tail.clear()


class Recorder:
    """
    The records of one process (or one test peer), bounded by C{budget}
    bytes of memory; C{sink}, if any, hears every event (the capture file).
    """

    def __init__(self, clock: IReactorTime, budget: int = STORE_BYTES, sink: Sink | None = None) -> None:
        self.clock = clock
        self.budget = budget
        self.sink = sink
        self.records: deque[ConnectionRecord] = deque()
        self.used = 0
        self.evicted = 0
        self.count = 0
        self.open_streams = 0
        self.when_idle: Callable[[], object] | None = None

    def open(
        self, kind: str, listener: str, client: Address, server: Address, note: str = ""
    ) -> ConnectionRecord:
        """A new record: a connection accepted (C{kind} "tcp") or a UDP source first heard ("udp")."""
        self.count += 1
        record = ConnectionRecord(self, self.count, kind, listener, client, server, note)
        self.records.append(record)
        self.charge(record, RECORD_COST)
        opened = "accepted" if kind == "tcp" else "first datagram"
        record._event(Event(record.opened, "open", None, opened))
        if kind == "tcp":
            self.open_streams += 1
            if self.sink is not None:
                self.sink.opened(record)
        return record

    def charge(self, record: ConnectionRecord, cost: int) -> None:
        """C{record} keeps C{cost} more bytes: past the budget, the oldest records go (counted)."""
        if not record.kept:
            return
        record.cost += cost
        self.used += cost
        while self.used > self.budget and len(self.records) > 1:
            oldest = self.records.popleft()
            self.used -= oldest.cost
            self.evicted += 1
            oldest.forget()
