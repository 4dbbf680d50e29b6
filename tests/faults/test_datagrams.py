"""
Faults on datagrams (L{echoapp._faults.datagrams}).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import FakeDatagramTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._faults import (
    FaultPlan,
    Faults,
    FaultyDatagramProtocol,
)
from echoapp._faults.datagrams import HELD_COST, REORDER_HOLD

A, B = ("127.0.0.1", 5000), ("127.0.0.1", 5001)


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


class DatagramTests(SynchronousTestCase):
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

    def test_a_delayed_reply_the_kernel_refuses_is_dropped_not_raised(self) -> None:
        """
        A delayed reply to a broadcast address (a forged source) is refused
        with EACCES as it is sent, from a timer: dropped and counted, not
        an exception into the reactor (a critical traceback per datagram).
        """
        protocol, transport, clock = datagrams(Faults(latency=0.1))
        greeter: Any = protocol.wrapped
        dropped: list[str] = []
        greeter.reply_dropped = dropped.append

        def refused(datagram: bytes, addr: Any) -> None:
            raise PermissionError(13, "Permission denied")

        transport.write = refused  # type: ignore[method-assign, assignment]
        protocol.datagramReceived(b"a", ("192.0.2.255", 40000))
        clock.advance(0.1)
        self.assertEqual(dropped, ["source"], "counted as an undelayed one is: a forged source")
        self.assertEqual(protocol.faulty.held_bytes, 0)  # type: ignore[union-attr]

    def test_held_replies_are_bounded(self) -> None:
        protocol, transport, clock = datagrams(Faults(latency=10))
        greeter: Any = protocol.wrapped
        dropped: list[int] = []
        greeter.reply_dropped = lambda reason="buffer": dropped.append(1)
        for _ in range(300):
            protocol.datagramReceived(b"x" * 4096, A)
        # Each reply of 4,098 B costs 512 B more held (its timer): 227 fit in 1 MiB.
        held = 227 * (4098 + HELD_COST)
        self.assertEqual(protocol.faulty.held_bytes, held, "1 MiB held at most")  # type: ignore[union-attr]
        self.assertEqual(len(dropped), 73, "the rest dropped, and counted")
        clock.advance(10)
        self.assertEqual((len(transport.written), protocol.faulty.held_bytes), (227, 0))  # type: ignore[union-attr]

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


class DatagramWireTests(TestCase):
    """A real UDP client over loopback."""

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
