"""
The one source of faults (L{echoapp._faults.plan}): seeded draws per connection, conditions,
changes while running.
"""

from __future__ import annotations

from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import (
    IDLE_CLOSE,
    FaultPlan,
    Faults,
    FaultyConnection,
    FaultyFactory,
    Shape,
)
from tests.support import (
    FaultAnswer,
    faulty_connection,
)


class SeedTests(SynchronousTestCase):
    """Each connection's draws depend on the seed and its order of arrival only."""

    def test_fraction_is_seeded(self) -> None:
        def pattern() -> list[bool]:
            factory = FaultyFactory(
                Factory.forProtocol(FaultAnswer), FaultPlan(Faults(refuse=True, fraction=0.5, seed=11))
            )
            return [
                isinstance(factory.buildProtocol(None), FaultyConnection | FaultAnswer) for _ in range(40)
            ]

        first = pattern()
        self.assertEqual(first, pattern(), "the same seed spares the same connections")
        self.assertTrue(0 < first.count(True) < 40, "some connections are spared, some are not")

    def test_interleaving_does_not_change_a_connections_delays(self) -> None:
        def run(order: list[int]) -> list[list[float]]:
            clock = Clock()
            plan = FaultPlan(Faults(latency=1, jitter=0.5, seed=99), clock)
            made = [faulty_connection(Faults(), clock, plan) for _ in range(4)]
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


class ConditionTests(SynchronousTestCase):
    """Faults for some connections and moments: first N, after N messages, a window, a match."""

    def test_first_connections(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(refuse=True, first=2), clock)
        built = [faulty_connection(Faults(), clock, plan)[0] for _ in range(3)]
        self.assertEqual([type(each).__name__ for each in built], ["Refused", "Refused", "FaultyConnection"])

    def test_after_messages(self) -> None:
        protocol, transport, _ = faulty_connection(Faults(after_messages=2, stall="answer"))
        for line in (b"a\n", b"b\n", b"c\n"):
            protocol.dataReceived(line)
        self.assertEqual(transport.value(), b"<a\n><b\n>", "the third message gets no answer")

    def test_a_window_after_start(self) -> None:
        clock = Clock()
        plan = FaultPlan(Faults(stall="answer", active_from=1, active_until=2), clock)
        plan.start()
        protocol, transport, _ = faulty_connection(Faults(), clock, plan)
        protocol.dataReceived(b"a")
        clock.advance(1)
        protocol.dataReceived(b"b")
        clock.advance(1)
        protocol.dataReceived(b"c")
        self.assertEqual(transport.value(), b"<a><c>")

    def test_a_match_across_reads(self) -> None:
        protocol, transport, _ = faulty_connection(Faults(match=b"pay", stall="answer"))
        protocol.dataReceived(b"hello")
        protocol.dataReceived(b"p")
        protocol.dataReceived(b"ay")
        protocol.dataReceived(b"more")
        self.assertEqual(transport.value(), b"<hello><p>", "from the message that completes the match on")

    def test_parsed_and_shown(self) -> None:
        text = "reset-after-bytes=0,first=1,after-messages=2,active-from=500ms,active-until=2000ms,match=pay"
        self.assertEqual(str(Faults.parse(text)), text)
        self.assertFalse(Faults(first=1, match="x"), "conditions alone are no fault")


class RunTimeChangeTests(SynchronousTestCase):
    """Point 3: every field of a change reaches open connections."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.plan = FaultPlan(Faults(), self.clock)
        self.protocol, self.transport, _ = faulty_connection(Faults(), self.clock, self.plan)

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


class SourceTests(SynchronousTestCase):
    """One source of faults: named sets with a toxicity each, one merge rule, draws from the seed."""

    def test_named_sets_merge_by_one_rule(self) -> None:
        plan = FaultPlan(seed=1)
        plan.put("a", Faults(latency=0.1, slice=4))
        plan.put("b", Faults(latency=0.05, slice=8))
        shape = plan.arrival().current()
        assert shape is not None
        self.assertEqual(
            (shape.faults.latency, shape.faults.slice), (0.1 + 0.05, 8), "latencies add, last wins"
        )
        plan.put("a", Faults(slice=2))  # replaced in its place: still before b
        shape = plan.arrival().current()
        assert shape is not None
        self.assertEqual((shape.faults.latency, shape.faults.slice), (0.05, 8))
        plan.remove("b")
        self.assertEqual(plan.arrival().current(), Shape(Faults(slice=2)))

    def test_the_unnamed_set_is_fault_with_fraction_as_toxicity(self) -> None:
        """A service's C{--fault}: the same connections spared as a named set of that toxicity would be."""
        plan = FaultPlan(Faults(latency=1, fraction=0.5, seed=3))
        spared = [plan.arrival().current() is None for _ in range(40)]
        self.assertTrue(0 < spared.count(True) < 40)
        self.assertEqual(plan.faults, Faults(latency=1, fraction=0.5, seed=3), "shown as given")
        again = FaultPlan(Faults(latency=1, fraction=0.5, seed=3))
        self.assertEqual(spared, [again.arrival().current() is None for _ in range(40)])

    def test_a_change_is_heard_by_every_watcher_and_asked_again_once(self) -> None:
        plan = FaultPlan(seed=2)
        heard: list[int] = []

        class Watcher:
            def faults_changed(self) -> None:
                heard.append(plan.version)

        watcher = Watcher()
        plan.watch(watcher)
        draws = plan.arrival()
        plan.put("x", Faults(stall="answer"))
        self.assertEqual(len(heard), 1)
        merges = []
        shape_for = plan.shape_for
        plan.shape_for = lambda d: merges.append(1) or shape_for(d)  # type: ignore[method-assign]
        for _ in range(100):
            self.assertIsNotNone(draws.current())
        self.assertEqual(len(merges), 1, "worked out once per change, not per chunk")
        plan.unwatch(watcher)
        plan.clear()
        self.assertEqual(len(heard), 1)
        self.assertIsNone(draws.current())

    def test_adding_sets_costs_no_merge_of_those_already_there(self) -> None:
        """
        A thousand toxics added to a proxy with a connection open: each add
        merges the new one into what is there, not all of them again
        (toxiproxy adds one in constant time; a full merge made it 43 ms at
        a thousand).
        """
        from echoapp._faults import plan as plan_module

        plan = FaultPlan(seed=5)
        draws = plan.arrival()
        folds = []
        fold = plan_module._fold
        self.patch(plan_module, "_fold", lambda *a: folds.append(1) or fold(*a))

        class Connection:
            def faults_changed(self) -> None:
                draws.current()

        plan.watch(Connection())
        for number in range(1000):
            plan.put(f"t{number}", Faults(latency=0.001))
        self.assertEqual(len(folds), 1000, "one merge step per toxic added")
        shape = draws.current()
        assert shape is not None
        self.assertAlmostEqual(shape.faults.latency, 1.0)

    def test_timing_follows_the_set_that_gave_the_value(self) -> None:
        plan = FaultPlan(seed=1)
        plan.put("idle", Faults(close_after=1), timing=frozenset({IDLE_CLOSE}))
        shape = plan.arrival().current()
        assert shape is not None
        self.assertEqual(shape.timing, {IDLE_CLOSE})
        plan.put("own", Faults(close_after=2))  # echoapp's own close-after, added last, wins
        shape = plan.arrival().current()
        assert shape is not None
        self.assertEqual((shape.faults.close_after, shape.timing), (2, frozenset()))


class SparedTests(SynchronousTestCase):
    """A set with toxicity 0 spares a connection, which then costs one check per chunk."""

    def test_a_spared_connection_passes_every_chunk_straight_on(self) -> None:
        clock = Clock()
        plan = FaultPlan(seed=1, clock=clock)
        plan.put("never", Faults(latency=1, slice=1), toxicity=0)
        protocol, transport, _ = faulty_connection(Faults(), clock, plan)
        for _ in range(100):
            protocol.dataReceived(b"a")
        self.assertEqual(transport.value(), b"<a>" * 100, "at once, unsliced")
        self.assertEqual(clock.getDelayedCalls(), [], "no timer")
        self.assertTrue(protocol.sending.passing and protocol.reading.passing)
        self.assertEqual(protocol.sending.queue.held, 0)
