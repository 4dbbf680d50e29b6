"""
Who a peer is: IPv4-mapped addresses are IPv4, IPv6 peers are counted per
prefix, and near the cap room is kept for peers that hold nothing yet.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._limits.connections import Connections
from echoapp._limits.guard import Refusal
from echoapp._peers import PeerKeys, host_of, not_a_host, peer_host
from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.udp import UDPGreeter
from echoapp.config import TCPLimits, UDPLimits
from tests.support import DEADLINE, listeners, start


class HostTests(SynchronousTestCase):
    def test_ipv4_mapped_is_ipv4(self) -> None:
        self.assertEqual(host_of("::ffff:127.0.0.1"), "127.0.0.1")
        self.assertEqual(host_of("::ffff:10.1.2.3"), "10.1.2.3")

    def test_everything_else_is_as_it_is(self) -> None:
        for host in ("10.1.2.3", "::1", "2001:db8::1", "fe80::1%lo", "::ffff:nonsense.x"):
            self.assertEqual(host_of(host), host)

    def test_peer_host(self) -> None:
        self.assertEqual(peer_host(IPv6Address("TCP", "::ffff:127.0.0.1", 5)), "127.0.0.1")
        self.assertEqual(peer_host(IPv4Address("TCP", "10.1.2.3", 5)), "10.1.2.3")
        self.assertEqual(peer_host(UNIXAddress(b"/x")), "local")
        self.assertEqual(peer_host(None), "local")


class NotAHostTests(SynchronousTestCase):
    """The source addresses no datagram of a real host comes from (a forged one does)."""

    def test_broadcast_multicast_and_unspecified(self) -> None:
        for host in (
            "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255",
            "::", "ff02::1", "FF05::1:3", "ff02::1%lo", "::ffff:224.0.0.251", "::ffff:0.0.0.0",
        ):  # fmt: skip
            self.assertTrue(not_a_host(host), host)

    def test_hosts(self) -> None:
        for host in (
            "127.0.0.1", "1.0.0.1", "10.0.0.255", "223.255.255.255", "::1", "2001:db8::1",
            "fe80::1%lo", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fd00::ff",
            "ff::1", "ff0::1", "FF:1::2",  # 00ff::1, 0ff0::1, 00ff:1::2: a first group under ff00
        ):  # fmt: skip
            self.assertFalse(not_a_host(host), host)


class PeerKeyTests(SynchronousTestCase):
    def test_ipv4_is_its_address(self) -> None:
        self.assertEqual(PeerKeys()("10.1.2.3"), "10.1.2.3")

    def test_ipv6_is_its_64(self) -> None:
        key = PeerKeys()
        self.assertEqual(key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64")
        self.assertEqual(key("2001:db8:1:2::ffff"), key("2001:db8:1:2:3:4:5:6"), "one /64, one peer")
        self.assertNotEqual(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"), "another /64, another peer")

    def test_other_prefix_lengths(self) -> None:
        self.assertEqual(PeerKeys(48)("2001:db8:1:2::1"), "2001:db8:1::/48")
        self.assertEqual(PeerKeys(128)("2001:db8::1"), "2001:db8::1/128")
        for wrong in (0, 129):
            self.assertRaises(ValueError, PeerKeys, wrong)

    def test_mapped_and_scoped(self) -> None:
        key = PeerKeys()
        self.assertEqual(key("::ffff:127.0.0.1"), "127.0.0.1")
        self.assertEqual(key("fe80::1%lo"), "fe80::/64")

    def test_the_table_is_bounded(self) -> None:
        key = PeerKeys(size=2)
        for n in range(100):
            key(f"2001:db8:{n}::1")
        self.assertLessEqual(len(key._known), 2)
        self.assertEqual(key("2001:db8:5::1"), "2001:db8:5::/64", "forgetting costs only a recomputation")


def connect(factory: Any, host: str, family: type = IPv4Address) -> tuple[Any, StringTransport]:
    address = family("TCP", host, 50000)
    protocol = factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


class PerPeerTests(SynchronousTestCase):
    def test_a_64_is_one_peer(self) -> None:
        factory = EchoFactory(Connections(TCPLimits(max_per_peer=2)), Clock())
        for host in ("2001:db8::1", "2001:db8::2"):
            self.assertNotIsInstance(connect(factory, host, IPv6Address)[0], Refusal)
        self.assertIsInstance(connect(factory, "2001:db8::3", IPv6Address)[0], Refusal)
        self.assertNotIsInstance(connect(factory, "2001:db8:0:1::1", IPv6Address)[0], Refusal)

    def test_mapped_and_plain_ipv4_are_one_peer(self) -> None:
        factory = EchoFactory(Connections(TCPLimits(max_per_peer=2)), Clock())
        connect(factory, "127.0.0.1")
        connect(factory, "::ffff:127.0.0.1", IPv6Address)
        self.assertIsInstance(connect(factory, "127.0.0.1")[0], Refusal)
        self.assertEqual(factory.connections.per_peer, {"127.0.0.1": 2})


class ReserveTests(SynchronousTestCase):
    def test_the_last_tenth_is_for_new_peers(self) -> None:
        factory = EchoFactory(Connections(TCPLimits(max_connections=200, max_per_peer=5)), Clock())
        admitted: dict[str, int] = {}
        for n in range(60):
            host = f"10.0.0.{n}"
            for _ in range(5):
                if not isinstance(connect(factory, host)[0], Refusal):
                    admitted[host] = admitted.get(host, 0) + 1
        self.assertEqual(sum(admitted.values()), 200)
        self.assertEqual(len(admitted), 56, "36 peers with five each, then twenty more with one each")
        self.assertEqual(sorted(set(admitted.values())), [1, 5])

    def test_no_reserve_for_a_small_cap(self) -> None:
        factory = EchoFactory(Connections(TCPLimits(max_connections=9, max_per_peer=9)), Clock())
        refused = [isinstance(connect(factory, "10.0.0.1")[0], Refusal) for _ in range(10)]
        self.assertEqual(refused, [False] * 9 + [True])


class UDPSourceKeyTests(SynchronousTestCase):
    def greeter(self) -> tuple[UDPGreeter, list[Any]]:
        sent: list[Any] = []

        class Transport:
            def write(self, data: bytes, addr: Any) -> None:
                sent.append(addr)

            def getHost(self) -> Any:
                return IPv4Address("UDP", "127.0.0.1", 9999)

        greeter = UDPGreeter(limits=UDPLimits(rate=1, burst=1), clock=Clock())
        greeter.makeConnection(Transport())  # type: ignore[arg-type]
        return greeter, sent

    def test_one_64_shares_one_bucket(self) -> None:
        greeter, sent = self.greeter()
        greeter.datagramReceived(b"a", ("2001:db8::1", 40000, 0, 0))
        greeter.datagramReceived(b"b", ("2001:db8::2", 40000, 0, 0))
        greeter.datagramReceived(b"c", ("2001:db8:0:1::1", 40000, 0, 0))
        self.assertEqual([addr[0] for addr in sent], ["2001:db8::1", "2001:db8:0:1::1"])

    def test_mapped_and_plain_share_one_bucket(self) -> None:
        greeter, sent = self.greeter()
        greeter.datagramReceived(b"a", ("10.0.0.1", 40000))
        greeter.datagramReceived(b"b", ("::ffff:10.0.0.1", 40000, 0, 0))
        self.assertEqual(len(sent), 1)
        self.assertEqual(greeter.stats.dropped["rate"], 1)


class SameHostOverTwoListenersTests(TestCase):
    """The report: a tcp: and a tcp6: (IPv4-mapped) listener admitted six with --max-per-peer 3."""

    async def test_counts_once(self) -> None:
        tree = services.tcp_greeter(
            ["tcp:0:interface=127.0.0.1", "tcp6:0:interface=\\:\\:ffff\\:127.0.0.1"],
            limits=TCPLimits(max_per_peer=3),
        )
        ports = [port.getHost().port for port in start(self, tree)]
        replies = []
        for port in ports:
            for _ in range(3):
                sock = socket.create_connection(("127.0.0.1", port), DEADLINE)
                self.addCleanup(sock.close)
                sock.setblocking(False)
                replies.append(sock)
        lines: dict[socket.socket, bytes] = {}
        for _ in range(int(DEADLINE / 0.02)):
            for sock in replies:
                try:
                    lines.setdefault(sock, sock.recv(100))
                except BlockingIOError:
                    pass
            if len(lines) == len(replies):
                break
            await deferLater(reactor, 0.02)
        welcomed = sum(line == b"Welcome!\r\n" for line in lines.values())
        self.assertEqual(welcomed, 3)
        self.assertEqual(listeners(tree)[0].factory.connections.per_peer, {"127.0.0.1": 3})
