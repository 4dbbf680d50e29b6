"""
The byte-stream wrapper (L{echoapp._faults.stream}): what passes straight on, refusals,
stalls and half-closes.
"""

from __future__ import annotations

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from echoapp._faults import (
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
