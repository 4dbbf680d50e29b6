import socket

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._limits.connections import Connections
from echoapp._protocols.echo import EchoFactory
from echoapp.config import TCPLimits
from tests.support import assert_backpressure, start


class EchoUnitTests(SynchronousTestCase):
    @given(st.lists(st.binary(max_size=200), max_size=20))
    def test_every_byte_back_in_order(self, chunks: list[bytes]) -> None:
        protocol = EchoFactory(clock=Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        for chunk in chunks:
            protocol.dataReceived(chunk)
        self.assertEqual(transport.value(), b"".join(chunks))

    def test_no_banner_and_backpressure_registered(self) -> None:
        protocol = EchoFactory(clock=Clock()).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(b"x")
        transport.producer.pauseProducing()
        self.assertEqual(transport.producerState, "paused")

    def test_every_chunk_resets_the_idle_timer(self) -> None:
        clock = Clock()
        protocol = EchoFactory(Connections(TCPLimits(idle_timeout=10)), clock=clock).buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        for _ in range(3):  # the first chunk sets up flow control; the others take the short path
            clock.advance(6)
            protocol.dataReceived(b"still here")
        clock.advance(6)
        self.assertFalse(transport.disconnecting, "data within the idle timeout keeps the connection")
        clock.advance(5)
        self.assertTrue(transport.disconnecting, "ten seconds without data closes it")


class EchoLoopbackTests(TestCase):
    def test_round_trip_over_loopback(self) -> Deferred[None]:
        [port] = start(self, services.echo(["tcp:0:interface=127.0.0.1"]))
        payload = bytes(range(256)) * 64 + b"exit\r\n"

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port.getHost().port), timeout=20) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                got = b""
                while len(got) < len(payload):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    got += chunk
                return got

        return deferToThread(client).addCallback(self.assertEqual, payload)

    async def test_slow_reader_gets_backpressure(self) -> None:
        payload = bytes(range(256)) * (32 * 4096)  # 32 MiB
        await assert_backpressure(self, EchoFactory(), payload, payload)
