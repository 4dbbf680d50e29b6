"""The native datagram transport (echoapp._transports.native_udp)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IUDPTransport
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from echoapp import services
from echoapp._protocols.udp import UDPGreeter
from echoapp._transports import native_udp
from echoapp._transports.endpoints import UDPListen
from echoapp._twisted import asyncio_loop
from tests.support import listeners, start, udp_port_closed


class FakeDatagramTransport(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__({"socket": None})
        self.sent: list[tuple[bytes, Any]] = []
        self.closing = False
        self.buffered = 0

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing


def datagram_port(
    greeter: UDPGreeter,
) -> tuple[native_udp.NativeDatagramPort, native_udp.DatagramBridge, FakeDatagramTransport]:
    port = native_udp.NativeDatagramPort(greeter, IPv4Address("UDP", "127.0.0.1", 9999))
    bridge = native_udp.DatagramBridge(port)
    transport = FakeDatagramTransport()
    bridge.connection_made(transport)
    return port, bridge, transport


class DatagramAdapterTests(SynchronousTestCase):
    def test_is_a_udp_transport(self) -> None:
        port, _, _ = datagram_port(UDPGreeter(clock=Clock()))
        self.assertTrue(verifyObject(IUDPTransport, port))

    def test_greeter_answers_through_the_loop(self) -> None:
        greeter = UDPGreeter(clock=Clock())
        _, bridge, transport = datagram_port(greeter)
        self.assertIn(9999, greeter.own_ports, "startProtocol ran, and learnt the port")
        bridge.datagram_received(b"uv\n", ("127.0.0.1", 40000))
        bridge.datagram_received(b"loop", ("127.0.0.1", 9999))  # from our own port: never answered
        self.assertEqual(transport.sent, [(b"Hello, uv!\n", ("127.0.0.1", 40000))])

    def test_replies_dropped_rather_than_buffered_without_bound(self) -> None:
        port, bridge, transport = datagram_port(UDPGreeter(clock=Clock()))
        transport.buffered = native_udp.DATAGRAM_BUFFER_LIMIT + 1
        bridge.datagram_received(b"x", ("127.0.0.1", 40000))
        self.assertEqual((transport.sent, port.dropped), ([], 1))

    def test_an_error_is_logged_and_the_port_keeps_serving(self) -> None:
        class Broken(UDPGreeter):
            def datagramReceived(self, datagram: bytes, addr: Any) -> None:
                if datagram == b"bug":
                    raise ZeroDivisionError()
                super().datagramReceived(datagram, addr)

        _, bridge, transport = datagram_port(Broken(clock=Clock()))
        bridge.datagram_received(b"bug", ("127.0.0.1", 40000))
        bridge.datagram_received(b"ok", ("127.0.0.1", 40000))
        self.assertEqual(len(transport.sent), 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_stop_closes_and_stops_the_protocol(self) -> None:
        greeter = UDPGreeter(clock=Clock())
        port, bridge, transport = datagram_port(greeter)
        stopping = port.stopListening()
        self.assertTrue(transport.closing)
        self.assertNoResult(stopping)  # until the loop has let the socket go
        bridge.connection_lost(None)
        self.successResultOf(stopping)
        self.assertEqual(greeter.numPorts, 0)

    def test_stopped_before_the_loop_handed_over(self) -> None:
        greeter = UDPGreeter(clock=Clock())
        port = native_udp.NativeDatagramPort(greeter, IPv4Address("UDP", "127.0.0.1", 9999))
        port.stopListening()
        transport = FakeDatagramTransport()
        native_udp.DatagramBridge(port).connection_made(transport)
        self.assertTrue(transport.closing)
        self.assertEqual(greeter.numPorts, 0)


class NativeUDPLoopbackTests(TestCase):
    def setUp(self) -> None:
        if asyncio_loop(reactor) is None:
            raise self.skipTest("the reactor has no asyncio loop (run trial --reactor=uvloop)")

    def test_udp_uses_the_loops_transport(self) -> Deferred[None]:
        tree = services.udp_greeter(listen=[UDPListen(0, "127.0.0.1")])
        start(self, tree)
        [listener] = listeners(tree)
        self.assertIsInstance(listener.port, native_udp.NativeDatagramPort)
        port = listener.port.getHost().port

        def client() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(b"datagram", ("127.0.0.1", port))
                return sock.recv(100)

        return deferToThread(client).addCallback(self.assertEqual, b"Hello, datagram!")

    async def test_stopped_means_the_port_is_free(self) -> None:
        """
        Whoever waits for the port to stop (echoapp-proxy's API before it
        answers "disabled") finds it free: the loop closes the socket only
        after connection_lost returns.
        """
        tree = services.udp_greeter(listen=[UDPListen(0, "127.0.0.1")])
        tree.privilegedStartService()
        tree.startService()
        [listener] = listeners(tree)
        await deferLater(reactor, 0.05, lambda: None)  # the loop hands the transport over
        port = listener.port.getHost().port
        seen: list[bool] = []
        stopping = listener.stopService()
        stopping.addCallback(lambda _: seen.append(udp_port_closed(port)))
        await stopping
        await tree.stopService()
        self.assertEqual(seen, [True], "free when the stop is said")


class ReadByTheProtocolTests(SynchronousTestCase):
    """
    On the loop, the greeter reads its socket itself (one frame per wake-up,
    C{read_ready}); a protocol without that, or a wrapper that forwards
    attributes to a greeter (faults), gets the loop's own transport.
    """

    def test_greeter_reads_its_own_socket(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        greeter = UDPGreeter(clock=Clock())
        port = native_udp.serve_datagrams(loop, sock, greeter)
        loop.run_until_complete(asyncio.sleep(0))
        self.assertTrue(port.read_directly)
        self.assertIs(port.getHandle(), sock)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.settimeout(5)
            client.sendto(b"one", sock.getsockname())
            client.sendto(b"two\n", sock.getsockname())
            loop.run_until_complete(asyncio.sleep(0.05))
            self.assertEqual([client.recv(100) for _ in range(2)], [b"Hello, one!", b"Hello, two!\n"])
        stopped = port.stopListening()
        self.successResultOf(stopped)
        self.assertEqual((greeter.numPorts, sock.fileno()), (0, -1), "stopped, and the socket closed")

    def test_a_wrapper_gets_the_loops_transport(self) -> None:
        from echoapp._faults.datagrams import FaultyDatagramProtocol
        from echoapp._faults.plan import FaultPlan
        from echoapp._faults.spec import Faults

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        wrapper = FaultyDatagramProtocol(UDPGreeter(clock=Clock()), FaultPlan(Faults(), Clock()))
        port = native_udp.serve_datagrams(loop, sock, wrapper)
        loop.run_until_complete(asyncio.sleep(0.01))
        self.assertFalse(port.read_directly, "the wrapper sees every datagram")
        port.stopListening()
        loop.run_until_complete(asyncio.sleep(0.01))

    def test_a_full_send_buffer_drops_the_reply(self) -> None:
        class Full:
            def sendto(self, data: bytes, addr: Any) -> int:
                raise BlockingIOError(11, "full")

            def close(self) -> None:
                pass

        port = native_udp.NativeDatagramPort(UDPGreeter(clock=Clock()), IPv4Address("UDP", "127.0.0.1", 9999))
        port._socket = Full()
        self.assertIs(port.write(b"x", ("127.0.0.1", 40000)), False)
        self.assertEqual(port.dropped, 1)


class WatchReadableTests(TestCase):
    """L{native_udp.watch_readable}: a bare socket read on wake-up, on either reactor, without a port."""

    def test_an_error_without_data_is_handed_to_the_callback(self) -> None:
        """Twisted's epoll reactor reports EPOLLERR alone as a lost connection: the owner must hear it."""
        from twisted.internet.testing import MemoryReactor

        fake = MemoryReactor()
        calls: list[None] = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            unwatch = native_udp.watch_readable(fake, sock, lambda: calls.append(None))
            [readable] = fake.readers
            self.assertEqual(readable.fileno(), sock.fileno())
            readable.connectionLost(None)
            self.assertEqual(len(calls), 1)
            unwatch()
            self.assertEqual(fake.readers, set())

    async def test_the_running_reactor_calls_back_when_a_datagram_waits(self) -> None:
        got: list[bytes] = []
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)

        def read() -> None:
            try:
                got.append(sock.recv(100))
            except BlockingIOError:
                pass

        unwatch = native_udp.watch_readable(reactor, sock, read)
        self.addCleanup(unwatch)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"ping", sock.getsockname())
        for _ in range(2000):
            if got:
                break
            await deferLater(reactor, 0.01)
        self.assertEqual(got, [b"ping"])
