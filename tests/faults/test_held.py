"""
What waits (L{echoapp._faults.held}): one reactor timer for every held
queue of a plan's connections (L{Wakeups}), each woken at its own time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import FaultPlan, Faults, FaultyFactory
from echoapp._faults.held import Wakeups
from tests.support import FaultAnswer, HalfClosingTransport


class WakeupsTests(SynchronousTestCase):
    def test_due_in_time_order_and_first_asked_first(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        woken: list[str] = []
        for name, when in (("c", 2.0), ("a", 1.0), ("b", 1.0)):
            wakeups.at(when, lambda name=name: woken.append(name))  # type: ignore[misc]
        self.assertEqual(len(clock.getDelayedCalls()), 1, "one reactor timer for all three")
        clock.advance(1.0)
        self.assertEqual(woken, ["a", "b"])
        clock.advance(1.0)
        self.assertEqual(woken, ["a", "b", "c"])
        self.assertEqual(clock.getDelayedCalls(), [], "none left: no timer")

    def test_an_earlier_turn_moves_the_timer_sooner(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        woken: list[float] = []
        wakeups.at(5.0, lambda: woken.append(5.0))
        wakeups.at(1.0, lambda: woken.append(1.0))
        clock.advance(1.0)
        self.assertEqual(woken, [1.0])
        self.assertEqual([call.getTime() for call in clock.getDelayedCalls()], [5.0])

    def test_a_turn_asked_while_woken_waits_for_the_next_pass(self) -> None:
        """One queue asking again at once (a slice, a bandwidth piece) must not hold the reactor."""
        clock = Clock()
        timers: list[float] = []
        call_later = clock.callLater

        def counted(delay: float, *args: object) -> object:
            timers.append(delay)
            return call_later(delay, *args)

        clock.callLater = counted  # type: ignore[method-assign]
        wakeups = Wakeups(clock)
        woken: list[float] = []

        def again() -> None:
            woken.append(clock.seconds())
            if len(woken) < 3:
                wakeups.at(clock.seconds(), again)

        wakeups.at(0.0, again)
        clock.advance(0)
        self.assertEqual(woken, [0.0, 0.0, 0.0])
        self.assertEqual(timers, [0.0, 0.0, 0.0], "each on a pass of its own: the reactor came round between")

    def test_the_timer_goes_with_the_last_turn_cancelled(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        first, second = wakeups.at(1.0, lambda: None), wakeups.at(2.0, lambda: None)
        first.cancel()
        self.assertTrue(clock.getDelayedCalls())
        second.cancel()
        second.cancel()  # twice is once
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertFalse(second.active())

    def test_one_cancelled_while_others_are_woken_is_not(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        woken: list[str] = []
        later = wakeups.at(1.0, lambda: woken.append("later"))
        wakeups.at(1.0, lambda: later.cancel())
        wakeups.at(0.5, lambda: woken.append("first"))
        clock.advance(1.0)
        self.assertEqual(woken, ["first", "later"], "called in order: the cancel came after")
        late = wakeups.at(2.0, lambda: woken.append("late"))
        wakeups.at(1.5, late.cancel)
        clock.advance(1.0)
        self.assertEqual(woken, ["first", "later"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelled_turns_do_not_pile_up(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        wakeups.at(3600.0, lambda: None)
        for _ in range(10_000):
            wakeups.at(600.0, lambda: None).cancel()
        self.assertLessEqual(len(wakeups._heap), 2 + 64)

    def test_one_failing_wake_up_does_not_stop_the_others(self) -> None:
        clock = Clock()
        wakeups = Wakeups(clock)
        woken: list[str] = []

        def fails() -> None:
            raise ZeroDivisionError()

        wakeups.at(1.0, fails)
        wakeups.at(1.0, lambda: woken.append("after"))
        wakeups.at(2.0, lambda: woken.append("later"))
        clock.advance(1.0)
        self.assertEqual(woken, ["after"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        clock.advance(1.0)
        self.assertEqual(woken, ["after", "later"], "the timer was armed again")


class LoopTimerTests(SynchronousTestCase):
    """On a reactor over an asyncio loop, the loop's own timer: not Twisted's on top of one."""

    def test_the_loops_own_timer(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)

        class OverALoop:
            _asyncioEventloop = loop

            def seconds(self) -> float:
                return time.time()

            def callLater(self, *args: object) -> None:
                raise AssertionError("Twisted's timer")

        wakeups = Wakeups(OverALoop())  # type: ignore[arg-type]
        woken: list[str] = []
        wakeups.at(time.time() + 0.01, lambda: woken.append("due"))
        cancelled = wakeups.at(time.time() + 0.01, lambda: woken.append("cancelled"))
        cancelled.cancel()
        deadline = time.monotonic() + 5
        while not woken and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        self.assertEqual(woken, ["due"])
        wakeups.at(time.time() + 60, lambda: woken.append("never")).cancel()
        self.assertEqual([handle for handle in loop._scheduled if not handle.cancelled()], [])  # type: ignore[attr-defined]

    def on_uvloop(self) -> tuple[Any, Wakeups]:
        """A real uvloop loop (skipped without uvloop) and L{Wakeups} over it, on the wall clock."""
        try:
            import uvloop
        except ImportError:
            self.skipTest("uvloop is not installed")
        loop = uvloop.new_event_loop()
        self.addCleanup(loop.close)

        class OverALoop:
            _asyncioEventloop = loop

            def seconds(self) -> float:
                return time.time()

        return loop, Wakeups(OverALoop())  # type: ignore[arg-type]

    def one_turn(self, loop: Any, wakeups: Wakeups, ahead: float) -> float:
        """A turn C{ahead} seconds from now, the loop run until it is woken: how late it was."""
        due = time.time() + ahead
        woken: list[float] = []
        wakeups.at(due, lambda: woken.append(time.time() - due))
        deadline = time.monotonic() + 5
        while not woken and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0))
        self.assertEqual(len(woken), 1, "woken within the deadline")
        return woken[0]

    def test_no_spin_on_uvloops_millisecond_timers(self) -> None:
        """
        uvloop rounds a timer to whole milliseconds on a clock it caches
        per pass, so a wait of 1.5 ms fires after 1 ms or at once; the
        turn is then not due, and re-arming for the rest must not spin the
        loop (it did: tens of thousands of passes for a few hundred turns).
        """
        loop, wakeups = self.on_uvloop()
        fire = wakeups._fire
        fired: list[float] = []

        def counting() -> None:
            fired.append(time.time())
            fire()

        wakeups._fire = counting  # type: ignore[method-assign]
        lateness = [self.one_turn(loop, wakeups, 0.0015) for _ in range(20)]
        self.assertGreaterEqual(min(lateness), 0.0, "never early")
        self.assertLessEqual(len(fired), 60, "at most a few timer fires a turn")

    def test_a_wait_of_one_millisecond_does_not_spin_on_uvloop(self) -> None:
        """
        A latency of exactly 1 ms (the benchmark's toxic) reaches the heap
        a hair under a millisecond ahead, once the clock has moved on while
        the chunk was read: it is a millisecond wait all the same, not a
        short one to spin for (it spun: a toxic cost half again as much CPU).
        """
        loop, wakeups = self.on_uvloop()
        fire = wakeups._fire
        fired: list[float] = []

        def counting() -> None:
            fired.append(time.time())
            fire()

        wakeups._fire = counting  # type: ignore[method-assign]
        lateness = [self.one_turn(loop, wakeups, 0.001) for _ in range(20)]
        self.assertGreaterEqual(min(lateness), 0.0, "never early")
        self.assertLessEqual(len(fired), 60, "at most a few timer fires a turn")

    def test_waits_under_a_millisecond_are_kept_on_uvloop(self) -> None:
        """
        A turn asked for under half a millisecond ahead (toxiproxy's slicer
        delays are in microseconds) is not rounded up to uvloop's
        millisecond: a hundred turns of 50 µs, one after the other, take
        far less than the 100 ms that rounding would make them.
        """
        loop, wakeups = self.on_uvloop()
        started = time.monotonic()
        lateness = [self.one_turn(loop, wakeups, 0.00005) for _ in range(100)]
        self.assertGreaterEqual(min(lateness), 0.0, "never early")
        self.assertLess(time.monotonic() - started, 0.08)


class SharedTimerTests(SynchronousTestCase):
    """The connections of one plan hold their bytes on one timer, and none outlives them."""

    def connections(self, count: int, plan: FaultPlan) -> list[tuple[object, HalfClosingTransport]]:
        factory = FaultyFactory(Factory.forProtocol(FaultAnswer), plan)
        made = []
        for _ in range(count):
            protocol = factory.buildProtocol(None)
            transport = HalfClosingTransport()
            protocol.makeConnection(transport)
            made.append((protocol, transport))
        return made

    def test_fifty_connections_one_timer(self) -> None:
        clock = Clock()
        made = self.connections(50, FaultPlan(Faults(latency=0.01), clock))
        for index, (protocol, _) in enumerate(made):
            clock.advance(0.0001)
            protocol.dataReceived(b"%d" % index)  # type: ignore[attr-defined]
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        clock.advance(0.01 - 0.0001 * 25)
        sent = [transport.value() for _, transport in made]
        self.assertEqual(sent[:25], [b"<%d>" % index for index in range(25)], "each at its own time")
        self.assertEqual(sent[26:], [b""] * 24)
        clock.advance(0.01)
        self.assertEqual([transport.value() for _, transport in made], [b"<%d>" % i for i in range(50)])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_no_timer_outlives_the_connections(self) -> None:
        clock = Clock()
        made = self.connections(3, FaultPlan(Faults(latency=5, read_latency=5), clock))
        for protocol, _ in made:
            protocol.dataReceived(b"x")  # type: ignore[attr-defined]
        self.assertTrue(clock.getDelayedCalls())
        for protocol, _ in made:
            protocol.connectionLost(None)  # type: ignore[attr-defined]
        self.assertEqual(clock.getDelayedCalls(), [])
