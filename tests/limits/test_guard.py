"""The connection guard: admission, limits, refusals, deadlines, closing, drain; on a fake clock."""

import socket
import ssl
import tempfile

from twisted.internet import reactor
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echoapp import services
from echoapp._framing import Framing
from echoapp._limits.connections import Connections
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._limits.guard import Refusal
from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.greeter import GreeterFactory
from echoapp.config import GreeterConfig, TCPLimits
from tests.support import DEADLINE, address, fake_connect, listeners, lose, make_certificates, start


class ConnectionLimitTests(SynchronousTestCase):
    def test_total_limit_refuses_with_one_line_and_spares_existing(self) -> None:
        factory = GreeterFactory(connections=Connections(TCPLimits(max_connections=2)), clock=Clock())
        first, first_transport = fake_connect(factory, "127.0.0.1")
        fake_connect(factory, "127.0.0.2")
        refused, transport = fake_connect(factory, "127.0.0.3")
        self.assertIsInstance(refused, Refusal)
        self.assertEqual(transport.value(), b"ERROR: too many connections\r\n")
        self.assertTrue(transport.disconnecting)
        first.dataReceived(b"still here\n")
        self.assertIn(b"Hello, still here!\n", first_transport.value())
        self.assertEqual(factory.stats.refused["limit"], 1)
        lose(first)
        self.assertNotIsInstance(fake_connect(factory, "127.0.0.3")[0], Refusal)

    def test_per_peer_limit_spares_other_peers(self) -> None:
        factory = EchoFactory(Connections(TCPLimits(max_per_peer=2)), Clock())
        fake_connect(factory, "127.0.0.1")
        second, _ = fake_connect(factory, "127.0.0.1")
        _, transport = fake_connect(factory, "127.0.0.1")
        self.assertEqual(transport.value(), b"ERROR: too many connections from your address\r\n")
        self.assertNotIsInstance(fake_connect(factory, "127.0.0.2")[0], Refusal)
        lose(second)
        self.assertNotIsInstance(fake_connect(factory, "127.0.0.1")[0], Refusal)
        self.assertEqual(factory.connections.per_peer, {"127.0.0.1": 2, "127.0.0.2": 1})


class TimeoutTests(SynchronousTestCase):
    limits = TCPLimits(idle_timeout=10, line_timeout=5, session_timeout=100, close_grace=2)

    def greeter(self, clock: Clock, **config: object):
        factory = GreeterFactory(GreeterConfig(**config), Connections(self.limits), clock)  # type: ignore[arg-type]
        protocol, transport = fake_connect(factory)
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
        factory = GreeterFactory(
            GreeterConfig(), Connections(TCPLimits(idle_timeout=10, max_per_peer=1000)), clock
        )
        clock.advance(0.2)
        early = [fake_connect(factory)[1] for _ in range(100)]  # due at 10.2
        clock.advance(0.5)
        late = [fake_connect(factory)[1] for _ in range(100)]  # due at 10.7
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
        factory = GreeterFactory(GreeterConfig(), Connections(self.limits), clock)
        protocols = [fake_connect(factory)[0] for _ in range(3)]
        for protocol in protocols:
            lose(protocol)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(factory.deadlines), 0)

    def test_echo_times_out_silently(self) -> None:
        clock = Clock()
        protocol, transport = fake_connect(EchoFactory(Connections(self.limits), clock))
        protocol.dataReceived(b"abc")
        clock.advance(10)
        self.assertEqual(transport.value(), b"abc")
        self.assertTrue(transport.disconnecting)

    def test_a_close_that_loses_the_connection_at_once_leaves_no_abort_timer(self) -> None:
        # loseConnection() may call connectionLost before it returns: an abort
        # armed after it outlived the connection by the whole grace.
        clock = Clock()
        factory = GreeterFactory(GreeterConfig(), Connections(self.limits), clock)
        protocol = factory.buildProtocol(address())
        transport = StringTransportWithDisconnection(peerAddress=address())
        transport.protocol = protocol
        protocol.makeConnection(transport)
        protocol.dataReceived(b"exit\n")
        self.assertFalse(transport.connected, "the close lost the connection at once")
        self.assertEqual(clock.getDelayedCalls(), [])

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
        factory = GreeterFactory(connections=Connections(TCPLimits(close_grace=3)), clock=clock)
        clients = [fake_connect(factory, f"127.0.0.{n}") for n in range(1, 4)]
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
        _, transport = fake_connect(factory)
        self.assertEqual(transport.value(), b"ERROR: server shutting down\r\n")

    def test_echo_drains_without_a_farewell(self) -> None:
        factory = EchoFactory(clock=Clock())
        _, transport = fake_connect(factory)
        factory.connections.drain()
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)


class RefusalTests(SynchronousTestCase):
    """A refusal holds a descriptor until it is gone, and is gone within the close grace."""

    def test_plain_says_why_then_aborts_a_client_that_does_not_let_go(self) -> None:
        clock = Clock()
        before = DESCRIPTORS.open
        refusal = Refusal("too many connections", clock, 3)
        transport = StringTransport()
        refusal.makeConnection(transport)
        self.assertEqual(transport.value(), b"ERROR: too many connections\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(DESCRIPTORS.open, before + 1, "counted while it holds a descriptor")
        clock.advance(3)
        self.assertTrue(transport.disconnected, "aborted after the grace")
        refusal.connectionLost(None)
        self.assertEqual(DESCRIPTORS.open, before)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_a_close_that_loses_the_connection_at_once_leaves_no_abort_timer(self) -> None:
        clock = Clock()
        refusal = Refusal("too many connections", clock, 3)
        transport = StringTransportWithDisconnection()
        transport.protocol = refusal
        refusal.makeConnection(transport)
        self.assertFalse(transport.connected)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_tls_is_aborted_at_once_without_a_word(self) -> None:
        @implementer(ISSLTransport)
        class TLSTransport(StringTransport):
            def getPeerCertificate(self) -> None:
                return None

        refusal = Refusal("too many connections", Clock(), 3)
        transport = TLSTransport()
        refusal.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnected)
        refusal.connectionLost(None)


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class TLSRefusalTests(TestCase):
    def tls_service(self, **limits: float) -> tuple[int, object]:
        try:
            import OpenSSL  # noqa: F401

        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(tempfile.mkdtemp())
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        tree = services.tcp_greeter([listen], limits=TCPLimits(**limits))  # type: ignore[arg-type]
        [port] = start(self, tree)
        return port.getHost().port, tree

    def silent(self, port: int) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), DEADLINE)
        self.addCleanup(sock.close)
        sock.setblocking(False)
        return sock

    async def test_refused_silent_clients_are_gone_within_close_grace(self) -> None:
        before = DESCRIPTORS.open
        port, tree = self.tls_service(max_per_peer=1, idle_timeout=30, close_grace=0.5)
        admitted = self.silent(port)
        refused = [self.silent(port) for _ in range(8)]
        for _ in range(int(DEADLINE / 0.05)):
            if all(closed(sock) for sock in refused):
                break
            await deferLater(reactor, 0.05)
        self.assertEqual([closed(sock) for sock in refused], [True] * 8)
        self.assertFalse(closed(admitted), "the admitted client is untouched")
        self.assertEqual(DESCRIPTORS.open, before + 1, "refused connections no longer hold descriptors")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["per-peer"], 8)

    async def test_a_stalled_handshake_is_closed_after_the_idle_timeout(self) -> None:
        port, _ = self.tls_service(idle_timeout=1, close_grace=0.5)
        sock = self.silent(port)
        sock.send(b"\x16\x03\x01\x00\x05")  # the start of a ClientHello record, and nothing more
        for _ in range(int(DEADLINE / 0.05)):
            if closed(sock):
                break
            await deferLater(reactor, 0.05)
        self.assertTrue(closed(sock))


def strict_tls_exchange(port: int, ca: str, payload: bytes) -> bytes:
    """
    Send C{payload} over TLS and read to the end, as a strict client does:
    a close without close_notify raises C{SSLEOFError} rather than being
    taken for the end.
    """
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as raw:
        with context.wrap_socket(raw, suppress_ragged_eofs=False) as sock:
            sock.sendall(payload)
            received = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except ssl.SSLZeroReturnError:
                    return received
                if not chunk:
                    return received
                received += chunk


class TLSCloseTests(TestCase):
    async def test_a_too_long_line_over_tls_ends_with_close_notify(self) -> None:
        try:
            import OpenSSL  # noqa: F401

        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(tempfile.mkdtemp())
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        tree = services.tcp_greeter([listen], GreeterConfig(max_line_length=16))
        [port] = start(self, tree)
        received = await deferToThread(
            strict_tls_exchange, port.getHost().port, paths["ca.pem"], b"x" * 100 + b"\n"
        )
        self.assertIn(b"ERROR: line too long", received)
