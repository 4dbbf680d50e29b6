"""
Every fault's action in the wire record (the hook of L{echoapp._record}
called by the fault pieces of L{echoapp._faults}), on a clock the test
turns, so each timeline is the same every run: what the fault did, when,
and which way, beside the bytes it changed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import FaultPlan, Faults, FaultyDatagramProtocol, FaultyFactory
from echoapp._faults.sending import RECORDED_PIECES_PER_PASS
from echoapp._proxy.toxics import ProxyFaults, Toxic
from echoapp._record import Recorder, RecordingDatagramProtocol, RecordingFactory, render
from tests.support import FaultAnswer, HalfClosingTransport, RecordingUDPTransport

SOURCE = ("127.0.0.1", 5000)


class Connection:
    """A L{FaultAnswer} behind faults, behind the recorder, on a clock: stacked as a service stacks them."""

    def __init__(self, faults: Faults | None = None, plan: Any = None, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.recorder = Recorder(self.clock)
        plan = plan if plan is not None else FaultPlan(faults, self.clock)
        factory = RecordingFactory(FaultyFactory(Factory.forProtocol(FaultAnswer), plan), self.recorder, "t")
        self.protocol = factory.buildProtocol(None)
        self.transport = HalfClosingTransport()
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes, then: float = 0.0) -> None:
        self.protocol.dataReceived(data)
        self.clock.advance(then)

    def lines(self) -> list[str]:
        """The record's lines after its header (the events, and the notes on them)."""
        return render(self.recorder).splitlines()[1:]

    def faults(self) -> list[str]:
        """Only the faults' lines: time, way and note."""
        return [line for line in self.lines() if "fault:" in line]


class SendingTests(SynchronousTestCase):
    def test_a_recorded_pass_sends_fewer_slices(self) -> None:
        """
        Each slice of a recorded connection is a note and a packet of its
        own: a pass sends L{RECORDED_PIECES_PER_PASS} of them, so the rest
        of the reactor is not held for a pass of 1,024 (100 ms and more).
        """
        conn = Connection(Faults(slice=1))
        conn.protocol.dataReceived(b"x" * 3000)
        [pump] = conn.clock.getDelayedCalls()
        pump.func(*pump.args, **pump.kw)  # one pass, as the reactor runs it
        self.assertEqual(len(conn.transport.value()), RECORDED_PIECES_PER_PASS)
        for _ in range(3002 // RECORDED_PIECES_PER_PASS):
            conn.clock.advance(0)
        self.assertEqual(len(conn.transport.value()), 3002, "the rest in the passes after it")

    def test_latency_is_held_then_sent(self) -> None:
        conn = Connection(Faults(latency=0.2))
        conn.send(b"Hello", 0.2)
        self.assertEqual(
            conn.lines()[1:4],
            [
                '+0.000  client->server  5 B  "Hello"',
                "+0.000  server->client  fault: latency: held 7 B for 200 ms",
                '+0.200  server->client  7 B  "<Hello>"',
            ],
        )

    def test_slices_each_with_its_delay(self) -> None:
        conn = Connection(Faults(slice=3, slice_delay=0.01))
        conn.send(b"abcde")
        conn.clock.pump([0, 0.01, 0.01, 0.01])
        self.assertEqual(
            conn.faults(),
            [
                "+0.000  server->client  fault: slice: 7 B, cut into slices of 3 B 10 ms apart",
                "+0.000  server->client  fault: slice 1 of 3: 3 B (bytes 0-2 of 7)",
                "+0.010  server->client  fault: slice 2 of 3: 3 B (bytes 3-5 of 7), 10 ms after the last",
                "+0.020  server->client  fault: slice 3 of 3: 1 B (bytes 6-6 of 7), 10 ms after the last",
            ],
        )
        self.assertEqual(conn.transport.value(), b"<abcde>")

    def test_bandwidth_pacing(self) -> None:
        conn = Connection(Faults(bandwidth=100))
        conn.send(b"x" * 48, 1)
        self.assertEqual(
            conn.faults(), ["+0.000  server->client  fault: bandwidth: 50 B, paced at 100 B/s (500 ms)"]
        )

    def test_stall_answer_begins_and_ends(self) -> None:
        plan = FaultPlan(Faults(stall="answer"), Clock())
        conn = Connection(plan=plan, clock=plan.clock)  # type: ignore[arg-type]
        conn.send(b"one", 1)
        conn.send(b"two", 1)
        plan.faults = Faults()
        conn.send(b"three")
        self.assertEqual(
            conn.faults(),
            [
                "+0.000  fault: stall begun: replies are not sent (the first, 5 B, swallowed)",
                "+2.000  fault: change: faults now none",
                "+2.000  server->client  fault: stall ended: replies are sent again (10 B swallowed)",
            ],
        )


class Packets:
    """A sink that keeps what a capture would write: each packet's kind and its comments."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self._packets: list[tuple[str, list[str]]] = []

    @property
    def packets(self) -> list[tuple[str, list[str]]]:
        """The packets so far: the journal settled first, as a capture's reader would see them."""
        self.recorder.settle()
        return self._packets

    def opened(self, record: Any) -> None:
        pass

    def batch(self, entries: list[Any], comments: dict[int, list[str]]) -> None:
        for index, (_, _, direction, data) in enumerate(entries):
            self._packets.append((f"{direction} {data!r}", list(comments.get(index, []))))

    def closed(self, record: Any, side: str, how: str, comments: list[str]) -> None:
        self._packets.append((f"{side} {how}", list(comments)))

    def ended(self, record: Any) -> None:
        pass

    def comment_last(self, record: Any, text: str) -> bool:
        self._packets[-1][1].append(text)
        return True


def with_packets(conn: Connection) -> Packets:
    packets = Packets(conn.recorder)
    conn.recorder.sink = packets
    return packets


class ClosingTests(SynchronousTestCase):
    def test_reset_after_bytes_is_a_comment_on_the_rst(self) -> None:
        clock = Clock()
        conn = Connection(Faults(reset_after_bytes=3), clock=clock)
        packets = with_packets(conn)
        conn.send(b"abcd", 0)
        self.assertEqual(
            packets.packets,
            [
                ("client->server b'abcd'", []),
                ("server->client b'<ab'", []),
                ("server RST", ["reset after 3 B"]),
            ],
        )

    def test_timed_close_and_reset(self) -> None:
        conn = Connection(Faults(close_after=2, latency=5))
        conn.send(b"hi", 2)
        self.assertEqual(conn.faults()[-1], "+2.000  fault: closed after 2000 ms, 104 B held dropped")
        conn = Connection(Faults(reset_after=1.5))
        packets = with_packets(conn)
        conn.clock.advance(1.5)
        self.assertEqual(packets.packets, [("server RST", ["reset after 1500 ms"])])

    def test_slow_close_on_the_fin(self) -> None:
        conn = Connection(Faults(slow_close=0.3))
        packets = with_packets(conn)
        conn.send(b"bye", 0.3)
        self.assertEqual(
            packets.packets[-1], ("server FIN", ["slow-close: the close went 300 ms after it was asked for"])
        )

    def test_half_close_after_bytes(self) -> None:
        conn = Connection(Faults(half_close_after_bytes=2))
        conn.send(b"abc", 0)
        self.assertEqual(conn.faults(), ["+0.000  fault: half-close: FIN after 2 B"])

    def test_refuse(self) -> None:
        conn = Connection(Faults(refuse=True))
        self.assertEqual(conn.faults(), ["+0.000  fault: refused: closed at once, the service never saw it"])
        self.assertTrue(conn.transport.disconnecting)


class ReadingTests(SynchronousTestCase):
    def test_stall_read_begins_and_ends_with_the_plan(self) -> None:
        plan = FaultPlan(Faults(stall="read"), Clock())
        conn = Connection(plan=plan, clock=plan.clock)  # type: ignore[arg-type]
        self.assertEqual(conn.transport.producerState, "paused")
        conn.clock.advance(3)
        plan.faults = Faults()
        self.assertEqual(
            conn.faults(),
            [
                "+0.000  fault: stall begun: the client's bytes are not read",
                "+3.000  fault: change: faults now none",
                "+3.000  fault: stall ended: reading again",
            ],
        )

    def test_read_latency_is_a_comment_on_the_clients_packet(self) -> None:
        conn = Connection(Faults(read_latency=0.05))
        packets = with_packets(conn)
        conn.send(b"hi", 0.05)
        self.assertEqual(
            packets.packets,
            [
                ("client->server b'hi'", ["read-latency: read 2 B 50 ms late"]),
                ("server->client b'<hi>'", []),
            ],
        )


class ConditionTests(SynchronousTestCase):
    def test_after_messages_switches_on_at_the_message(self) -> None:
        conn = Connection(Faults(latency=0.1, after_messages=1))
        conn.send(b"one\n", 1)
        conn.send(b"two\n", 1)
        self.assertEqual(
            conn.faults()[0], "+1.000  fault: condition: faults on (after-messages=1): latency=100ms"
        )

    def test_active_until_switches_off(self) -> None:
        conn = Connection(Faults(latency=0.1, active_until=1))
        conn.send(b"one", 2)
        conn.send(b"two", 0)
        self.assertEqual(
            [line for line in conn.faults() if "condition" in line],
            [
                "+0.000  fault: condition: faults on (active-until=1000ms): latency=100ms",
                "+2.000  fault: condition: faults off (active-until=1000ms)",
            ],
        )

    def test_first_is_on_from_the_arrival(self) -> None:
        conn = Connection(Faults(latency=0.1, first=1))
        self.assertEqual(conn.faults(), ["+0.000  fault: condition: faults on (first=1): latency=100ms"])


class ToxicChangeTests(SynchronousTestCase):
    def test_a_toxic_added_and_removed_while_open(self) -> None:
        clock = Clock()
        proxy = ProxyFaults(seed=1, clock=clock)
        conn = Connection(plan=proxy.plans["downstream"], clock=clock)
        clock.advance(1)
        proxy.set(Toxic("slow", "latency", "downstream", 1.0, Faults(latency=0.2)))
        proxy.set(Toxic("up", "latency", "upstream", 1.0, Faults(latency=0.2)))  # the other stream's
        clock.advance(1)
        proxy.remove("slow")
        self.assertEqual(
            conn.faults(),
            [
                "+1.000  fault: change: toxic slow (latency, latency=200ms) added",
                "+2.000  fault: change: toxic slow (latency) removed",
            ],
        )


class Replies(DatagramProtocol):
    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(b"<" + datagram + b">", addr)  # type: ignore[union-attr]


class DatagramTests(SynchronousTestCase):
    def port(self, faults: Faults) -> tuple[RecordingDatagramProtocol, Packets, Clock, Recorder]:
        clock = Clock()
        recorder = Recorder(clock)
        packets = Packets(recorder)
        recorder.sink = packets
        protocol = RecordingDatagramProtocol(
            FaultyDatagramProtocol(Replies(), FaultPlan(faults, clock)), recorder, "udp"
        )
        protocol.makeConnection(RecordingUDPTransport())
        return protocol, packets, clock, recorder

    def test_loss_is_a_comment_on_the_request(self) -> None:
        protocol, packets, _, _ = self.port(Faults(loss=1.0))
        protocol.datagramReceived(b"a", SOURCE)
        self.assertEqual(packets.packets, [("client->server b'a'", ["loss: reply dropped (3 B)"])])

    def test_duplicate_and_delay_on_the_copies(self) -> None:
        protocol, packets, clock, _ = self.port(Faults(duplicate=1.0, latency=0.05))
        protocol.datagramReceived(b"a", SOURCE)
        clock.advance(0.05)
        self.assertEqual(
            packets.packets,
            [
                ("client->server b'a'", []),
                ("server->client b'<a>'", ["latency: delayed 50 ms"]),
                ("server->client b'<a>'", ["duplicate: the same reply again, delayed 50 ms"]),
            ],
        )

    def test_reorder(self) -> None:
        protocol, packets, clock, recorder = self.port(Faults(reorder=1.0))
        protocol.datagramReceived(b"a", SOURCE)
        clock.advance(1)
        self.assertEqual(
            packets.packets,
            [
                ("client->server b'a'", ["reorder: reply held back, to go after the next one"]),
                ("server->client b'<a>'", ["reordered: no later reply within 200 ms, sent late"]),
            ],
        )
        self.assertIn("server->client  fault: reorder", render(recorder))


class HeldCommentTests(SynchronousTestCase):
    def test_a_hold_is_noted_on_its_own_first_bytes(self) -> None:
        """A reply queued behind another's slices: its note goes on its own first slice."""
        conn = Connection(Faults(slice=2, slice_delay=0.01))
        packets = with_packets(conn)
        conn.send(b"ab")
        conn.send(b"cd")
        conn.clock.pump([0] + [0.01] * 6)
        self.assertEqual(
            [
                (packet, [c.split(",")[0] for c in comments])
                for packet, comments in packets.packets
                if packet.startswith("server->")
            ],
            [
                ("server->client b'<a'", ["slice: 4 B", "slice 1 of 2: 2 B (bytes 0-1 of 4)"]),
                ("server->client b'b>'", ["slice 2 of 2: 2 B (bytes 2-3 of 4)"]),
                ("server->client b'<c'", ["slice: held 4 B for 20 ms", "slice 1 of 2: 2 B (bytes 0-1 of 4)"]),
                ("server->client b'd>'", ["slice 2 of 2: 2 B (bytes 2-3 of 4)"]),
            ],
        )
