"""
echoapp-proxy for UDP: one upstream socket per client source, bounded in
number and idle time, and datagram faults in either direction.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._faults import Faults
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._proxy.toxics import ProxyFaults, Toxic
from echoapp._proxy.udp import UDPProxy
from echoapp._transports.endpoints import UDPListen
from echoapp._transports.listen import UDPListenService
from tests.support import Twistd, json_file, udp_replies


def faults_with(stream: str, faults: Faults) -> ProxyFaults:
    proxy_faults = ProxyFaults(seed=3)
    if faults:
        proxy_faults.set(Toxic("f", "echoapp", stream, 1, faults))
    return proxy_faults


class UDPProxyTests(TestCase):
    def proxy(self, faults: ProxyFaults) -> int:
        greeter = testing.udp(self)
        service = UDPListenService(
            UDPListen.parse("udp:0:interface=127.0.0.1"), UDPProxy(("127.0.0.1", greeter.port), faults)
        )
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return int(service.port.getHost().port)

    async def test_forwards_both_ways(self) -> None:
        port = self.proxy(ProxyFaults())
        self.assertEqual(await deferToThread(udp_replies, port, b"Bob", 1), [b"Hello, Bob!"])

    async def test_duplicate_downstream(self) -> None:
        port = self.proxy(faults_with("downstream", Faults(duplicate=1)))
        self.assertEqual(await deferToThread(udp_replies, port, b"Bob", 2), [b"Hello, Bob!"] * 2)

    async def test_duplicate_upstream_is_two_requests(self) -> None:
        port = self.proxy(faults_with("upstream", Faults(duplicate=1)))
        self.assertEqual(await deferToThread(udp_replies, port, b"Ann", 2), [b"Hello, Ann!"] * 2)


class UDPMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock, which has no UDP, with listenUDP recorded as listenTCP is."""

    def listenUDP(self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192) -> Any:
        self.udpPorts.append(protocol)
        return self.listenTCP(port, protocol, interface=interface)  # an IListeningPort that can stop


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = UDPMemoryReactor()
        self.clock.udpPorts = []
        self.proxy = UDPProxy(
            ("127.0.0.1", 53), ProxyFaults(seed=1), self.clock, max_sessions=2, idle_timeout=10
        )
        self.proxy.makeConnection(FakeDatagramTransport())

    def test_one_upstream_socket_per_source_bounded_in_number(self) -> None:
        for source in range(3):
            self.proxy.datagramReceived(b"q", ("10.0.0.1", 1000 + source))
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1002))
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.1", 1001), ("10.0.0.1", 1002)])
        self.assertEqual(len(self.clock.udpPorts), 3, "one socket each; the oldest was closed to make room")

    def test_session_sockets_count_against_the_descriptor_ceiling(self) -> None:
        self.patch(DESCRIPTORS, "open", 0)
        self.patch(DESCRIPTORS, "ceiling", 1)
        self.patch(DESCRIPTORS, "limit", lambda: 1)
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1000))
        self.assertEqual(DESCRIPTORS.open, 1, "the session's socket is held")
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1001))
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.1", 1001)], "the oldest went to make room")
        self.assertEqual(DESCRIPTORS.open, 1)
        DESCRIPTORS.open += 1  # a TCP client takes the last one
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1002))
        self.assertEqual(list(self.proxy.sessions), [], "no socket for a new source: dropped")
        self.proxy.stopProtocol()
        self.assertEqual(DESCRIPTORS.open, 1, "every session's descriptor given back")

    def test_no_socket_for_a_source_drops_its_datagram_quietly(self) -> None:
        def no_socket(*args: Any, **kwargs: Any) -> Any:
            raise CannotListenError("", 0, OSError(24, "Too many open files"))

        self.patch(self.clock, "listenUDP", no_socket)
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1000))
        self.assertEqual(self.proxy.sessions, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_quiet_sessions_are_closed(self) -> None:
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 1000))
        self.clock.advance(5)
        self.proxy.datagramReceived(b"q", ("10.0.0.2", 1000))
        self.clock.advance(6)
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.2", 1000)])
        self.clock.advance(10)
        self.assertEqual(self.proxy.sessions, {})
        self.proxy.stopProtocol()
        self.assertFalse(self.clock.getDelayedCalls())


class UDPPluginTests(SynchronousTestCase):
    def test_twistd_udp_proxy_with_a_fault(self) -> None:
        greeter = Twistd(["echoapp-udp", "--listen", "udp:0:interface=127.0.0.1"])
        self.addCleanup(greeter.stop)
        upstream = f"udp:127.0.0.1:{greeter.address_port('echoapp-udp')}"
        proxy = Twistd(
            [
                "echoapp-proxy",
                "--listen",
                "udp:0:interface=127.0.0.1",
                "--upstream",
                upstream,
                "--fault",
                "duplicate=1",
            ]
        )
        self.addCleanup(proxy.stop)
        self.assertEqual(udp_replies(proxy.address_port("echoapp-proxy"), b"Cy", 2), [b"Hello, Cy!"] * 2)

    def test_a_udp_proxy_from_a_config_file_with_its_toxics(self) -> None:
        """toxiproxy's populate format, a UDP proxy in it (its "type"), and its toxic applied at start."""
        greeter = Twistd(["echoapp-udp", "--listen", "udp:0:interface=127.0.0.1"])
        self.addCleanup(greeter.stop)
        config = [
            {
                "name": "dns",
                "type": "udp",
                "listen": "127.0.0.1:0",
                "upstream": f"127.0.0.1:{greeter.address_port('echoapp-udp')}",
                "toxics": [{"type": "echoapp", "attributes": {"duplicate": 1}}],
            }
        ]
        proxy = Twistd(["echoapp-proxy", "--config", json_file(self, config)])
        self.addCleanup(proxy.stop)
        self.assertEqual(udp_replies(proxy.address_port("echoapp-proxy"), b"Di", 2), [b"Hello, Di!"] * 2)


UDP_LOOPBACK = "udp:0:interface=127.0.0.1"


class InProcessUDPProxyTests(TestCase):
    async def test_udp_addresses_make_a_udp_proxy_and_faults_reach_it(self) -> None:
        greeter = testing.udp(self)
        peer = testing.proxy(
            self, listen="udp:0:interface=127.0.0.1", upstream=f"udp:127.0.0.1:{greeter.port}"
        )
        self.assertEqual(await deferToThread(udp_replies, peer.port, b"Ed", 1), [b"Hello, Ed!"])
        peer.faults = Faults(duplicate=1)
        self.assertEqual(await deferToThread(udp_replies, peer.port, b"Ed", 2), [b"Hello, Ed!"] * 2)

    def test_a_fault_the_proxy_cannot_apply_is_one_line(self) -> None:
        greeter = testing.udp(self)
        udp = testing.proxy(
            self, listen="udp:0:interface=127.0.0.1", upstream=f"udp:127.0.0.1:{greeter.port}"
        )
        with self.assertRaises(ValueError) as caught:
            udp.faults = Faults(bandwidth=10)
        self.assertIn("fault bandwidth: applies to TCP services only", str(caught.exception))
        with self.assertRaises(ValueError) as caught:
            testing.proxy(self, upstream=f"127.0.0.1:{greeter.port}", faults=Faults(loss=0.5))
        self.assertIn("fault loss: applies to UDP services only", str(caught.exception))
