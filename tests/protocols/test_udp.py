import socket

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._protocols.udp import MAX_DATAGRAM, UDPGreeter
from echoapp.config import UDPLimits
from echoapp.template import ReplyTemplate
from tests.support import RecordingUDPTransport, start


def greeter(
    template: str = "Hello, {}!", limits: UDPLimits | None = None, clock: Clock | None = None
) -> tuple[UDPGreeter, RecordingUDPTransport]:
    protocol = UDPGreeter(ReplyTemplate.parse(template), limits, clock=clock or Clock())
    transport = RecordingUDPTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return protocol, transport


class UDPGreeterUnitTests(SynchronousTestCase):
    addr = ("127.0.0.1", 40000)

    def test_one_reply_to_the_sender(self) -> None:
        protocol, transport = greeter()
        protocol.datagramReceived(b"Michael", self.addr)
        self.assertEqual(transport.written, [(b"Hello, Michael!", self.addr)])

    def test_terminator_stripped_and_mirrored(self) -> None:
        protocol, transport = greeter()
        protocol.datagramReceived(b"Tracy\r\n", self.addr)
        protocol.datagramReceived(b"Sarah\n", self.addr)
        self.assertEqual([d for d, _ in transport.written], [b"Hello, Tracy!\r\n", b"Hello, Sarah!\n"])

    def test_echo_template(self) -> None:
        protocol, transport = greeter("{}")
        protocol.datagramReceived(b"\xff\x00raw\n", self.addr)
        self.assertEqual(transport.written, [(b"\xff\x00raw\n", self.addr)])

    def test_bye_does_not_stop_anything(self) -> None:
        protocol, transport = greeter()
        for word in (b"bye", b"exit", b"after"):
            protocol.datagramReceived(word, self.addr)
        self.assertEqual(len(transport.written), 3)

    def test_reply_that_cannot_fit_is_dropped_not_truncated(self) -> None:
        protocol, transport = greeter()
        fits = b"x" * (MAX_DATAGRAM - len("Hello, !"))
        protocol.datagramReceived(fits, self.addr)
        protocol.datagramReceived(fits + b"x", self.addr)
        self.assertEqual([len(d) for d, _ in transport.written], [MAX_DATAGRAM])
        self.assertEqual(protocol.stats.dropped["size"], 1)

    def test_65000_byte_datagram_answered_whole(self) -> None:
        protocol, transport = greeter()
        protocol.datagramReceived(b"z" * 65000, self.addr)
        protocol.datagramReceived(b"next", self.addr)
        self.assertEqual([len(d) for d, _ in transport.written], [65008, len(b"Hello, next!")])

    def test_reply_is_request_plus_template_overhead_at_most(self) -> None:
        protocol, transport = greeter()
        for size in (0, 1, 100, 8192):
            protocol.datagramReceived(b"q" * size + b"\r\n", self.addr)
            self.assertEqual(len(transport.written[-1][0]), size + 2 + protocol.reply.overhead)

    def test_ipv6_datagrams_up_to_65527(self) -> None:
        """IPv6 carries 65527 bytes of UDP payload; IPv4 and IPv4-mapped hosts 65507."""
        protocol, transport = greeter("{}", UDPLimits(burst=100))
        protocol.datagramReceived(b"x" * 65520, ("2001:db8::1", 40000, 0, 0))
        protocol.datagramReceived(b"x" * 65520, ("::ffff:10.0.0.1", 40000, 0, 0))
        protocol.datagramReceived(b"x" * 65528, ("2001:db8:1::1", 40000, 0, 0))
        self.assertEqual([(len(data), addr[0]) for data, addr in transport.written], [(65520, "2001:db8::1")])
        self.assertEqual(protocol.stats.dropped["size"], 2)


class UDPGuardTests(SynchronousTestCase):
    addr = ("127.0.0.1", 40000)

    def test_no_reply_to_port_zero_privileged_or_own_ports(self) -> None:
        protocol, transport = greeter()
        for port in (0, 7, 19, 53, 1023, 9999):
            protocol.datagramReceived(b"storm", ("127.0.0.1", port))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.stats.dropped["port"], 6)
        protocol.datagramReceived(b"fine", ("127.0.0.1", 1024))
        self.assertEqual(transport.written, [(b"Hello, fine!", ("127.0.0.1", 1024))])

    def test_listeners_of_one_service_share_their_ports(self) -> None:
        shared: set[int] = set()
        first = UDPGreeter(limits=None, own_ports=shared, clock=Clock())
        first.makeConnection(RecordingUDPTransport(5000))  # type: ignore[arg-type]
        second = UDPGreeter(limits=None, own_ports=shared, clock=Clock())
        transport = RecordingUDPTransport(6000)
        second.makeConnection(transport)  # type: ignore[arg-type]
        second.datagramReceived(b"loop", ("127.0.0.1", 5000))
        self.assertEqual(transport.written, [])

    def test_flood_from_one_source_is_bounded_and_others_still_served(self) -> None:
        clock = Clock()
        protocol, transport = greeter(limits=UDPLimits(rate=10, burst=5), clock=clock)
        for _ in range(1000):
            protocol.datagramReceived(b"flood", ("127.0.0.9", 40000))
        self.assertEqual(len(transport.written), 5)
        protocol.datagramReceived(b"other", ("127.0.0.2", 40000))
        self.assertEqual(transport.written[-1], (b"Hello, other!", ("127.0.0.2", 40000)))
        clock.advance(1)
        for _ in range(1000):
            protocol.datagramReceived(b"flood", ("127.0.0.9", 40000))
        self.assertEqual(len(transport.written), 6 + 5)  # the bucket refilled to its burst, no more
        self.assertEqual(protocol.stats.dropped["rate"], 1990)

    def test_global_cap(self) -> None:
        protocol, transport = greeter(limits=UDPLimits(rate=100, burst=100, global_rate=20), clock=Clock())
        for source in range(100):
            protocol.datagramReceived(b"x", (f"10.0.0.{source}", 40000))
        self.assertEqual(len(transport.written), 20)

    def test_spoofed_sources_cannot_grow_the_table(self) -> None:
        protocol, _ = greeter(limits=UDPLimits(max_sources=100), clock=Clock())
        for source in range(10_000):
            protocol.datagramReceived(b"x", (f"10.{source >> 8}.{source & 255}.1", 40000))
        self.assertEqual(len(protocol.sources), 100)

    def test_exception_caught_counted_logged_once(self) -> None:
        protocol, transport = greeter()

        def broken(datagram: bytes, addr: object) -> None:
            raise RuntimeError("boom")

        transport.write = broken  # type: ignore[method-assign]
        for _ in range(5):
            protocol.datagramReceived(b"x", self.addr)
        self.assertEqual(protocol.stats.dropped["error"], 5)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        transport.write = RecordingUDPTransport.write.__get__(transport)  # type: ignore[method-assign]
        protocol.datagramReceived(b"again", self.addr)
        self.assertEqual(transport.written, [(b"Hello, again!", self.addr)])


def exchange(family: int, host: str, port: int, datagrams: list[bytes]) -> list[bytes]:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(10)
        replies = []
        for datagram in datagrams:
            sock.sendto(datagram, (host, port))
            replies.append(sock.recvfrom(70000)[0])
        return replies


class UDPLoopbackTests(TestCase):
    def serve(self, listen: str, template: str = "Hello, {}!") -> int:
        [port] = start(self, services.udp_greeter([listen], ReplyTemplate.parse(template)))
        return int(port.getHost().port)

    def test_greets_over_loopback(self) -> Deferred[None]:
        port = self.serve("udp:0:interface=127.0.0.1")
        d = deferToThread(exchange, socket.AF_INET, "127.0.0.1", port, [b"Michael", b"Bob\n", b"bye"])
        d.addCallback(self.assertEqual, [b"Hello, Michael!", b"Hello, Bob!\n", b"Hello, bye!"])
        return d

    def test_large_datagrams_read_whole(self) -> Deferred[None]:
        port = self.serve("udp:0:interface=127.0.0.1", "{}")
        big = bytes(range(256)) * 234  # 59904 bytes, far over Twisted's default 8192
        d = deferToThread(exchange, socket.AF_INET, "127.0.0.1", port, [big, b"next"])
        d.addCallback(self.assertEqual, [big, b"next"])
        return d

    def test_ipv6_loopback(self) -> Deferred[None]:
        if not socket.has_ipv6:
            self.skipTest("no IPv6 here")
        try:
            port = self.serve("udp:0:interface=::1")
        except SystemExit as error:
            self.skipTest(f"no ::1 here: {error}")
        d = deferToThread(exchange, socket.AF_INET6, "::1", port, [b"six\n"])
        d.addCallback(self.assertEqual, [b"Hello, six!\n"])
        return d


class DirectSendTests(TestCase):
    """On Twisted's own UDP port, replies skip Port.write's address checks; errors still get its handling."""

    def test_replies_go_straight_to_the_socket(self) -> None:
        from twisted.internet import reactor, udp

        protocol = UDPGreeter(ReplyTemplate.parse("Hello, {}!"))
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if not isinstance(port, udp.Port):
            self.skipTest("this reactor's UDP port is not Twisted's udp.Port")
        written: list[bytes] = []
        self.patch(port, "write", lambda data, addr: written.append(data))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            protocol.datagramReceived(b"direct", client.getsockname())
            client.settimeout(5)
            self.assertEqual(client.recvfrom(100)[0], b"Hello, direct!")
        self.assertEqual(written, [], "Port.write (and its isIPAddress) was not on the path")

    def test_a_send_error_falls_back_to_port_write(self) -> None:
        protocol, transport = greeter()

        def refused(data: bytes, addr: object) -> int:
            raise OSError(111, "Connection refused")

        protocol._sendto = refused
        protocol.datagramReceived(b"Bob", ("127.0.0.1", 40000))
        self.assertEqual(transport.written, [(b"Hello, Bob!", ("127.0.0.1", 40000))])
