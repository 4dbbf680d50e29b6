"""
How a faulty connection closes (L{echoapp._faults.closing}), on a clock the test turns.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import (
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
