"""
What a faulty connection sends (L{echoapp._faults.sending}), on a clock the test turns.
"""

from __future__ import annotations

import tracemalloc

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import (
    HELD_BYTES,
    PIECES_PER_PASS,
    FaultPlan,
    Faults,
)
from tests.support import (
    RecordingProducer,
    faulty_connection,
)


class SendingTests(SynchronousTestCase):
    """Latency, bandwidth, slices, and what is held, bounded."""

    def test_latency_keeps_order_and_jitter_comes_from_the_seed(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(latency=0.1, jitter=0.05, seed=7))
        protocol.dataReceived(b"a")
        protocol.dataReceived(b"b")
        clock.advance(0.049)
        self.assertEqual(transport.value(), b"", "nothing before latency - jitter")
        clock.advance(1)
        self.assertEqual(transport.value(), b"<a><b>")
        faults = Faults(latency=0.1, jitter=0.05, seed=7)
        delays = [FaultPlan(faults).arrival().delay(faults) for _ in range(2)]
        again = [FaultPlan(faults).arrival().delay(faults) for _ in range(2)]
        self.assertEqual(delays, again, "the same seed, the same delays")

    def test_each_write_draws_its_own_jitter(self) -> None:
        """A plain delay's writes (queued without the other faults' questions) still draw their jitter."""
        faults = Faults(latency=0.1, jitter=0.05, seed=7)
        protocol, transport, clock = faulty_connection(faults)
        sent: list[float] = []
        transport.write = lambda data: sent.append(clock.seconds())  # type: ignore[method-assign]
        for _ in range(4):
            protocol.write(b"x")
            clock.pump([0.001] * 200)  # each alone: none waits behind the one before
        draws = FaultPlan(faults).arrival()
        for index, at in enumerate(sent):
            late = at - 0.2 * index - draws.delay(faults)  # the seed's draw, met by 1 ms steps
            self.assertTrue(-1e-6 < late < 0.001 + 1e-6, (index, late))
        self.assertEqual(len({round(at - 0.2 * index, 3) for index, at in enumerate(sent)}), 4)

    def test_a_delayed_write_waits_for_the_pace_before_it(self) -> None:
        """Changed from a bandwidth to a latency: the next write leaves once the paced bytes' time is up."""
        clock = Clock()
        plan = FaultPlan(Faults(bandwidth=10), clock)
        protocol, transport, _ = faulty_connection(None, clock, plan)
        protocol.write(b"0123456789")  # a byte every 0.1 s: the last at 0.9, its time up at 1.0
        plan.faults = Faults(latency=0.01)
        protocol.write(b"d")
        clock.pump([0.1] * 9 + [0.05])
        self.assertEqual(transport.value(), b"0123456789", "the pace holds it")
        clock.advance(0.05)
        self.assertEqual(transport.value(), b"0123456789d")

    def test_bandwidth(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(bandwidth=1000))
        protocol.dataReceived(b"x" * 998)  # a 1000-byte reply at 1000 B/s
        clock.advance(0.5)
        self.assertLess(len(transport.value()), 600)
        clock.advance(0.6)
        self.assertEqual(len(transport.value()), 1000)

    def test_slices(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(slice=2, slice_delay=0.01))
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"abcd")
        clock.pump([0.01] * 5)
        self.assertEqual(writes, [b"<a", b"bc", b"d>"])

    def test_slice_variation_varies_the_pieces_from_the_seed(self) -> None:
        def pieces(seed: int) -> list[bytes]:
            protocol, transport, clock = faulty_connection(Faults(slice=4, slice_variation=3, seed=seed))
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

    def test_held_replies_are_bounded(self) -> None:
        """A client flooding a slow peer pauses itself, as a full write buffer would."""
        protocol, transport, clock = faulty_connection(Faults(latency=10))
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
                protocol, transport, _ = faulty_connection(faults)
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
        protocol, transport, clock = faulty_connection(Faults(slice=1))
        protocol.dataReceived(b"x" * 3000)
        [pump] = clock.getDelayedCalls()
        pump.func(*pump.args, **pump.kw)  # one pass, as the reactor runs it
        self.assertEqual(len(transport.value()), PIECES_PER_PASS, "then the reactor runs again")
        clock.advance(0)
        self.assertEqual(len(transport.value()), 3002)

    def test_no_piece_is_sent_while_the_transport_is_full(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(slice=1))
        protocol.registerProducer(RecordingProducer(), True)  # as the guard does for the service
        transport.producer.pauseProducing()  # the transport's buffer is full
        protocol.dataReceived(b"abc")
        clock.advance(0)
        self.assertEqual(transport.value(), b"")
        transport.producer.resumeProducing()
        clock.advance(0)
        self.assertEqual(transport.value(), b"<abc>")
