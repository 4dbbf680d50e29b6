"""
Faults on demand (L{echoapp._faults}): each fault, its syntax and its seed,
first on a clock (what is sent when), then against unmodified real clients
over loopback: a Python socket, asyncio, C{echoapp-client} and C{nc}.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import tracemalloc
from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import DatagramProtocol, Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport, StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echoapp import testing
from echoapp._faults import (
    HELD_BYTES,
    PIECES_PER_PASS,
    FaultPlan,
    Faults,
    FaultyConnection,
    FaultyDatagramProtocol,
    FaultyFactory,
)
from echoapp._faults.datagrams import REORDER_HOLD
from echoapp._limits.descriptors import DESCRIPTORS
from tests.support import RecordingProducer, installed_env, make_certificates


class Answer(Protocol):
    """Replies to each chunk with C{<chunk>} and closes on C{bye}."""

    def dataReceived(self, data: bytes) -> None:
        if data == b"bye":
            self.transport.write(b"farewell")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.transport.write(b"<" + data + b">")  # type: ignore[union-attr]


class Transport(StringTransport):
    """StringTransport with the half-close a TCP transport has."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connection(
    faults: Faults, clock: Clock | None = None, plan: FaultPlan | None = None
) -> tuple[Any, Transport, Clock]:
    clock = clock or Clock()
    factory = FaultyFactory(Factory.forProtocol(Answer), plan or FaultPlan(faults, clock))
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


class SyntaxTests(SynchronousTestCase):
    def test_parse(self) -> None:
        faults = Faults.parse("latency=50ms, jitter=10ms,bandwidth=16KB,slice=1,slice-delay=2ms,seed=7")
        self.assertEqual(
            (faults.latency, faults.jitter, faults.bandwidth, faults.slice, faults.slice_delay, faults.seed),
            (0.05, 0.01, 16384, 1, 0.002, 7),
        )
        self.assertEqual(Faults.parse("stall=read,refuse,loss=0.5").stall, "read")
        self.assertEqual(Faults.parse("reset-after=2s", Faults(latency=1)).latency, 1, "on top of a base")

    def test_one_line_errors(self) -> None:
        for text, reason in [
            ("bogus=1", "unknown fault 'bogus'"),
            ("latency=5", "fault latency: '5' is not a duration (like 50ms or 2s)"),
            ("loss=2", "fault loss: '2' is not a probability from 0 to 1"),
            ("stall=sometimes", "fault stall: stall is read or answer, not 'sometimes'"),
            ("refuse=3", "fault refuse: '3': this fault takes no value"),
            ("seed=x", "fault seed: seed 'x' is not a whole number"),
            ("latency=" + "9" * 400 + "s", "fault latency: '99999999999999999999'... is longer than a day"),
            ("slow-close=86401s", "fault slow-close: '86401s' is longer than a day"),
        ]:
            with self.assertRaises(ValueError) as raised:
                Faults.parse(text)
            self.assertIn(reason, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))

    def test_shown_as_typed(self) -> None:
        text = "latency=50ms,stall=read,refuse,loss=0.5,seed=3"
        self.assertEqual(str(Faults.parse(text)), text)
        self.assertEqual(Faults.parse(str(Faults.parse(text))), Faults.parse(text))

    def test_off_means_off(self) -> None:
        self.assertFalse(Faults())
        self.assertFalse(Faults(seed=3, fraction=0.5), "a seed alone is no fault")
        self.assertTrue(Faults(refuse=True))


class ClockTests(SynchronousTestCase):
    """What is sent when, with a clock the test turns."""

    def test_latency_keeps_order_and_jitter_comes_from_the_seed(self) -> None:
        protocol, transport, clock = connection(Faults(latency=0.1, jitter=0.05, seed=7))
        protocol.dataReceived(b"a")
        protocol.dataReceived(b"b")
        clock.advance(0.049)
        self.assertEqual(transport.value(), b"", "nothing before latency - jitter")
        clock.advance(1)
        self.assertEqual(transport.value(), b"<a><b>")
        delays = [FaultPlan(Faults(latency=0.1, jitter=0.05, seed=7)).delay() for _ in range(2)]
        again = [FaultPlan(Faults(latency=0.1, jitter=0.05, seed=7)).delay() for _ in range(2)]
        self.assertEqual(delays, again, "the same seed, the same delays")

    def test_bandwidth(self) -> None:
        protocol, transport, clock = connection(Faults(bandwidth=1000))
        protocol.dataReceived(b"x" * 998)  # a 1000-byte reply at 1000 B/s
        clock.advance(0.5)
        self.assertLess(len(transport.value()), 600)
        clock.advance(0.6)
        self.assertEqual(len(transport.value()), 1000)

    def test_slices(self) -> None:
        protocol, transport, clock = connection(Faults(slice=2, slice_delay=0.01))
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"abcd")
        clock.pump([0.01] * 5)
        self.assertEqual(writes, [b"<a", b"bc", b"d>"])

    def test_slice_variation_varies_the_pieces_from_the_seed(self) -> None:
        def pieces(seed: int) -> list[bytes]:
            protocol, transport, clock = connection(Faults(slice=4, slice_variation=3, seed=seed))
            writes: list[bytes] = []
            transport.write = writes.append  # type: ignore[method-assign]
            protocol.dataReceived(b"x" * 198)
            clock.advance(0)
            return writes

        first = pieces(7)
        self.assertEqual(b"".join(first), b"<" + b"x" * 198 + b">", "every byte, in order")
        self.assertTrue(all(1 <= len(piece) <= 7 for piece in first), [len(piece) for piece in first])
        self.assertGreater(len({len(piece) for piece in first}), 3, "sizes vary")
        self.assertEqual(pieces(7), first, "one seed, the same cuts")
        self.assertNotEqual(pieces(8), first)

    def test_slice_variation_needs_a_slice(self) -> None:
        error = self.assertRaises(ValueError, Faults, slice_variation=2)
        self.assertIn("slice-variation", str(error))
        self.assertEqual(str(Faults.parse("slice=4,slice-variation=2")), "slice=4,slice-variation=2")

    def test_close_after_time_is_a_fin_and_drops_what_is_queued(self) -> None:
        protocol, transport, clock = connection(Faults(close_after=2, latency=5))
        protocol.dataReceived(b"hi")
        clock.advance(1.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting, "closed")
        self.assertFalse(transport.disconnected, "with a FIN: not aborted")
        clock.advance(10)
        self.assertEqual(transport.value(), b"", "the reply still held by the latency is dropped")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_after_follows_the_plan_and_goes_with_the_connection(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(), clock)
        protocol, _, _ = connection(Faults(), clock, plan)
        plan.faults = Faults(close_after=3)
        self.assertEqual(len(clock.getDelayedCalls()), 1, "set later, it reaches the open connection")
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [], "no timer outlives the connection")

    def test_reset_and_half_close_after_bytes(self) -> None:
        protocol, transport, clock = connection(Faults(reset_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual((transport.value(), transport.disconnected), (b"<ab", True), "aborted")
        protocol, transport, clock = connection(Faults(half_close_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual(transport.value(), b"<ab")
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (True, False), "a FIN, still reading"
        )

    def test_held_replies_are_bounded(self) -> None:
        """A client flooding a slow peer pauses itself, as a full write buffer would."""
        protocol, transport, clock = connection(Faults(latency=10))
        for _ in range(300):
            protocol.dataReceived(b"x" * 4096)
        self.assertEqual(transport.producerState, "paused", "reading stops past 1 MiB held")
        clock.advance(11)
        self.assertEqual(transport.producerState, "producing", "and resumes once they have gone")
        self.assertEqual(len(transport.value()), 300 * 4098)

    def test_a_flood_holds_at_most_the_stated_bound(self) -> None:
        # Cut into pieces as queued, one 64 KiB reply under slice=1 was 6.6 MiB.
        chunk = b"x" * 65536
        for faults in (Faults(slice=1, slice_delay=0.001), Faults(bandwidth=10)):
            tracemalloc.start()
            try:
                protocol, transport, _ = connection(faults)
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(40):
                    if transport.producerState == "paused":
                        break
                    protocol.dataReceived(chunk)
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            self.assertEqual(transport.producerState, "paused", faults)
            self.assertLess(held, HELD_BYTES + 3 * len(chunk), faults)

    def test_one_pass_sends_a_bounded_number_of_pieces(self) -> None:
        protocol, transport, clock = connection(Faults(slice=1))
        protocol.dataReceived(b"x" * 3000)
        [pump] = clock.getDelayedCalls()
        pump.func(*pump.args, **pump.kw)  # one pass, as the reactor runs it
        self.assertEqual(len(transport.value()), PIECES_PER_PASS, "then the reactor runs again")
        clock.advance(0)
        self.assertEqual(len(transport.value()), 3002)

    def test_no_piece_is_sent_while_the_transport_is_full(self) -> None:
        protocol, transport, clock = connection(Faults(slice=1))
        protocol.registerProducer(RecordingProducer(), True)  # as the guard does for the service
        transport.producer.pauseProducing()  # the transport's buffer is full
        protocol.dataReceived(b"abc")
        clock.advance(0)
        self.assertEqual(transport.value(), b"")
        transport.producer.resumeProducing()
        clock.advance(0)
        self.assertEqual(transport.value(), b"<abc>")

    def test_reset_after_time(self) -> None:
        _, transport, clock = connection(Faults(reset_after=2))
        clock.advance(1.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.2)
        self.assertTrue(transport.disconnected, "aborted")

    def test_a_slow_close_timer_goes_with_its_connection(self) -> None:
        protocol, _, clock = connection(Faults(slow_close=600))
        protocol.dataReceived(b"bye")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)  # the client left first
        self.assertEqual(clock.getDelayedCalls(), [], "no timer holds the dead transport for 600 s")

    def test_slow_close(self) -> None:
        protocol, transport, clock = connection(Faults(slow_close=3))
        protocol.dataReceived(b"bye")
        self.assertEqual(transport.value(), b"farewell")
        clock.advance(2.9)
        self.assertFalse(transport.disconnecting, "the close waits")
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_stall_answer_and_read(self) -> None:
        protocol, transport, _ = connection(Faults(stall="answer"))
        protocol.dataReceived(b"hi")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting, "no answer, and no close either")
        protocol, transport, _ = connection(Faults(stall="read"))
        self.assertEqual(transport.producerState, "paused")

    def test_refuse_never_builds_the_service_protocol(self) -> None:
        built: list[object] = []
        factory = FaultyFactory(
            Factory.forProtocol(lambda: built.append(1) or Answer()), FaultPlan(Faults(refuse=True))
        )
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(built, [])

    def test_a_refused_connection_counts_its_descriptor_until_it_is_gone(self) -> None:
        factory = FaultyFactory(Factory.forProtocol(Answer), FaultPlan(Faults(refuse=True)))
        before = DESCRIPTORS.open
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(Transport())
        self.assertEqual(DESCRIPTORS.open, before + 1, "it holds a socket, as any refusal does")
        protocol.connectionLost(None)
        protocol.connectionLost(None)
        self.assertEqual(DESCRIPTORS.open, before, "released once")

    def test_fraction_is_seeded(self) -> None:
        def pattern() -> list[bool]:
            factory = FaultyFactory(
                Factory.forProtocol(Answer), FaultPlan(Faults(refuse=True, fraction=0.5, seed=11))
            )
            return [isinstance(factory.buildProtocol(None), FaultyConnection | Answer) for _ in range(40)]

        first = pattern()
        self.assertEqual(first, pattern(), "the same seed spares the same connections")
        self.assertTrue(0 < first.count(True) < 40, "some connections are spared, some are not")

    def test_a_plan_wraps_every_connection(self) -> None:
        """Faults set later must reach it: a plan without faults wraps too (no plan: nothing is wrapped)."""
        factory = FaultyFactory(Factory.forProtocol(Answer), FaultPlan(Faults()))
        self.assertIsInstance(factory.buildProtocol(None), FaultyConnection)

    def test_without_faults_every_call_passes_straight_on(self) -> None:
        protocol, transport, clock = connection(Faults())
        protocol.dataReceived(b"a")
        self.assertEqual(transport.value(), b"<a>", "at once, no timer")
        self.assertEqual(clock.getDelayedCalls(), [])


class HalfCloseClockTests(SynchronousTestCase):
    """Point 1: the wrapper is half-closeable, and the client's FIN waits for the queued replies."""

    def test_provides_the_interface_and_passes_the_fin_on(self) -> None:
        protocol, transport, clock = connection(Faults(latency=0.1))
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(b"a")
        protocol.readConnectionLost()  # Answer is not half-closeable: a close after the queue
        self.assertEqual((transport.value(), transport.disconnecting), (b"", False))
        clock.advance(0.1)
        self.assertEqual(transport.value(), b"<a>")
        clock.advance(0)
        self.assertTrue(transport.disconnecting, "then the close")

    def test_a_half_closeable_service_hears_it_after_slowed_reads(self) -> None:
        heard: list[bytes] = []

        @implementer(IHalfCloseableProtocol)
        class Listening(Protocol):
            def dataReceived(self, data: bytes) -> None:
                heard.append(data)

            def readConnectionLost(self) -> None:
                heard.append(b"EOF")

            def writeConnectionLost(self) -> None:
                pass

        clock = Clock()
        factory = FaultyFactory(Factory.forProtocol(Listening), FaultPlan(Faults(read_latency=1), clock))
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(Transport())
        protocol.dataReceived(b"a")
        protocol.readConnectionLost()
        self.assertEqual(heard, [])
        clock.advance(1)
        self.assertEqual(heard, [b"a", b"EOF"], "in order, after the read latency")


class TimerClockTests(SynchronousTestCase):
    """Point 2: no timer outlives its connection."""

    def test_close_never_runs_inside_the_services_call(self) -> None:
        protocol, transport, clock = connection(Faults(half_close_after_bytes=2))
        protocol.dataReceived(b"abc")
        clock.advance(0)
        protocol.loseConnection()
        self.assertFalse(transport.disconnecting, "a later turn: the service arms its timers first")
        clock.advance(0)
        self.assertTrue(transport.disconnecting)

    def test_slow_close_and_reset_timers_are_cancelled(self) -> None:
        protocol, _, clock = connection(Faults(slow_close=3, reset_after=10, latency=1))
        protocol.dataReceived(b"a")
        protocol.loseConnection()
        self.assertTrue(clock.getDelayedCalls())
        protocol.connectionLost(None)
        self.assertEqual([call for call in clock.getDelayedCalls() if call.active()], [])


class RunTimeChangeClockTests(SynchronousTestCase):
    """Point 3: every field of a change reaches open connections."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.plan = FaultPlan(Faults(), self.clock)
        self.protocol, self.transport, _ = connection(Faults(), self.clock, self.plan)

    def test_latency_reaches_a_connection_opened_without_faults(self) -> None:
        self.plan.faults = Faults(latency=0.4)
        self.protocol.dataReceived(b"a")
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.4)
        self.assertEqual(self.transport.value(), b"<a>")

    def test_stall_answer_then_back(self) -> None:
        self.plan.faults = Faults(latency=0.1)
        self.plan.faults = Faults(stall="answer")
        self.protocol.dataReceived(b"a")
        self.clock.advance(1)
        self.assertEqual(self.transport.value(), b"")
        self.plan.faults = Faults()
        self.protocol.dataReceived(b"b")
        self.assertEqual(self.transport.value(), b"<b>")

    def test_a_timed_fault_set_later_counts_from_then(self) -> None:
        """As toxiproxy's timeout and reset_peer count from the toxic's arrival, not the opening."""
        self.clock.advance(5)
        self.plan.faults = Faults(close_after=1)
        self.assertFalse(self.transport.disconnecting, "not at once: it began to apply just now")
        self.clock.advance(0.5)
        self.plan.faults = Faults(close_after=1, latency=0.1)  # another change: the count goes on
        self.clock.advance(0.4)
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnecting, "1 s after it was set")

    def test_a_timed_fault_changed_counts_again(self) -> None:
        self.plan.faults = Faults(reset_after=1)
        self.clock.advance(0.8)
        self.plan.faults = Faults(reset_after=2)
        self.clock.advance(1.9)
        self.assertFalse(self.transport.disconnected, "the new value counts from its change")
        self.clock.advance(0.2)
        self.assertTrue(self.transport.disconnected)

    def test_stall_read_and_reset_after_follow_the_plan(self) -> None:
        self.plan.faults = Faults(stall="read")
        self.assertEqual(self.transport.producerState, "paused")
        self.plan.faults = Faults(reset_after=5)
        self.assertEqual(self.transport.producerState, "producing")
        self.clock.advance(5)
        self.assertTrue(self.transport.disconnected, "reset 5s after it opened")


class ReadSideClockTests(SynchronousTestCase):
    """Faults on what the server reads."""

    def test_read_latency(self) -> None:
        protocol, transport, clock = connection(Faults(read_latency=0.2))
        protocol.dataReceived(b"a")
        clock.advance(0.19)
        self.assertEqual(transport.value(), b"", "the service has not read it yet")
        clock.advance(0.01)
        self.assertEqual(transport.value(), b"<a>")

    def test_read_bandwidth_paces_and_stops_reading(self) -> None:
        protocol, transport, clock = connection(Faults(read_bandwidth=1000))
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"x" * 100_000)
        self.assertEqual(transport.producerState, "paused", "the client's send buffer fills")
        clock.advance(0.5)
        self.assertLess(sum(map(len, writes)), 600, "about 500 bytes read in half a second")
        clock.pump([1] * 101)
        self.assertEqual(sum(map(len, writes)), 100_000 + 2 * len(writes))
        self.assertEqual(transport.producerState, "producing")


class SeedClockTests(SynchronousTestCase):
    """Point 9: each connection's draws depend on the seed and its order of arrival only."""

    def test_interleaving_does_not_change_a_connections_delays(self) -> None:
        def run(order: list[int]) -> list[list[float]]:
            clock = Clock()
            plan = FaultPlan(Faults(latency=1, jitter=0.5, seed=99), clock)
            made = [connection(Faults(), clock, plan) for _ in range(4)]
            seen: list[list[float]] = [[] for _ in made]
            for index, (_, transport, _) in enumerate(made):
                stamp = seen[index].append
                transport.write = lambda data, stamp=stamp: stamp(clock.seconds())  # type: ignore[method-assign,misc]
            for _ in range(5):
                for index in order:
                    made[index][0].dataReceived(b"x")
            clock.pump([0.01] * 200)
            return seen

        self.assertEqual(run([0, 1, 2, 3]), run([3, 1, 0, 2]))


def recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    got = b""
    while len(got) < limit:
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return got


class Replies(DatagramProtocol):
    """Answers each datagram with C{<datagram>}."""

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(b"<" + datagram + b">", addr)  # type: ignore[union-attr]


def datagrams(faults: Faults) -> tuple[FaultyDatagramProtocol, FakeDatagramTransport, Clock]:
    clock = Clock()
    protocol = FaultyDatagramProtocol(Replies(), FaultPlan(faults, clock))
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


A, B = ("127.0.0.1", 5000), ("127.0.0.1", 5001)


class DatagramClockTests(SynchronousTestCase):
    """UDP: reorder within one source, bounded (point 4), latency and jitter, per-source draws."""

    def test_a_lone_reordered_reply_is_sent_after_a_bounded_hold(self) -> None:
        protocol, transport, clock = datagrams(Faults(reorder=1))
        protocol.datagramReceived(b"a", A)
        self.assertEqual(transport.written, [])
        clock.advance(REORDER_HOLD)
        self.assertEqual(transport.written, [(b"<a>", A)], "late, never stranded")

    def test_another_sources_reply_does_not_release_it(self) -> None:
        protocol, transport, clock = datagrams(Faults(reorder=1))
        protocol.datagramReceived(b"a", A)
        protocol.datagramReceived(b"b", B)
        self.assertEqual(transport.written, [], "each source's reply waits for its own next one")
        protocol.datagramReceived(b"c", A)
        self.assertEqual(transport.written, [(b"<c>", A), (b"<a>", A)])
        clock.advance(REORDER_HOLD)
        self.assertEqual(transport.written[-1], (b"<b>", B))

    def test_latency_and_jitter(self) -> None:
        protocol, transport, clock = datagrams(Faults(latency=0.1, jitter=0.05, seed=4))
        protocol.datagramReceived(b"a", A)
        clock.advance(0.049)
        self.assertEqual(transport.written, [])
        clock.advance(0.1)
        self.assertEqual(transport.written, [(b"<a>", A)])

    def test_held_replies_are_bounded(self) -> None:
        protocol, transport, clock = datagrams(Faults(latency=10))
        greeter: Any = protocol.wrapped
        dropped: list[int] = []
        greeter.reply_dropped = lambda: dropped.append(1)
        for _ in range(300):
            protocol.datagramReceived(b"x" * 4096, A)
        self.assertEqual(protocol.faulty.held_bytes, 255 * 4098, "1 MiB held at most")  # type: ignore[union-attr]
        self.assertEqual(len(dropped), 45, "the rest dropped, and counted")
        clock.advance(10)
        self.assertEqual((len(transport.written), protocol.faulty.held_bytes), (255, 0))  # type: ignore[union-attr]

    def test_stopping_leaves_no_timer(self) -> None:
        protocol, _, clock = datagrams(Faults(latency=1, reorder=1))
        protocol.datagramReceived(b"a", A)
        protocol.doStart()
        protocol.doStop()
        self.assertEqual([call for call in clock.getDelayedCalls() if call.active()], [])

    def test_each_source_draws_from_its_own_generator(self) -> None:
        def run(order: list[tuple[str, int]]) -> dict[Any, list[bytes]]:
            protocol, transport, _ = datagrams(Faults(loss=0.5, seed=8))
            protocol.datagramReceived(b"first", A)
            protocol.datagramReceived(b"first", B)
            for number in range(30):
                for source in order:
                    protocol.datagramReceived(b"%d" % number, source)
            return {source: [data for data, to in transport.written if to == source] for source in (A, B)}

        self.assertEqual(run([A, B]), run([B, A]))


class ConditionClockTests(SynchronousTestCase):
    """Faults for some connections and moments: first N, after N messages, a window, a match."""

    def test_first_connections(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(refuse=True, first=2), clock)
        built = [connection(Faults(), clock, plan)[0] for _ in range(3)]
        self.assertEqual([type(each).__name__ for each in built], ["Refused", "Refused", "FaultyConnection"])

    def test_after_messages(self) -> None:
        protocol, transport, _ = connection(Faults(after_messages=2, stall="answer"))
        for line in (b"a\n", b"b\n", b"c\n"):
            protocol.dataReceived(line)
        self.assertEqual(transport.value(), b"<a\n><b\n>", "the third message gets no answer")

    def test_a_window_after_start(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(stall="answer", active_from=1, active_until=2), clock)
        plan.start()
        protocol, transport, _ = connection(Faults(), clock, plan)
        protocol.dataReceived(b"a")
        clock.advance(1)
        protocol.dataReceived(b"b")
        clock.advance(1)
        protocol.dataReceived(b"c")
        self.assertEqual(transport.value(), b"<a><c>")

    def test_a_match_across_reads(self) -> None:
        protocol, transport, _ = connection(Faults(match=b"pay", stall="answer"))
        protocol.dataReceived(b"hello")
        protocol.dataReceived(b"p")
        protocol.dataReceived(b"ay")
        protocol.dataReceived(b"more")
        self.assertEqual(transport.value(), b"<hello><p>", "from the message that completes the match on")

    def test_parsed_and_shown(self) -> None:
        text = "reset-after-bytes=0,first=1,after-messages=2,active-from=500ms,active-until=2000ms,match=pay"
        self.assertEqual(str(Faults.parse(text)), text)
        self.assertFalse(Faults(first=1, match="x"), "conditions alone are no fault")


class RealClientTests(TestCase):
    """Unmodified clients meet each fault, over loopback, in a thread (the reactor serves meanwhile)."""

    async def test_read_timeout_fails_on_2s_latency_and_passes_on_100ms(self) -> None:
        def ask(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(100)

        slow = testing.greeter(self, faults=Faults(latency=2))
        with self.assertRaises(TimeoutError):
            await deferToThread(ask, slow.port)
        quick = testing.greeter(self, faults=Faults(latency=0.1))
        self.assertEqual(await deferToThread(ask, quick.port), b"Welcome!\r\n")

    async def test_asyncio_reader_sees_the_reset(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after_bytes=20))

        async def client() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
            writer.write(b"Michael\n")
            got = b""
            try:
                while True:
                    data = await reader.read(100)
                    if not data:
                        return got
                    got += data
            finally:
                writer.close()

        with self.assertRaises(ConnectionResetError):
            await deferToThread(asyncio.run, client())

    async def test_socket_reader_sees_a_reset_after_a_time(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after=0.3))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                recv_all(sock)

        with self.assertRaises(ConnectionResetError):
            await deferToThread(client)

    async def test_slow_close_keeps_the_connection_open_after_the_farewell(self) -> None:
        peer = testing.greeter(self, faults=Faults(slow_close=2))

        def client() -> tuple[bytes, bool, bytes]:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                sock.sendall(b"exit\n")
                got = b""
                while not got.endswith(b"Goodbye!\n"):
                    got += sock.recv(100)
                sock.settimeout(0.5)
                try:
                    still_open = sock.recv(100) != b""
                except TimeoutError:
                    still_open = True
                sock.settimeout(10)
                return got, still_open, recv_all(sock)

        got, still_open, rest = await deferToThread(client)
        self.assertEqual(got, b"Welcome!\r\nGoodbye!\n")
        self.assertTrue(still_open, "no FIN right after the farewell")
        self.assertEqual(rest, b"", "then the close")

    async def test_one_recv_per_message_breaks_under_slicing(self) -> None:
        peer = testing.greeter(self, banner="", faults=Faults(slice=3, slice_delay=0.02))

        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
                sock.sendall(b"Bob\n")
                first = sock.recv(100)
                time.sleep(0.2)
                return first, first + sock.recv(100)

        first, whole = await deferToThread(client)
        self.assertEqual(first, b"Hel", "one recv() is not one message")
        self.assertEqual(whole, b"Hello, Bob!\n", "reassembled, every byte is there")

    async def test_half_close_and_bandwidth_with_nc(self) -> None:
        if shutil.which("nc") is None:
            self.skipTest("nc is not installed (Debian: netcat-openbsd)")
        peer = testing.greeter(self, faults=Faults(half_close_after_bytes=10, bandwidth=64))

        def client() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["nc", "-d", "127.0.0.1", str(peer.port)], capture_output=True, timeout=20)

        result = await deferToThread(client)
        self.assertEqual(result.stdout, b"Welcome!\r\n", "ten bytes at 64 B/s, then a FIN, and nc is done")

    async def test_echoapp_client_times_out_on_stall_answer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="answer"))
        args = ["echoapp-client", "tcp", "--connect", f"tcp:127.0.0.1:{peer.port}", "--timeout", "1", "hi"]
        result = await deferToThread(
            subprocess.run, args, capture_output=True, text=True, env=installed_env()
        )
        self.assertEqual(result.returncode, 4, result.stderr)

    async def test_stall_read_fills_the_clients_send_buffer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="read"))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as sock:
                sock.sendall(b"x" * (64 << 20))

        with self.assertRaises(TimeoutError):
            await deferToThread(client)
        [listener] = [child for child in peer.service if hasattr(child, "factory")]
        self.assertEqual(listener.factory.stats.bytes_in, 0, "the server read nothing of it")

    async def test_refuse_and_change_while_running(self) -> None:
        peer = testing.greeter(self)

        def banner() -> bytes:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
                return recv_all(sock, 10)

        self.assertEqual(await deferToThread(banner), b"Welcome!\r\n")
        peer.faults = Faults(refuse=True)
        self.assertEqual(await deferToThread(banner), b"", "accepted, then closed at once")

    async def test_tls_handshake_stalls(self) -> None:
        paths = make_certificates(self.mktemp() + "-certs")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        peer = testing.greeter(self, listen=listen, faults=Faults(stall_handshake=True))

        def client() -> None:
            context = ssl.create_default_context(cafile=paths["ca.pem"])
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="localhost"):
                    pass

        with self.assertRaises(TimeoutError):
            await deferToThread(client)

    async def test_udp_loss_duplication_reordering(self) -> None:
        def exchange(port: int, datagrams: list[bytes], expect: int) -> list[bytes]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.5)
                for datagram in datagrams:
                    sock.sendto(datagram, ("127.0.0.1", port))
                replies = []
                try:
                    while len(replies) < expect + 1:
                        replies.append(sock.recvfrom(100)[0])
                except TimeoutError:
                    pass
                return replies

        lossy = testing.udp(self, faults=Faults(loss=1))
        self.assertEqual(await deferToThread(exchange, lossy.port, [b"a"], 1), [])
        doubled = testing.udp(self, faults=Faults(duplicate=1))
        self.assertEqual(await deferToThread(exchange, doubled.port, [b"a"], 2), [b"Hello, a!"] * 2)
        swapped = testing.udp(self, faults=Faults(reorder=1))
        self.assertEqual(
            await deferToThread(exchange, swapped.port, [b"a", b"b"], 2), [b"Hello, b!", b"Hello, a!"]
        )


class PluginOptionTests(SynchronousTestCase):
    def test_fault_option_seed_printed_and_errors_in_one_line(self) -> None:
        with testing.Process("echoapp-tcp", "--fault", "latency=10ms", "--fault", "seed=42") as server:
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                self.assertEqual(sock.recv(100), b"Welcome!\r\n")
        self.assertIn("faults: latency=10ms,seed=42 (seed=42)", server.output)
        self.assertEqual(server.seed, 42)
        result = subprocess.run(
            ["twistd", "-n", "--pidfile=", "echoapp-tcp", "--fault", "latency=fast"],
            capture_output=True,
            text=True,
            env=installed_env(),
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("--fault: fault latency: 'fast' is not a duration (like 50ms or 2s)", result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_repeated_fault_options_do_not_depend_on_their_order(self) -> None:
        from echoapp._tap import tcp

        for order in (["slice-variation=4", "slice=16"], ["slice=16", "slice-variation=4"]):
            options = tcp.Options()
            options.parseOptions([arg for text in order for arg in ("--fault", text)])
            self.assertEqual(options["faults"].faults, Faults(slice=16, slice_variation=4), order)

    def test_without_faults_nothing_is_wrapped(self) -> None:
        from echoapp._tap import tcp

        options = tcp.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        self.assertIsNone(options["faults"], "the benchmarked path: no wrapper at all")
