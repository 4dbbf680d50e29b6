"""
The byte-stream wrapper (L{echoapp._faults.stream}): what passes straight on, refusals,
stalls and half-closes.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoapp._faults import (
    Draws,
    FaultPlan,
    Faults,
    FaultyConnection,
    FaultyFactory,
)
from echoapp._limits.descriptors import DESCRIPTORS
from tests.support import (
    FaultAnswer,
    HalfClosingTransport,
    faulty_connection,
)


class ConnectionTests(SynchronousTestCase):
    """The hub and its factory."""

    def test_stall_answer_and_read(self) -> None:
        protocol, transport, _ = faulty_connection(Faults(stall="answer"))
        protocol.dataReceived(b"hi")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting, "no answer, and no close either")
        protocol, transport, _ = faulty_connection(Faults(stall="read"))
        self.assertEqual(transport.producerState, "paused")

    def test_refuse_never_builds_the_service_protocol(self) -> None:
        built: list[object] = []
        factory = FaultyFactory(
            Factory.forProtocol(lambda: built.append(1) or FaultAnswer()), FaultPlan(Faults(refuse=True))
        )
        protocol = factory.buildProtocol(None)
        transport = HalfClosingTransport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(built, [])

    def test_a_refused_connection_counts_its_descriptor_until_it_is_gone(self) -> None:
        factory = FaultyFactory(Factory.forProtocol(FaultAnswer), FaultPlan(Faults(refuse=True)))
        before = DESCRIPTORS.open
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(HalfClosingTransport())
        self.assertEqual(DESCRIPTORS.open, before + 1, "it holds a socket, as any refusal does")
        protocol.connectionLost(None)
        protocol.connectionLost(None)
        self.assertEqual(DESCRIPTORS.open, before, "released once")

    def test_a_plan_wraps_every_connection(self) -> None:
        """Faults set later must reach it: a plan without faults wraps too (no plan: nothing is wrapped)."""
        factory = FaultyFactory(Factory.forProtocol(FaultAnswer), FaultPlan(Faults()))
        self.assertIsInstance(factory.buildProtocol(None), FaultyConnection)

    def test_without_faults_every_call_passes_straight_on(self) -> None:
        protocol, transport, clock = faulty_connection(Faults())
        protocol.dataReceived(b"a")
        self.assertEqual(transport.value(), b"<a>", "at once, no timer")
        self.assertEqual(clock.getDelayedCalls(), [])


class QuietTests(SynchronousTestCase):
    """
    A connection no fault applies to (none set, or a toxicity that spares
    it) works out once per change of its plan that it is quiet: its chunks
    pass both ways without asking the plan anything, and a change reaches
    the next chunk.
    """

    def counted(self, plan: FaultPlan) -> tuple[FaultyConnection, HalfClosingTransport, list[str]]:
        """A connection whose draws write down each time they are asked."""
        asked: list[str] = []

        class Counting(Draws):
            def current(self) -> Any:
                asked.append("current")
                return super().current()

            def note(self, data: bytes, datagram: bool = False) -> None:
                asked.append("note")
                super().note(data, datagram)

        plan.arrival = lambda: Counting(plan, 0)  # type: ignore[method-assign]
        protocol, transport, _ = faulty_connection(None, plan=plan)
        del asked[:]  # what the opening asked: once per connection
        return protocol, transport, asked

    def test_no_fault_asks_nothing_per_chunk(self) -> None:
        for plan in (FaultPlan(Faults(), Clock()), FaultPlan(Faults(latency=1.0, fraction=0.0), Clock())):
            protocol, transport, asked = self.counted(plan)
            for _ in range(3):
                protocol.dataReceived(b"a")
            self.assertEqual(transport.value(), b"<a>" * 3)
            self.assertEqual(asked, [], plan.faults)

    def test_a_change_reaches_the_next_chunk(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(), clock)
        protocol, transport, _ = self.counted(plan)
        protocol.dataReceived(b"a")
        plan.faults = Faults(latency=0.5)
        protocol.dataReceived(b"b")
        self.assertEqual(transport.value(), b"<a>", "the reply to b is held")
        clock.advance(0.5)
        self.assertEqual(transport.value(), b"<a><b>")
        plan.faults = Faults()
        protocol.dataReceived(b"c")
        self.assertEqual(transport.value(), b"<a><b><c>")

    def test_a_quiet_connection_steps_aside(self) -> None:
        """
        No method of ours per chunk while quiet: writes are the transport's,
        reads a function that counts lines; a fault, or the close, brings
        the wrapper back.
        """
        clock = Clock()
        plan = FaultPlan(Faults(), clock)
        protocol, transport, _ = self.counted(plan)
        own = type(protocol).dataReceived
        self.assertEqual(protocol.write, transport.write)
        self.assertNotEqual(getattr(protocol.dataReceived, "__func__", None), own)
        plan.faults = Faults(read_latency=0.5)
        self.assertEqual(protocol.dataReceived.__func__, own)
        plan.faults = Faults()
        self.assertEqual(protocol.write, transport.write)
        protocol.loseConnection()
        self.assertNotEqual(protocol.write, transport.write)
        protocol.write(b"late")
        self.assertNotIn(b"late", transport.value(), "nothing is written after the close")

    def test_writes_pass_again_once_what_was_held_has_gone(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(latency=0.5), clock)
        protocol, transport, _ = self.counted(plan)
        protocol.dataReceived(b"a")
        plan.faults = Faults()
        protocol.dataReceived(b"b")
        self.assertEqual(transport.value(), b"", "b waits behind a")
        self.assertNotEqual(protocol.write, transport.write)
        clock.advance(0.5)
        self.assertEqual(transport.value(), b"<a><b>")
        self.assertEqual(protocol.write, transport.write)

    def test_reads_pass_again_once_what_was_held_has_gone(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(read_latency=0.5), clock)
        protocol, transport, asked = self.counted(plan)
        protocol.dataReceived(b"a")
        plan.faults = Faults()
        protocol.dataReceived(b"b")
        self.assertEqual(transport.value(), b"", "b is read after a")
        clock.advance(0.5)
        self.assertEqual(transport.value(), b"<a><b>")
        del asked[:]
        protocol.dataReceived(b"c")
        self.assertEqual((transport.value(), asked), (b"<a><b><c>", []))

    def test_lines_are_counted_while_quiet(self) -> None:
        """after-messages set later counts the lines the connection sent before it."""
        clock = Clock()
        plan = FaultPlan(Faults(), clock)
        protocol, transport, _ = self.counted(plan)
        protocol.dataReceived(b"1\n2\n")
        plan.faults = Faults(after_messages=2, latency=0.5)
        protocol.dataReceived(b"3\n")
        self.assertEqual(transport.value(), b"<1\n2\n>", "the third line is past two: held")

    def test_a_match_looks_at_every_chunk(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(match=b"pay", latency=0.5, fraction=0.0), clock)
        protocol, _, asked = self.counted(plan)
        protocol.dataReceived(b"x")
        self.assertIn("note", asked, "a condition that looks at bytes sees each chunk")


class SettledTests(SynchronousTestCase):
    """
    A connection the same faults apply to on every chunk (no condition
    switches them) works that out once per change too: a chunk goes
    straight to the piece that shapes it, and reads that no fault touches
    pass as a quiet connection's do.
    """

    counted = QuietTests.counted

    def test_latency_asks_nothing_per_chunk(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(latency=0.5), clock)
        protocol, transport, asked = self.counted(plan)
        for _ in range(3):
            protocol.dataReceived(b"a")
        self.assertEqual(transport.value(), b"", "held")
        clock.advance(0.5)
        self.assertEqual(transport.value(), b"<a>" * 3)
        self.assertEqual(asked, [])
        own = type(protocol)
        self.assertNotEqual(getattr(protocol.write, "__func__", None), own.write)
        self.assertNotEqual(getattr(protocol.dataReceived, "__func__", None), own.dataReceived)

    def test_slowed_reads_and_conditions_bring_the_wrapper_back(self) -> None:
        clock = Clock()
        for faults in (Faults(read_latency=0.5), Faults(stall="read"), Faults(after_messages=1, latency=0.5)):
            plan = FaultPlan(faults, clock)
            protocol, _, _ = self.counted(plan)
            self.assertEqual(protocol.dataReceived.__func__, type(protocol).dataReceived, faults)
        self.assertEqual(protocol.write.__func__, type(protocol).write, "a condition is asked per chunk")

    def test_a_change_reaches_the_next_chunk(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(latency=0.5), clock)
        protocol, transport, _ = self.counted(plan)
        protocol.dataReceived(b"a")
        plan.faults = Faults(latency=0.25)
        protocol.dataReceived(b"b")
        clock.advance(0.25)
        self.assertEqual(transport.value(), b"", "b waits behind a")
        clock.advance(0.25)
        self.assertEqual(transport.value(), b"<a><b>")
        plan.faults = Faults(half_close_after_bytes=7)  # counted since the faults began: 6 sent
        protocol.dataReceived(b"c")
        clock.advance(0)
        self.assertEqual(transport.value(), b"<a><b><")
        self.assertTrue(transport.write_closed)


class HalfCloseTests(SynchronousTestCase):
    """Point 1: the wrapper is half-closeable, and the client's FIN waits for the queued replies."""

    def test_provides_the_interface_and_passes_the_fin_on(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(latency=0.1))
        self.assertTrue(IHalfCloseableProtocol.providedBy(protocol))
        protocol.dataReceived(b"a")
        protocol.readConnectionLost()  # FaultAnswer is not half-closeable: a close after the queue
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
        protocol.makeConnection(HalfClosingTransport())
        protocol.dataReceived(b"a")
        protocol.readConnectionLost()
        self.assertEqual(heard, [])
        clock.advance(1)
        self.assertEqual(heard, [b"a", b"EOF"], "in order, after the read latency")
