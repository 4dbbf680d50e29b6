"""
The store of a process's (or a test peer's) records, bounded, and its
journal: see L{echoapp._record.store} for the bounds and when the journal
is settled.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorTime

from echoapp._record.kept import KEEP_BYTES, KEEP_EVENTS, RECORD_COST, STORE_BYTES, Address, Sink
from echoapp._record.store import ConnectionRecord, Entry


class Recorder:
    """
    The records of one process (or one test peer), bounded by C{budget}
    bytes of memory; C{sink}, if any, hears every event (the capture file).
    Without C{keep_bytes}, the records keep their events but not what each
    way carried (no data events, no bytes): a store that only its capture
    file reads (a daemon's) then skips the fold, the part of each chunk's
    cost spent on a memory nobody reads.
    """

    def __init__(
        self,
        clock: IReactorTime,
        budget: int = STORE_BYTES,
        sink: Sink | None = None,
        keep_bytes: bool = True,
    ) -> None:
        self.clock = clock
        self.seconds = clock.seconds
        self.budget = budget
        self.keep_bytes = keep_bytes
        self._records: deque[ConnectionRecord] = deque()
        self._used = 0
        self._evicted = 0
        self.count = 0
        self.open_streams = 0
        self.when_idle: Callable[[], object] | None = None
        self.journal: list[Entry] = []
        self.waiting = 0
        self._sink: Sink | None = None
        # The sink's last failure, for its owner to report (L{_Guarded}).
        self.sink_error: Exception | None = None
        self.sink = sink

    @property
    def sink(self) -> Sink | None:
        """Where every event goes on to (the capture file, behind L{_Guarded}), or L{None}."""
        return self._sink

    @sink.setter
    def sink(self, sink: Sink | None) -> None:
        self.settle()
        self._sink = None if sink is None else _Guarded(sink, self)

    @property
    def records(self) -> deque[ConnectionRecord]:
        """The records kept, oldest first (the journal settled first)."""
        self.settle()
        return self._records

    @property
    def used(self) -> int:
        """The bytes of memory the records kept are accounted."""
        self.settle()
        return self._used

    @property
    def evicted(self) -> int:
        """How many records went to stay within the budget."""
        self.settle()
        return self._evicted

    def settle(self) -> None:
        """
        What waits in the journal, folded into each record's bounds (the
        oldest records going past the budget), then handed to the sink in
        one batch, with the notes for each packet.
        """
        journal = self.journal
        if not journal:
            return
        self.journal = []
        self.waiting = 0
        if self.keep_bytes:
            comments = self._fold(journal)
        else:  # only the notes waiting for a packet are looked for
            comments = {i: e[1]._comments(e[2]) for i, e in enumerate(journal) if e[1]._pending}
        self._evict()
        sink = self._sink
        if sink is not None:
            sink.batch(journal, comments)

    def _fold(self, journal: list[Entry]) -> dict[int, list[str]]:
        """Each entry into its record's bounds: the notes waiting for each entry's packet."""
        comments: dict[int, list[str]] = {}
        for index, (at, record, direction, data) in enumerate(journal):
            if record._pending:
                comments[index] = record._comments(direction)
            kept = record._bytes[direction]
            rolling, size = kept.tail, len(data)
            tail = record.tail
            if len(rolling) == KEEP_BYTES and len(tail) == KEEP_EVENTS and size <= KEEP_BYTES:
                # The steady state, inline: every bound full, so nothing more is kept nor charged.
                offset = kept.total
                kept.total = offset + size
                rolling += data
                del rolling[:size]
                tail.append((at, "data", direction, "", size, offset))
                record._left_out += 1
            else:
                record._fold(at, direction, data)
        return comments

    def open(
        self,
        kind: str,
        listener: str,
        client: Address,
        server: Address,
        note: str = "",
        owner: object = None,
    ) -> ConnectionRecord:
        """
        A new record: a connection accepted (C{kind} "tcp") or a UDP source
        first heard ("udp"), of C{owner} where the store is shared.
        """
        self.settle()
        self.count += 1
        record = ConnectionRecord(self, self.count, kind, listener, client, server, note)
        record.owner = owner
        self._records.append(record)
        self.charge(record, RECORD_COST)
        opened = "accepted" if kind == "tcp" else "first datagram"
        record._event((record.opened, "open", None, opened, 0, 0))
        if kind == "tcp":
            self.open_streams += 1
            if self._sink is not None:
                self._sink.opened(record)
        return record

    def charge(self, record: ConnectionRecord, cost: int) -> None:
        """C{record} keeps C{cost} more bytes: past the budget, the oldest records go (counted)."""
        if not record.kept:
            return
        record.cost += cost
        self._used += cost
        self._evict()

    def _evict(self) -> None:
        records = self._records
        while self._used > self.budget and len(records) > 1:
            oldest = records.popleft()
            self._used -= oldest.cost
            self._evicted += 1
            oldest.forget()


class _Guarded:
    """
    The sink as the recording hands it events: a sink that fails (a full
    disk, a rotation that cannot rename) never fails the connection whose
    event it was writing (the journal is settled inside a read, a close
    inside C{connectionLost}).  The failure is kept as the recorder's
    C{sink_error} for the sink's owner to report, once
    (L{echoapp._record.service.RecordService}); anything else asked of
    the sink goes to it as it is.
    """

    def __init__(self, sink: Sink, recorder: Recorder) -> None:
        self.sink = sink
        self.recorder = recorder

    def _call(self, method: Callable[..., Any], *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as error:
            self.recorder.sink_error = error
            return None

    def opened(self, record: ConnectionRecord) -> None:
        self._call(self.sink.opened, record)

    def batch(self, entries: list[Entry], comments: dict[int, list[str]]) -> None:
        self._call(self.sink.batch, entries, comments)

    def closed(self, record: ConnectionRecord, side: str, how: str, comments: list[str]) -> None:
        self._call(self.sink.closed, record, side, how, comments)

    def ended(self, record: ConnectionRecord) -> None:
        self._call(self.sink.ended, record)

    def comment_last(self, record: ConnectionRecord, text: str) -> bool:
        return bool(self._call(self.sink.comment_last, record, text))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sink, name)
