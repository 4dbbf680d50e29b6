"""
What a faulty connection reads (L{echoapp._faults.reading}), on a clock the test turns.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from echoapp._faults import (
    Faults,
)
from tests.support import (
    faulty_connection,
)


class ReadingTests(SynchronousTestCase):
    """Faults on what the server reads."""

    def test_read_latency(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(read_latency=0.2))
        protocol.dataReceived(b"a")
        clock.advance(0.19)
        self.assertEqual(transport.value(), b"", "the service has not read it yet")
        clock.advance(0.01)
        self.assertEqual(transport.value(), b"<a>")

    def test_read_bandwidth_paces_and_stops_reading(self) -> None:
        protocol, transport, clock = faulty_connection(Faults(read_bandwidth=1000))
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"x" * 100_000)
        self.assertEqual(transport.producerState, "paused", "the client's send buffer fills")
        clock.advance(0.5)
        self.assertLess(sum(map(len, writes)), 600, "about 500 bytes read in half a second")
        clock.pump([1] * 101)
        self.assertEqual(sum(map(len, writes)), 100_000 + 2 * len(writes))
        self.assertEqual(transport.producerState, "producing")
