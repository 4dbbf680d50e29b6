"""The native stream transport (_transports.native_tcp): Twisted's semantics over asyncio's transports."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import AccumulatingProtocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from echoapp import services
from echoapp._protocols.greeter import GreeterFactory
from echoapp._transports import native_tcp
from echoapp._transports.endpoints import SocketEndpoint
from echoapp._transports.listen import StreamListenService
from echoapp._twisted import asyncio_loop
from echoapp.config import GreeterConfig
from tests.support import RecordingProducer, listeners, start, tutorial_client, unix_socket_path, wait_until


class FakeTransport(asyncio.Transport):
    """What the loop hands a protocol, recording what is done to it."""

    def __init__(self, peer: Any = ("127.0.0.2", 40000), host: Any = ("127.0.0.1", 9999)) -> None:
        super().__init__({"peername": peer, "sockname": host, "socket": None})
        self.written: list[bytes] = []
        self.closing = self.aborted = self.eof = False
        self.reading = True

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.written.append(b"".join(list_of_data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def is_closing(self) -> bool:
        return self.closing

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Recorder(AccumulatingProtocol):
    """Twisted's accumulating protocol, also keeping each chunk as it came: read sizes are tested too."""

    def __init__(self) -> None:
        self.received: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.received.append(data)


@implementer(IHalfCloseableProtocol)
class HalfCloser(Recorder):
    read_closed = False

    def readConnectionLost(self) -> None:
        self.read_closed = True

    def writeConnectionLost(self) -> None:
        """Not needed here."""


Producer = RecordingProducer


def connect(protocol: Protocol, **addresses: Any) -> tuple[native_tcp.NativeConnection, FakeTransport, Any]:
    built: list[Any] = []

    class Recording(Factory):
        def buildProtocol(self, addr: Any) -> Protocol:
            built.append(addr)
            return protocol

    bridge = native_tcp.NativeConnection(Recording())
    transport = FakeTransport(**addresses)
    bridge.connection_made(transport)
    return bridge, transport, built[0]


class AdapterTests(SynchronousTestCase):
    def test_is_an_itcptransport(self) -> None:
        protocol = Recorder()
        connect(protocol)
        self.assertTrue(verifyObject(ITCPTransport, protocol.transport))

    def test_addresses_as_twisted_gives_them(self) -> None:
        protocol = Recorder()
        _, _, peer = connect(protocol)
        self.assertEqual(peer, IPv4Address("TCP", "127.0.0.2", 40000))
        self.assertEqual(protocol.transport.getPeer(), peer)
        self.assertEqual(protocol.transport.getHost(), IPv4Address("TCP", "127.0.0.1", 9999))
        six = Recorder()
        _, _, peer6 = connect(six, peer=("::1", 40000, 0, 0), host=("::1", 9999, 0, 0))
        self.assertEqual(peer6, IPv6Address("TCP", "::1", 40000))
        self.assertEqual(six.transport.getHost(), IPv6Address("TCP", "::1", 9999))

    def test_factory_refusing_closes(self) -> None:
        class Refusing(Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        bridge = native_tcp.NativeConnection(Refusing())
        transport = FakeTransport()
        bridge.connection_made(transport)
        self.assertTrue(transport.closing)
        bridge.data_received(b"ignored")
        bridge.connection_lost(None)

    def test_data_and_writes(self) -> None:
        protocol = Recorder()
        bridge, transport, _ = connect(protocol)
        bridge.data_received(b"ping")
        self.assertEqual(protocol.received, [b"ping"])
        protocol.transport.write(b"one")
        protocol.transport.writeSequence([b"t", b"wo"])
        self.assertEqual(transport.written, [b"one", b"two"])
        self.assertRaises(TypeError, protocol.transport.write, "text")
        self.assertRaises(TypeError, protocol.transport.writeSequence, ["text"])

    def test_big_reads_arrive_in_twisted_sized_chunks(self) -> None:
        # uvloop reads 256 KiB at once; raw framing counts on Twisted's 64 KiB.
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        data = bytes(range(256)) * 1000
        bridge.data_received(data)
        self.assertEqual([len(chunk) for chunk in protocol.received], [65536, 65536, 65536, 59392])
        self.assertEqual(b"".join(protocol.received), data)

    def test_no_more_chunks_once_closing(self) -> None:
        class Closer(Recorder):
            def dataReceived(self, data: bytes) -> None:
                super().dataReceived(data)
                self.transport.loseConnection()  # type: ignore[union-attr]

        protocol = Closer()
        bridge, _, _ = connect(protocol)
        bridge.data_received(b"x" * 200_000)
        self.assertEqual(len(protocol.received), 1)

    def test_lose_connection_flushes_then_connection_done(self) -> None:
        protocol = Recorder()
        bridge, transport, _ = connect(protocol)
        protocol.transport.loseConnection()
        self.assertTrue(transport.closing)
        self.assertFalse(transport.aborted)
        bridge.connection_lost(None)
        reason = protocol.closedReason
        assert reason is not None
        self.assertIs(reason.type, ConnectionDone)
        protocol.transport.write(b"after the end")
        self.assertEqual(transport.written, [])

    def test_abort_gives_connection_aborted(self) -> None:
        protocol = Recorder()
        bridge, transport, _ = connect(protocol)
        protocol.transport.abortConnection()
        self.assertTrue(transport.aborted)
        bridge.connection_lost(None)
        self.assertIs(protocol.closedReason.type, ConnectionAborted)  # type: ignore[union-attr]

    def test_reset_gives_connection_lost(self) -> None:
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        bridge.connection_lost(ConnectionResetError(104, "Connection reset by peer"))
        self.assertIs(protocol.closedReason.type, ConnectionLost)  # type: ignore[union-attr]

    def test_end_of_input(self) -> None:
        plain = Recorder()
        bridge, _, _ = connect(plain)
        self.assertFalse(bridge.eof_received(), "a plain protocol is closed, as Twisted does")
        half = HalfCloser()
        bridge, _, _ = connect(half)
        self.assertTrue(bridge.eof_received(), "a half-closeable protocol keeps writing")
        self.assertTrue(half.read_closed)

    def test_half_close(self) -> None:
        protocol = Recorder()
        _, transport, _ = connect(protocol)
        protocol.transport.loseWriteConnection()
        self.assertTrue(transport.eof)
        self.assertFalse(transport.closing)

    def test_reads_pause_and_resume(self) -> None:
        protocol = Recorder()
        _, transport, _ = connect(protocol)
        protocol.transport.pauseProducing()
        self.assertFalse(transport.reading)
        protocol.transport.resumeProducing()
        self.assertTrue(transport.reading)
        protocol.transport.stopProducing()
        self.assertTrue(transport.closing)

    def test_full_write_buffer_pauses_a_streaming_producer(self) -> None:
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        producer = Producer()
        protocol.transport.registerProducer(producer, True)
        self.assertEqual(producer.calls, [])
        bridge.pause_writing()
        bridge.resume_writing()
        self.assertEqual(producer.calls, ["pause", "resume"])
        self.assertRaises(RuntimeError, protocol.transport.registerProducer, Producer(), True)
        protocol.transport.unregisterProducer()
        bridge.pause_writing()
        self.assertEqual(producer.calls, ["pause", "resume"])

    def test_registered_while_full_is_paused_at_once(self) -> None:
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        bridge.pause_writing()
        producer = Producer()
        protocol.transport.registerProducer(producer, True)
        self.assertEqual(producer.calls, ["pause"])

    def test_pull_producer_is_asked_whenever_there_is_room(self) -> None:
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        producer = Producer()
        protocol.transport.registerProducer(producer, False)
        bridge.pause_writing()
        bridge.resume_writing()
        self.assertEqual(producer.calls, ["resume", "resume"])

    def test_producer_stopped_when_the_connection_ends(self) -> None:
        protocol = Recorder()
        bridge, _, _ = connect(protocol)
        producer = Producer()
        protocol.transport.registerProducer(producer, True)
        bridge.connection_lost(None)
        self.assertEqual(producer.calls, ["stop"])
        late = Producer()
        protocol.transport.registerProducer(late, True)
        self.assertEqual(late.calls, ["stop"])

    def test_error_in_the_protocol_drops_that_connection_only(self) -> None:
        class Broken(Recorder):
            def dataReceived(self, data: bytes) -> None:
                raise ZeroDivisionError("bug")

        protocol = Broken()
        bridge, transport, _ = connect(protocol)
        bridge.data_received(b"x")
        self.assertTrue(transport.aborted)
        bridge.data_received(b"more")  # ignored: the connection is going
        bridge.connection_lost(None)
        self.assertIs(protocol.closedReason.type, ZeroDivisionError)  # type: ignore[union-attr]
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_reset_before_the_loop_got_to_it_is_dropped_quietly(self) -> None:
        """uvloop hands over a connection reset before connection_made with no peer address."""

        class Unused(Factory):
            def buildProtocol(self, addr: Any) -> Protocol:
                raise AssertionError("no protocol for a connection that is gone")

        bridge = native_tcp.NativeConnection(Unused())
        transport = FakeTransport(peer=None)
        bridge.connection_made(transport)
        self.assertTrue(transport.aborted)
        bridge.data_received(b"ignored")
        bridge.connection_lost(ConnectionResetError())
        self.assertEqual(self.flushLoggedErrors(), [])


class GuardedOverNativeTests(SynchronousTestCase):
    """The greeter's protections, through the adapter."""

    def test_backpressure_pauses_reads(self) -> None:
        protocol = GreeterFactory(GreeterConfig(), clock=Clock()).buildProtocol(None)
        bridge, transport, _ = connect(protocol)
        bridge.data_received(b"a\n")
        bridge.pause_writing()  # the client is not reading its replies
        self.assertFalse(transport.reading)
        bridge.resume_writing()
        self.assertTrue(transport.reading)

    def test_idle_timeout_closes_then_aborts(self) -> None:
        clock = Clock()
        factory = GreeterFactory(GreeterConfig(), clock=clock)
        protocol = factory.buildProtocol(None)
        bridge, transport, _ = connect(protocol)
        clock.advance(factory.limits.idle_timeout)
        self.assertTrue(transport.closing)
        self.assertFalse(transport.aborted)
        clock.advance(factory.limits.close_grace)
        self.assertTrue(transport.aborted)
        bridge.connection_lost(None)
        self.assertEqual(factory.stats.open, 0)


class ServeTests(SynchronousTestCase):
    def check_listens_before_serve_returns(self, loop: asyncio.AbstractEventLoop) -> None:
        self.addCleanup(loop.close)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = native_tcp.serve(loop, sock, Factory.forProtocol(Recorder), 50)
        self.assertEqual(port.getHost(), IPv4Address("TCP", "127.0.0.1", sock.getsockname()[1]))
        probe = socket.create_connection(("127.0.0.1", port.getHost().port))  # the backlog takes it
        probe.close()
        self.successResultOf(port.stopListening())
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", port.getHost().port))

    def test_asyncio(self) -> None:
        self.check_listens_before_serve_returns(asyncio.new_event_loop())

    def test_uvloop(self) -> None:
        import uvloop

        self.check_listens_before_serve_returns(uvloop.new_event_loop())


class NativeLoopbackTests(TestCase):
    def setUp(self) -> None:
        if asyncio_loop(reactor) is None:
            raise self.skipTest("the reactor has no asyncio loop (run trial --reactor=uvloop)")

    def test_tcp_listeners_use_the_loops_transports(self) -> None:
        tree = services.tcp_greeter(listen=["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:1"])
        start(self, tree)
        ports = [listener.port for listener in listeners(tree)]
        self.assertEqual([type(port) for port in ports], [native_tcp.NativePort, native_tcp.NativePort])
        four, six = (port.getHost().port for port in ports)
        d = deferToThread(tutorial_client, four, [b"uv"])
        d.addCallback(lambda replies: self.assertEqual(replies, [b"Welcome!\r\n", b"Hello, uv!"]))
        d.addCallback(lambda _: deferToThread(tutorial_client, six, [b"six"], "::1"))
        d.addCallback(lambda replies: self.assertEqual(replies, [b"Welcome!\r\n", b"Hello, six!"]))
        return d

    async def test_a_pause_in_connection_made_holds(self) -> None:
        """
        Twisted's promise: no dataReceived while paused, even when paused in
        connectionMade (which uvloop's pause_reading ignores there).
        """
        received: list[bytes] = []
        made: list[Any] = []

        class Paused(Protocol):
            def connectionMade(self) -> None:
                self.transport.pauseProducing()  # type: ignore[union-attr]
                made.append(self.transport)

            def dataReceived(self, data: bytes) -> None:
                received.append(data)

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = native_tcp.serve(asyncio_loop(reactor), sock, Factory.forProtocol(Paused), 5)
        self.addCleanup(port.stopListening)
        payload = bytes(range(256)) * 400
        client = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(client.close)
        client.sendall(payload)
        await wait_until(lambda: made, "the connection")
        await deferLater(reactor, 0.3)
        self.assertEqual(received, [], "nothing while paused")
        made[0].resumeProducing()
        await wait_until(lambda: len(b"".join(received)) == len(payload), "every byte once resumed")
        self.assertTrue(b"".join(received) == payload)

    def test_other_endpoints_keep_twisteds_path(self) -> None:
        path = unix_socket_path(self)
        service = StreamListenService(f"unix:{path}", GreeterFactory(GreeterConfig()))
        self.assertNotIsInstance(service.endpoint, SocketEndpoint)
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        self.assertNotIsInstance(service.port, native_tcp.NativePort)

    def test_peer_is_an_ipv4address(self) -> Deferred[None]:
        seen: list[Any] = []

        class Peer(Protocol):
            def connectionMade(self) -> None:
                seen.append((self.transport.getPeer(), self.transport.getHost()))  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

        service = StreamListenService("tcp:0:interface=127.0.0.1", Factory.forProtocol(Peer))
        service.privilegedStartService()
        self.addCleanup(service.stopService)
        port = service.port.getHost().port  # type: ignore[union-attr]

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                return sock.recv(10)

        d = deferToThread(client)

        def check(data: bytes) -> None:
            self.assertEqual(data, b"")
            peer, host = seen[0]
            self.assertIsInstance(peer, IPv4Address)
            self.assertEqual((peer.host, host), ("127.0.0.1", IPv4Address("TCP", "127.0.0.1", port)))

        return d.addCallback(check)
