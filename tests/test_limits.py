"""Connection limits, timeouts, escalation, drain and token buckets, on a fake clock."""

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from echoapp.config import GreeterConfig, TCPLimits
from echoapp.descriptors import DESCRIPTORS, FD_RESERVE
from echoapp.echo import EchoFactory
from echoapp.framing import Framing
from echoapp.greeter import GreeterFactory
from echoapp.guard import Refusal
from echoapp.peers import peer_host
from echoapp.ratelimit import ThrottledLog, TokenBucket, TokenBuckets


def address(host: str = "127.0.0.1") -> IPv4Address:
    return IPv4Address("TCP", host, 50000)


def connect(factory, host: str = "127.0.0.1"):
    protocol = factory.buildProtocol(address(host))
    transport = StringTransport(peerAddress=address(host))
    protocol.makeConnection(transport)
    return protocol, transport


def lose(protocol) -> None:
    protocol.connectionLost(Failure(ConnectionDone()))


class ConnectionLimitTests(SynchronousTestCase):
    def test_total_limit_refuses_with_one_line_and_spares_existing(self) -> None:
        factory = GreeterFactory(limits=TCPLimits(max_connections=2), clock=Clock())
        first, first_transport = connect(factory, "127.0.0.1")
        connect(factory, "127.0.0.2")
        refused, transport = connect(factory, "127.0.0.3")
        self.assertIsInstance(refused, Refusal)
        self.assertEqual(transport.value(), b"ERROR: too many connections\r\n")
        self.assertTrue(transport.disconnecting)
        first.dataReceived(b"still here\n")
        self.assertIn(b"Hello, still here!\n", first_transport.value())
        self.assertEqual(factory.stats.refused["limit"], 1)
        lose(first)
        self.assertNotIsInstance(connect(factory, "127.0.0.3")[0], Refusal)

    def test_per_peer_limit_spares_other_peers(self) -> None:
        factory = EchoFactory(TCPLimits(max_per_peer=2), Clock())
        connect(factory, "127.0.0.1")
        second, _ = connect(factory, "127.0.0.1")
        _, transport = connect(factory, "127.0.0.1")
        self.assertEqual(transport.value(), b"ERROR: too many connections from your address\r\n")
        self.assertNotIsInstance(connect(factory, "127.0.0.2")[0], Refusal)
        lose(second)
        self.assertNotIsInstance(connect(factory, "127.0.0.1")[0], Refusal)
        self.assertEqual(factory.connections.per_peer, {"127.0.0.1": 2, "127.0.0.2": 1})

    def test_fd_ceiling_is_process_wide(self) -> None:
        self.patch(DESCRIPTORS, "limit", lambda: DESCRIPTORS.open)
        _, transport = connect(EchoFactory(clock=Clock()))
        self.assertEqual(transport.value(), b"ERROR: server busy\r\n")

    def test_raise_fd_limit_reports_the_soft_limit(self) -> None:
        import resource

        soft = DESCRIPTORS.raise_limit()
        self.assertEqual(soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.assertEqual(DESCRIPTORS.limit(), soft - FD_RESERVE)

    def test_peer_keys(self) -> None:
        self.assertEqual(peer_host(address("10.1.2.3")), "10.1.2.3")
        self.assertEqual(peer_host(UNIXAddress(b"/x")), "local")
        self.assertEqual(peer_host(None), "local")


class TimeoutTests(SynchronousTestCase):
    limits = TCPLimits(idle_timeout=10, line_timeout=5, session_timeout=100, close_grace=2)

    def greeter(self, clock: Clock, **config: object):
        factory = GreeterFactory(GreeterConfig(**config), self.limits, clock)  # type: ignore[arg-type]
        protocol, transport = connect(factory)
        transport.clear()
        return protocol, transport

    def test_idle_timeout_closes_then_aborts_after_grace(self) -> None:
        clock = Clock()
        protocol, transport = self.greeter(clock)
        clock.advance(9)
        protocol.dataReceived(b"hi\n")
        clock.advance(9)
        self.assertFalse(transport.disconnecting, "activity resets the idle timer")
        clock.advance(1)
        self.assertEqual(transport.value(), b"Hello, hi!\nERROR: idle timeout\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)
        clock.advance(2)
        self.assertTrue(transport.disconnected, "a client that does not let go is aborted")

    def test_clean_close_cancels_every_timer(self) -> None:
        clock = Clock()
        protocol, _ = self.greeter(clock)
        protocol.dataReceived(b"partial")
        lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_trickler_cannot_hold_a_line_open(self) -> None:
        clock = Clock()
        protocol, transport = self.greeter(clock, framing=Framing.LINE)
        for _ in range(4):
            protocol.dataReceived(b"x")
            clock.advance(1)
        self.assertFalse(transport.disconnecting)
        protocol.dataReceived(b"x")
        clock.advance(1)
        self.assertEqual(transport.value(), b"ERROR: line timeout\r\n")
        self.assertTrue(transport.disconnecting)

    def test_line_timer_counts_from_the_start_of_the_current_line(self) -> None:
        clock = Clock()
        protocol, transport = self.greeter(clock, framing=Framing.LINE)
        for _ in range(20):
            protocol.dataReceived(b"ok\n")
            clock.advance(1)
        protocol.dataReceived(b"a\nb")
        clock.advance(4)
        protocol.dataReceived(b"\nc")  # completes b; c starts a new line and a new count
        clock.advance(4)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.disconnecting)

    def test_session_limit(self) -> None:
        clock = Clock()
        protocol, transport = self.greeter(clock)
        for _ in range(99):
            protocol.dataReceived(b"x\n")
            clock.advance(1)
        self.assertFalse(transport.disconnecting)
        clock.advance(1)
        self.assertTrue(transport.value().endswith(b"ERROR: session time limit\r\n"))

    def test_idle_connections_share_their_timers(self) -> None:
        # 10,000 idle connections: a timer each would be 5 MiB, so a second's worth share one.
        clock = Clock()
        factory = GreeterFactory(GreeterConfig(), TCPLimits(idle_timeout=10, max_per_peer=1000), clock)
        clock.advance(0.2)
        early = [connect(factory)[1] for _ in range(100)]  # due at 10.2
        clock.advance(0.5)
        late = [connect(factory)[1] for _ in range(100)]  # due at 10.7
        self.assertEqual(len(clock.getDelayedCalls()), 1, "due in the same second: one timer")
        clock.advance(9.8)
        self.assertFalse(
            any(transport.disconnecting for transport in early + late),
            "checked on the whole second after, not before",
        )
        clock.advance(0.5)
        self.assertTrue(all(transport.disconnecting for transport in early + late), "within the second")

    def test_the_last_connection_to_leave_a_slot_cancels_its_timer(self) -> None:
        clock = Clock()
        factory = GreeterFactory(GreeterConfig(), self.limits, clock)
        protocols = [connect(factory)[0] for _ in range(3)]
        for protocol in protocols:
            lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(factory.deadlines), 0)

    def test_echo_times_out_silently(self) -> None:
        clock = Clock()
        protocol, transport = connect(EchoFactory(self.limits, clock))
        protocol.dataReceived(b"abc")
        clock.advance(10)
        self.assertEqual(transport.value(), b"abc")
        self.assertTrue(transport.disconnecting)

    def test_exit_word_close_escalates_too(self) -> None:
        clock = Clock()
        protocol, transport = self.greeter(clock)
        protocol.dataReceived(b"exit\n")
        self.assertTrue(transport.disconnecting)
        clock.advance(2)
        self.assertTrue(transport.disconnected)


class DrainTests(SynchronousTestCase):
    def test_every_client_gets_the_farewell_and_the_drain_waits(self) -> None:
        clock = Clock()
        factory = GreeterFactory(limits=TCPLimits(close_grace=3), clock=clock)
        clients = [connect(factory, f"127.0.0.{n}") for n in range(1, 4)]
        done = factory.connections.drain()
        for _, transport in clients:
            self.assertTrue(transport.value().endswith(b"Goodbye!\r\n"))
            self.assertTrue(transport.disconnecting)
        self.assertNoResult(done)
        lose(clients[0][0])
        lose(clients[1][0])
        clock.advance(3)  # the third is aborted ...
        self.assertTrue(clients[2][1].disconnected)
        lose(clients[2][0])  # ... and its loss ends the drain
        self.successResultOf(done)

    def test_draining_refuses_new_connections(self) -> None:
        factory = EchoFactory(clock=Clock())
        self.successResultOf(factory.connections.drain())
        _, transport = connect(factory)
        self.assertEqual(transport.value(), b"ERROR: server shutting down\r\n")

    def test_echo_drains_without_a_farewell(self) -> None:
        factory = EchoFactory(clock=Clock())
        _, transport = connect(factory)
        factory.connections.drain()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)


class TokenBucketTests(SynchronousTestCase):
    def test_burst_then_rate(self) -> None:
        clock = Clock()
        buckets = TokenBuckets(rate=2, burst=3, max_sources=10, now=clock.seconds)
        self.assertEqual([buckets.allow("a") for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([buckets.allow("a") for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual(sum(buckets.allow("a") for _ in range(10)), 3)

    def test_single_bucket_burst_then_rate(self) -> None:
        clock = Clock()
        bucket = TokenBucket(rate=2, burst=3, now=clock.seconds)
        self.assertEqual([bucket.allow() for _ in range(4)], [True, True, True, False])
        clock.advance(0.5)
        self.assertEqual([bucket.allow() for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual(sum(bucket.allow() for _ in range(10)), 3)

    def test_least_recently_seen_is_forgotten(self) -> None:
        clock = Clock()
        buckets = TokenBuckets(rate=1, burst=1, max_sources=2, now=clock.seconds)
        buckets.allow("a")
        buckets.allow("b")
        buckets.allow("a")
        buckets.allow("c")  # forgets b, the least recently seen
        self.assertEqual(len(buckets), 2)
        self.assertTrue(buckets.allow("b"), "a forgotten source starts with a full bucket")
        self.assertFalse(buckets.allow("c"))


class ThrottledLogTests(SynchronousTestCase):
    def logged(self) -> list[tuple[object, object]]:
        events: list[dict[str, object]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        return events  # type: ignore[return-value]

    @staticmethod
    def mine(events: list[dict[str, object]]) -> list[tuple[object, object]]:
        return [
            (e["count"], e["reasons"]) for e in events if e.get("log_format") == "Dropped {count} ({reasons})"
        ]

    def test_one_line_per_interval_and_the_rest_when_it_ends(self) -> None:
        events = self.logged()
        clock = Clock()
        throttled = ThrottledLog("Dropped {count} ({reasons})", interval=10)
        for _ in range(1000):
            throttled.note(clock, "rate")
        self.assertEqual(self.mine(events), [(1, "rate: 1")])
        clock.advance(10)
        self.assertEqual(self.mine(events), [(1, "rate: 1"), (999, "rate: 999")], "no later event needed")
        throttled.note(clock, "port")
        clock.advance(9.9)
        self.assertEqual(len(self.mine(events)), 2, "still one line per interval")
        clock.advance(0.1)
        self.assertEqual(self.mine(events)[-1], (1, "port: 1"))
        self.assertEqual(clock.getDelayedCalls(), [], "nothing held back, no timer")

    def test_flush_writes_what_is_held_and_stops_the_timer(self) -> None:
        events = self.logged()
        clock = Clock()
        throttled = ThrottledLog("Dropped {count} ({reasons})", interval=10)
        for _ in range(150):
            throttled.note(clock, "rate")
        throttled.flush()
        self.assertEqual(self.mine(events), [(1, "rate: 1"), (149, "rate: 149")])
        self.assertEqual(clock.getDelayedCalls(), [])
        throttled.flush()
        self.assertEqual(len(self.mine(events)), 2, "nothing held: nothing written")
