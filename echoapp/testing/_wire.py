"""
The wire record of a test's peer, as a test reads it: L{Record} (what
C{peer.record} returns), its L{Connection}s and their L{WireEvent}s, plain
values a test asserts on; the text timeline and a pcapng capture come from
L{echoapp._record}, whose store keeps each peer's record bounded.

Every in-process peer records, always: a failing test's report shows what
went over the wire, and a test that wants to can assert on it.  What that
costs: each peer keeps at most L{TEST_RECORD_BYTES} of records (a
connection at most L{echoapp._record.RECORD_BOUND}; past it the oldest go
first, counted), and each read, write and close is one more wrapper call
that appends to a journal, folded into the bounded record (the first and
last 4 KiB each way of a connection) in batches and before any read.
Nothing goes to disk unless asked (C{--echoapp-record=DIR}, or
L{Record.save}).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from echoapp._record import CLIENT, ConnectionRecord, Recorder, render
from echoapp._record.capture import CaptureFile
from echoapp._record.serve import piece, replay

T = TypeVar("T")

# Each test peer's records, at most (the daemons' default is 8 MiB): some
# 30 connections that each carried more than 8 KiB, any number of small ones.
TEST_RECORD_BYTES = 1 << 20
# Characters of timeline a failing test's report (or a trial test's log) shows per peer.
REPORT_LIMIT = 8000


@dataclass(frozen=True)
class WireEvent:
    """
    One thing that happened on a connection (or to a UDP source's
    datagrams): C{kind} is C{"open"}, C{"data"}, C{"close"}, C{"fault"} or
    C{"refused"}; C{at} the reactor's time; C{direction}
    C{"client->server"} or C{"server->client"} for data and for a fault
    that acted on one way, else L{None}; C{size} and C{data} the bytes
    (C{data} is L{None} where the bounded record left them out); C{text}
    what the timeline says (C{"server closed (RST)"}, a fault's note).
    """

    at: float
    kind: str
    direction: str | None
    size: int
    data: bytes | None
    text: str


@dataclass(frozen=True)
class Connection:
    """
    One connection's record (C{kind} C{"tcp"}), or one UDP source's
    (C{"udp"}), oldest first by C{number}.  C{from_client} and
    C{from_server} are the bytes each side sent as kept (all of them up to
    8 KiB each way; beyond, the first and last 4 KiB), C{client_total} and
    C{server_total} how many were sent in all.
    """

    number: int
    kind: str
    listener: str
    client: tuple[str, int] | None
    server: tuple[str, int] | None
    note: str
    opened: float
    events: tuple[WireEvent, ...]
    from_client: bytes
    from_server: bytes
    client_total: int
    server_total: int
    refused: str | None
    ended: bool

    @property
    def closes(self) -> list[str]:
        """How it closed, in order: C{"client closed (FIN)"}, C{"server closed (RST)"}, half-closes too."""
        return [event.text for event in self.events if event.kind == "close"]

    @property
    def reset(self) -> bool:
        """Did either side close it with an RST?"""
        return any(text.endswith("(RST)") for text in self.closes)

    @property
    def faults(self) -> list[str]:
        """What each fault did to it, in order, as the timeline says it."""
        return [event.text for event in self.events if event.kind == "fault"]

    def messages(self, direction: str = CLIENT) -> list[bytes]:
        """
        The chunks (for UDP: the datagrams) that went C{direction}
        (C{"client->server"} or C{"server->client"}) as they were read or
        written, those the bounded record kept.
        """
        return [
            e.data
            for e in self.events
            if e.kind == "data" and e.direction == direction and e.data is not None
        ]


class Record:
    """
    What a peer's connections carried: C{str(record)} is the text timeline
    (most relevant first: refused or reset connections, then those a fault
    acted on, then the newest), L{connections} the same as values, and
    L{save} writes a pcapng capture Wireshark and tshark open.  A live view:
    each read is of the record as it is then, taken in the peer's thread.
    """

    def text(self, limit: int | None = None) -> str:
        """The timeline; with C{limit}, at most about that many characters (the most relevant)."""
        raise NotImplementedError

    @property
    def connections(self) -> list[Connection]:
        """Every connection and UDP source kept, oldest first."""
        raise NotImplementedError

    @property
    def evicted(self) -> int:
        """How many older connections' records went, to keep the peer's record within its bound."""
        raise NotImplementedError

    def save(self, path: str) -> None:
        """
        Write the record as a pcapng capture to C{path}: each connection
        whole where it was kept whole (a connection that carried more than 8
        KiB one way has a comment where its middle was left out), each
        fault's action a packet comment.  For every byte of a long test,
        run pytest with C{--echoapp-record=DIR} instead.
        """
        raise NotImplementedError

    def __str__(self) -> str:
        return self.text()


def connection(record: ConnectionRecord) -> Connection:
    """A record as plain values (read in the reactor's thread: the record changes there)."""
    events = []
    for event in record.events():
        data = None
        if event.kind == "data" and event.direction is not None:
            kept, missing = piece(record.bytes[event.direction], event.offset, event.size)
            data = kept if not missing else None
        events.append(WireEvent(event.at, event.kind, event.direction, event.size, data, event.text))
    client, server = (record.bytes[way] for way in (CLIENT, "server->client"))
    return Connection(
        record.number, record.kind, record.listener, record.client, record.server, record.note,
        record.opened, tuple(events), bytes(client.head + client.tail), bytes(server.head + server.tail),
        client.total, server.total, record.refusal, record.ended,
    )  # fmt: skip


class KeptRecord(Record):
    """A L{Recorder}'s record, each read made through C{call} (the peer's thread)."""

    def __init__(self, recorder: Recorder, call: Callable[..., object]) -> None:
        self._recorder = recorder
        self._call = call

    def _in_thread(self, function: Callable[..., T], *args: object) -> T:
        return self._call(function, *args)  # type: ignore[return-value]

    def text(self, limit: int | None = None) -> str:
        return self._in_thread(render, self._recorder, limit)

    @property
    def connections(self) -> list[Connection]:
        def read() -> list[Connection]:
            return [connection(record) for record in self._recorder.records]

        return sorted(self._in_thread(read), key=lambda found: found.number)

    @property
    def evicted(self) -> int:
        return self._in_thread(lambda: self._recorder.evicted)

    def save(self, path: str) -> None:
        capture = CaptureFile(path)
        capture.open()
        try:
            self._in_thread(lambda: replay(list(self._recorder.records), capture))
        finally:
            capture.close()


def capture_for(test: object) -> CaptureFile | None:
    """
    Where a peer of C{test} streams its capture as well, if anywhere: the
    pytest plugin's test case for C{--echoapp-record=DIR} has an
    C{echoapp_capture} that names the next file.
    """
    paths = getattr(test, "echoapp_capture", None)
    return CaptureFile(paths()) if callable(paths) else None


def direct(function: Callable[..., T], *args: object) -> T:
    """A call made where the caller is: for a record no reactor changes any more."""
    return function(*args)
