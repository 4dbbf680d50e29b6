import socket

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp.template import ReplyTemplate
from echoapp.udp import MAX_DATAGRAM, UDPGreeter


class RecordingUDPTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, object]] = []

    def write(self, datagram: bytes, addr: object) -> None:
        self.sent.append((datagram, addr))


def greeter(template: str = "Hello, {}!") -> tuple[UDPGreeter, RecordingUDPTransport]:
    protocol = UDPGreeter(ReplyTemplate.parse(template))
    transport = RecordingUDPTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    return protocol, transport


class UDPGreeterUnitTests(SynchronousTestCase):
    addr = ("127.0.0.1", 40000)

    def test_one_reply_to_the_sender(self) -> None:
        protocol, transport = greeter()
        protocol.datagramReceived(b"Michael", self.addr)
        self.assertEqual(transport.sent, [(b"Hello, Michael!", self.addr)])

    def test_terminator_stripped_and_mirrored(self) -> None:
        protocol, transport = greeter()
        protocol.datagramReceived(b"Tracy\r\n", self.addr)
        protocol.datagramReceived(b"Sarah\n", self.addr)
        self.assertEqual([d for d, _ in transport.sent], [b"Hello, Tracy!\r\n", b"Hello, Sarah!\n"])

    def test_echo_template(self) -> None:
        protocol, transport = greeter("{}")
        protocol.datagramReceived(b"\xff\x00raw\n", self.addr)
        self.assertEqual(transport.sent, [(b"\xff\x00raw\n", self.addr)])

    def test_bye_does_not_stop_anything(self) -> None:
        protocol, transport = greeter()
        for word in (b"bye", b"exit", b"after"):
            protocol.datagramReceived(word, self.addr)
        self.assertEqual(len(transport.sent), 3)

    def test_reply_that_cannot_fit_is_dropped_not_truncated(self) -> None:
        protocol, transport = greeter()
        fits = b"x" * (MAX_DATAGRAM - len("Hello, !"))
        protocol.datagramReceived(fits, self.addr)
        protocol.datagramReceived(fits + b"x", self.addr)
        self.assertEqual([len(d) for d, _ in transport.sent], [MAX_DATAGRAM])
        self.assertEqual(protocol.dropped_oversized, 1)


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
        from tests.support import start

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
