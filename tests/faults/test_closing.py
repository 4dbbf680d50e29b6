"""
How a faulty connection closes (L{echoapp._faults.closing}), on a clock the test turns.
"""

from __future__ import annotations

from functools import partial

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import (
    IDLE_CLOSE,
    FaultPlan,
    Faults,
)
from tests.support import (
    faulty_connection,
)


class ClosingTests(SynchronousTestCase):
    """Timed closes and resets, byte limits, slow closes."""

    def test_close_after_time_is_a_fin_and_drops_what_is_queued(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(close_after=2, latency=5))
        protocol.dataReceived(b"hi")
        clock.advance(1.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting, "closed")
        self.assertFalse(transport.disconnected, "with a FIN: not aborted")
        clock.advance(10)
        self.assertEqual(transport.value(), b"", "the reply still held by the latency is dropped")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_an_idle_close_is_one_timer_put_back_at_each_chunk(self) -> None:
        """toxiproxy's timeout counts again from each chunk: the same timer, not a new one per chunk."""
        clock = Clock()
        plan = FaultPlan(clock=clock)
        plan.put("t", Faults(close_after=1), timing=frozenset({IDLE_CLOSE}))
        protocol, transport, _ = faulty_connection(Faults(), clock, plan)
        [timer] = clock.getDelayedCalls()
        for _ in range(5):
            clock.advance(0.6)
            protocol.dataReceived(b"x")
            self.assertEqual(clock.getDelayedCalls(), [timer])
        self.assertEqual(transport.value(), b"<x>" * 5)
        clock.advance(0.99)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.02)
        self.assertTrue(transport.disconnecting, "closed a second after the last chunk")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_close_after_follows_the_plan_and_goes_with_the_connection(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(), clock)
        protocol, _, _ = faulty_connection(Faults(), clock, plan)
        plan.faults = Faults(close_after=3)
        self.assertEqual(len(clock.getDelayedCalls()), 1, "set later, it reaches the open connection")
        protocol.connectionLost(None)
        self.assertEqual(clock.getDelayedCalls(), [], "no timer outlives the connection")

    def test_reset_and_half_close_after_bytes(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(reset_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual((transport.value(), transport.disconnected), (b"<ab", True), "aborted")
        protocol, transport, clock = faulty_connection(Faults(half_close_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual(transport.value(), b"<ab")
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (True, False), "a FIN, still reading"
        )

    def test_reset_after_time(self) -> None:
        _, transport, clock = faulty_connection(Faults(reset_after=2))
        clock.advance(1.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.2)
        self.assertTrue(transport.disconnected, "aborted")

    def test_a_slow_close_timer_goes_with_its_connection(self) -> None:
        protocol, _, clock = faulty_connection(Faults(slow_close=600))
        protocol.dataReceived(b"bye")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)  # the client left first
        self.assertEqual(clock.getDelayedCalls(), [], "no timer holds the dead transport for 600 s")

    def test_slow_close(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(slow_close=3))
        protocol.dataReceived(b"bye")
        self.assertEqual(transport.value(), b"farewell")
        clock.advance(2.9)
        self.assertFalse(transport.disconnecting, "the close waits")
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)


class TimerTests(SynchronousTestCase):
    """Point 2: no timer outlives its connection."""

    def test_close_never_runs_inside_the_services_call(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(half_close_after_bytes=2))
        protocol.dataReceived(b"abc")
        clock.advance(0)
        protocol.loseConnection()
        self.assertFalse(transport.disconnecting, "a later turn: the service arms its timers first")
        clock.advance(0)
        self.assertTrue(transport.disconnecting)

    def test_slow_close_and_reset_timers_are_cancelled(self) -> None:
        protocol, _, clock = faulty_connection(Faults(slow_close=3, reset_after=10, latency=1))
        protocol.dataReceived(b"a")
        protocol.loseConnection()
        self.assertTrue(clock.getDelayedCalls())
        protocol.connectionLost(None)
        self.assertEqual([call for call in clock.getDelayedCalls() if call.active()], [])


class ResetPeerHoldsTheCloseTests(SynchronousTestCase):
    """
    toxiproxy's reset_peer: once a chunk has been swallowed and its timer
    started, the connection ends with the RST, whatever close the service
    asks for meanwhile (a FIN would reach the other side first: a client
    that half-closed after its request saw a clean end, not the reset).
    """

    def test_a_close_asked_while_the_reset_waits_is_the_reset(self) -> None:
        from echoapp._faults import RESET_ON_CHUNK

        for timeout in (0.0, 0.05):
            for close in ("loseConnection", "loseWriteConnection"):
                clock = Clock()
                plan = FaultPlan(None, clock)
                plan.put("reset_peer", Faults(reset_after=timeout), 1.0, frozenset({RESET_ON_CHUNK}))
                protocol, transport, clock = faulty_connection(None, clock, plan)
                calls: list[str] = []
                for name, said in (("loseConnection", "FIN"), ("loseWriteConnection", "half FIN")):
                    setattr(transport, name, partial(calls.append, said))
                transport.abortConnection = partial(calls.append, "RST")  # type: ignore[method-assign]
                protocol.dataReceived(b"request")  # its answer is the first chunk: swallowed
                getattr(protocol, close)()
                clock.advance(timeout + 0.01)
                self.assertEqual((transport.value(), calls), (b"", ["RST"]), (timeout, close))

    def test_a_write_inside_connection_made_is_the_first_chunk(self) -> None:
        """
        A proxy writes the client's early bytes as its upstream connection
        is made: that write is reset_peer's first chunk (the toxic was there
        at the opening), not a chunk before the toxic counted, after which a
        half-close went out as a FIN.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import StringTransport

        from echoapp._faults import RESET_ON_CHUNK, FaultyFactory

        class EarlyWriter(Protocol):
            def connectionMade(self) -> None:
                self.transport.write(b"early")  # type: ignore[union-attr]
                self.transport.loseWriteConnection()  # type: ignore[union-attr]

        clock = Clock()
        plan = FaultPlan(None, clock)
        plan.put("reset_peer", Faults(reset_after=0.0), 1.0, frozenset({RESET_ON_CHUNK}))
        calls: list[str] = []
        transport = StringTransport()
        transport.loseWriteConnection = partial(calls.append, "half FIN")  # type: ignore[attr-defined]
        transport.loseConnection = partial(calls.append, "FIN")  # type: ignore[method-assign]
        transport.abortConnection = partial(calls.append, "RST")  # type: ignore[method-assign]
        FaultyFactory(Factory.forProtocol(EarlyWriter), plan).buildProtocol(None).makeConnection(transport)
        clock.advance(0.01)
        self.assertEqual((transport.value(), calls), (b"", ["RST"]))
