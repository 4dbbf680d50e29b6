"""
The wire record's core (L{echoapp._record.store}, L{echoapp._record.timeline}):
what a record keeps, its bounds, the store's budget and the text.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._record import (
    CLIENT,
    KEEP_BYTES,
    KEEP_EVENTS,
    RECORD_BOUND,
    SERVER,
    ConnectionRecord,
    Recorder,
    render,
)
from echoapp._record.store import ENTRY_COST, SETTLE_BYTES

CLIENT_ADDRESS = ("127.0.0.1", 51234)
SERVER_ADDRESS = ("127.0.0.1", 40011)


def conversation(recorder: Recorder, clock: Clock) -> ConnectionRecord:
    """The issue's example: a banner held by latency, a message, its reply, the client's FIN."""
    note = "seed 1234, faults latency=200ms"
    record = recorder.open("tcp", "greeter", CLIENT_ADDRESS, SERVER_ADDRESS, note)
    record.fault("latency", "held 10 B for 200 ms", direction=SERVER)
    clock.advance(0.001)
    record.data(CLIENT, b"Hello\n")
    clock.advance(0.199)
    record.data(SERVER, b"Welcome!\r\n")
    clock.advance(0.001)
    record.data(SERVER, b"Hello, Hello!\r\n")
    clock.advance(0.149)
    record.closed("client", "FIN", half=True)
    clock.advance(0.051)
    record.closed("server", "FIN")
    record.lost(clean=True)
    return record


class TimelineTests(SynchronousTestCase):
    def test_the_issue_example(self) -> None:
        """Times from the clock, relative to the open; data with its size and bytes; faults and closes."""
        clock = Clock()
        clock.advance(1000)
        recorder = Recorder(clock)
        conversation(recorder, clock)
        self.assertEqual(
            render(recorder).splitlines(),
            [
                "conn 1  127.0.0.1:51234 -> greeter 127.0.0.1:40011  seed 1234, faults latency=200ms",
                "+0.000  accepted",
                "+0.000  server->client  fault: latency: held 10 B for 200 ms",
                '+0.001  client->server   6 B  "Hello\\n"',
                '+0.200  server->client  10 B  "Welcome!\\r\\n"',
                '+0.201  server->client  15 B  "Hello, Hello!\\r\\n"',
                "+0.350  client half-closed (FIN)",
                "+0.401  server closed (FIN)",
            ],
        )

    def test_deterministic_with_a_fake_clock(self) -> None:
        """The same events on a fake clock give the same text, every run."""
        texts = []
        for _ in range(2):
            clock = Clock()
            recorder = Recorder(clock)
            conversation(recorder, clock)
            texts.append(render(recorder))
        self.assertEqual(texts[0], texts[1])

    def test_most_relevant_first_when_cut(self) -> None:
        """A reset connection comes before newer quiet ones, and what did not fit is counted."""
        clock = Clock()
        recorder = Recorder(clock)
        reset = recorder.open("tcp", "greeter", CLIENT_ADDRESS, SERVER_ADDRESS)
        reset.closed("server", "RST")
        for _ in range(20):
            quiet = recorder.open("tcp", "greeter", CLIENT_ADDRESS, SERVER_ADDRESS)
            quiet.data(CLIENT, b"hi\n")
        text = render(recorder, limit=300)
        self.assertTrue(text.startswith("conn 1 "), text)
        self.assertIn("server closed (RST)", text)
        self.assertRegex(text, r"\.\.\. \d+ more records left out")
        self.assertLess(len(text), 600)

    def test_refusal_says_why(self) -> None:
        clock = Clock()
        recorder = Recorder(clock)
        recorder.open("tcp", "greeter", CLIENT_ADDRESS, SERVER_ADDRESS).refused("too many connections")
        self.assertIn("refused: too many connections", render(recorder))


class BoundTests(SynchronousTestCase):
    def test_bytes_each_way_are_bounded_and_the_rest_counted(self) -> None:
        """The first and last L{KEEP_BYTES} each way; the count of those between is said."""
        recorder = Recorder(Clock())
        record = recorder.open("tcp", "echo", CLIENT_ADDRESS, SERVER_ADDRESS)
        stream = bytes(range(256)) * 400  # 102400 bytes
        for start in range(0, len(stream), 1000):
            record.data(CLIENT, stream[start : start + 1000])
        kept = record.bytes[CLIENT]
        self.assertEqual(bytes(kept.head), stream[:KEEP_BYTES])
        self.assertEqual(bytes(kept.tail), stream[-KEEP_BYTES:])
        self.assertEqual(kept.left_out, len(stream) - 2 * KEEP_BYTES)
        between = len(stream) - 2 * KEEP_BYTES
        self.assertIn(f"{between} B between the first and last not kept", render(recorder))

    def test_events_are_bounded(self) -> None:
        recorder = Recorder(Clock())
        record = recorder.open("tcp", "echo", CLIENT_ADDRESS, SERVER_ADDRESS)
        for _ in range(1000):
            record.data(CLIENT, b"x")
        self.assertEqual(len(list(record.events())), 2 * KEEP_EVENTS)
        self.assertEqual(record.events_left_out, 1001 - 2 * KEEP_EVENTS)
        self.assertIn(f"... {1001 - 2 * KEEP_EVENTS} events left out ...", render(recorder))
        self.assertLessEqual(record.cost, RECORD_BOUND)

    def test_store_keeps_its_budget_oldest_first(self) -> None:
        """Past the budget the oldest records go, counted; the accounted total never passes it."""
        recorder = Recorder(Clock(), budget=4 * RECORD_BOUND)
        records = []
        for _ in range(50):
            record = recorder.open("tcp", "echo", CLIENT_ADDRESS, SERVER_ADDRESS)
            records.append(record)
            for _ in range(200):
                record.data(CLIENT, b"y" * 100)
                record.data(SERVER, b"z" * 100)
            self.assertLessEqual(recorder.used, recorder.budget)
        self.assertEqual(recorder.used, sum(r.cost for r in recorder.records))
        self.assertEqual(recorder.evicted + len(recorder.records), 50)
        self.assertEqual([r.number for r in recorder.records], list(range(51 - len(recorder.records), 51)))
        self.assertFalse(records[0].kept)
        self.assertEqual(bytes(records[0].bytes[CLIENT].head), b"")
        self.assertIn(f"({recorder.evicted} older records evicted", render(recorder))

    def test_the_journal_waiting_to_be_settled_is_bounded(self) -> None:
        """
        Bytes are journaled, not folded, as they go: what waits is settled
        past L{SETTLE_BYTES} (bytes plus L{ENTRY_COST} an entry), so it
        never holds more, and the record reads the same as if folded at once.
        """
        recorder = Recorder(Clock())
        record = recorder.open("tcp", "echo", CLIENT_ADDRESS, SERVER_ADDRESS)
        most = 0
        for _ in range(20000):
            record.data(CLIENT, b"z" * 100)
            most = max(most, recorder.waiting)
            self.assertLessEqual(len(recorder.journal) * (100 + ENTRY_COST), SETTLE_BYTES + 100 + ENTRY_COST)
        self.assertGreater(most, SETTLE_BYTES // 2)  # it did wait: folded in batches
        self.assertEqual(record.bytes[CLIENT].total, 2_000_000)
        self.assertEqual(recorder.journal, [])  # read: settled
        self.assertEqual(record.events_left_out, 20001 - 2 * KEEP_EVENTS)

    def test_fault_without_a_note_shows_its_details(self) -> None:
        recorder = Recorder(Clock())
        record = recorder.open("udp", "udp", CLIENT_ADDRESS, SERVER_ADDRESS)
        record.fault("loss", direction=SERVER, size=12)
        self.assertIn("server->client  fault: loss size=12", render(recorder))
        self.assertTrue(record.faulted)
