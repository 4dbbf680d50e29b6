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

Cheap on the hot path: the bytes a connection carries are not copied nor
counted as they go; L{ConnectionRecord.data} appends C{(time, record,
direction, bytes)} to the store's journal, one list append.  The journal
is settled (L{Recorder.settle}: each entry folded into its record's
bounds, then handed to the sink in one batch) when it holds
L{SETTLE_BYTES} (its bytes plus L{ENTRY_COST} each), every
L{FLUSH_EVERY} while a sink listens (the capture file's service has a
timer for it: the hot path reads no clock but the event's own), before
any other event (an open, a close, a fault's note: rare, and in order after the
bytes before them), and before anything reads a record.  So the bound
above holds once settled, and at most L{SETTLE_BYTES} more wait.
"""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import Iterator

from echoapp._record.kept import (
    CLIENT,
    EVENT_COST,
    KEEP_EVENTS,
    RECORD_BOUND,
    SERVER,
    SIDES,
    Address,
    Event,
    Kept,
    Line,
    Store,
)

__all__ = ["RECORD_BOUND", "SIDES", "Event", "Kept", "Line"]

# What waits in the journal at most (bytes, plus ENTRY_COST an entry): small enough that a batch is
# settled while its entries are young (not yet promoted by the garbage collector, still in the
# processor's cache) and the pause it takes stays short; large enough that a settle's own cost is
# spread over some hundreds of chunks.
SETTLE_BYTES = 1 << 16
ENTRY_COST = 128
FLUSH_EVERY = 1.0  # seconds: with a sink, what went on the wire reaches it (and the disk) within this
Entry = tuple[float, "ConnectionRecord", str, bytes]


class ConnectionRecord:
    """
    One connection's (or UDP source's) record, and the hook the fault
    pieces call: L{fault}.  The wrappers call the rest.
    """

    def __init__(
        self,
        store: Store,
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
        self.head: list[Line] = []
        self.tail: deque[Line] = deque(maxlen=KEEP_EVENTS)
        self._left_out = 0
        self._bytes = {CLIENT: Kept(), SERVER: Kept()}
        self.refusal: str | None = None
        self.faulted = False
        self.reset = False
        self.ended = False
        self.closed_sides: set[tuple[str, str]] = set()
        self.kept = True
        self.cost = 0
        self.owner: object = None  # what the record is of, where a store is shared (a named proxy)
        self._pending: list[tuple[str | None, str]] = []

    @property
    def bytes(self) -> dict[str, Kept]:
        """Each direction's kept bytes (L{Kept}), by L{CLIENT} and L{SERVER}: the journal settled first."""
        self.store.settle()
        return self._bytes

    @property
    def events_left_out(self) -> int:
        """How many events between the first and last L{KEEP_EVENTS} are not kept."""
        self.store.settle()
        return self._left_out

    def events(self) -> Iterator[Event]:
        """The kept events, in order (the first and the last L{KEEP_EVENTS})."""
        self.store.settle()
        for line in [*self.head, *self.tail]:
            yield Event(*line)

    def _event(self, line: Line, kept_bytes: int = 0) -> None:
        if not self.kept:
            return
        if len(self.head) < KEEP_EVENTS:
            self.head.append(line)
            cost = EVENT_COST
        elif len(self.tail) == KEEP_EVENTS:
            self._left_out += 1
            self.tail.append(line)
            cost = 0
        else:
            self.tail.append(line)
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

    def _now(self) -> float:
        """The clock's time, once what waits in the journal is settled (this event comes after it)."""
        store = self.store
        store.settle()
        return store.clock.seconds()

    # --- what the wrappers call ---

    def refused(self, reason: str) -> None:
        """The service refused this connection: C{reason} says which limit, in its own words."""
        self.refusal = reason
        self._event((self._now(), "refused", None, reason, 0, 0))
        if self.store.sink is not None:  # a comment on the server's answer to it
            self._pending.append((SERVER, f"refused: {reason}"))

    def data(self, direction: str, data: builtins.bytes) -> None:
        """
        C{data} went C{direction} (L{CLIENT} or L{SERVER}) on the wire:
        journaled (the hot path: one append), settled later.
        """
        store = self.store
        at = store.seconds()
        store.journal.append((at, self, direction, data))
        store.waiting += len(data) + ENTRY_COST
        if store.waiting > SETTLE_BYTES:
            store.settle()

    def _fold(self, at: float, direction: str, data: builtins.bytes) -> None:
        """One journaled chunk, into the bounded bytes and events (L{Recorder.settle})."""
        kept = self._bytes[direction]
        if not self.kept:
            kept.total += len(data)  # counted, not kept
            return
        offset = kept.total
        added = kept.add(data)
        line = (at, "data", direction, "", len(data), offset)
        head = self.head
        if len(head) < KEEP_EVENTS:
            head.append(line)
            added += EVENT_COST
        else:
            tail = self.tail
            if len(tail) == KEEP_EVENTS:
                self._left_out += 1
            else:
                added += EVENT_COST
            tail.append(line)
        self.cost += added
        self.store._used += added

    def closed(self, side: str, how: str, half: bool = False) -> None:
        """
        C{side} ("client" or "server") closed, C{how} ("FIN" or "RST");
        C{half}: its write side only (a FIN, the other side may go on).
        """
        if self.ended or (side, how) in self.closed_sides:
            return
        at = self._now()
        self.reset = self.reset or how == "RST"
        self.closed_sides.add((side, how))
        text = f"{side} half-closed ({how})" if half else f"{side} closed ({how})"
        self._event((at, "close", None, text, 0, 0))
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
        self.store.settle()
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
        self._event((self._now(), "fault", direction, text, 0, 0))
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
            self.store.settle()
            self._pending.append((direction, text))

    def forget(self) -> None:
        """Evicted from the store: nothing more is kept in memory (the sink still hears everything)."""
        self.kept = False
        self.head.clear()
        self.tail.clear()
        for kept in self._bytes.values():
            kept.head.clear()
            kept.tail.clear()
