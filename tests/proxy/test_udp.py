"""
echoapp-proxy for UDP: one upstream socket per client source, bounded in
number and idle time, and datagram faults in either direction.
"""

from __future__ import annotations

import select
import socket
from typing import Any

from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import FakeDatagramTransport, MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._faults import Faults
from echoapp._faults.datagrams import HELD_COST, HeldBytes
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._proxy import udp as udp_module
from echoapp._proxy.errors import Invalid
from echoapp._proxy.loops import loops_to_itself
from echoapp._proxy.schema import ProxySpec
from echoapp._proxy.toxics import ProxyFaults, Toxic
from echoapp._proxy.udp import NamedUDPProxy, UDPProxy
from echoapp._transports.endpoints import UDPListen
from echoapp._transports.listen import UDPListenService
from echoapp.config import TCPLimits
from tests.support import DEADLINE, Twistd, json_file, udp_replies, wait_until


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


class HeldTests(SynchronousTestCase):
    def test_held_datagrams_are_bounded_per_proxy_not_per_session(self) -> None:
        """
        A client that opens sessions from new source ports, each holding
        datagrams back under a latency toxic, cannot multiply the bound: it
        is the proxy's, 16 MiB (about 900 MB grew from 200 ports a round, before).
        """
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        self.addCleanup(sink.close)
        faults = faults_with("upstream", Faults(latency=10))
        proxy = UDPProxy(sink.getsockname(), faults, MemoryReactorClock(), max_sessions=1000)
        proxy.makeConnection(FakeDatagramTransport())
        self.addCleanup(proxy.stopProtocol)
        for source in range(200):
            for _ in range(20):
                proxy.datagramReceived(b"x" * 4096, ("10.0.0.1", 41000 + source))
        self.assertEqual(len(proxy.sessions), 200)
        held = [session.up.held_bytes for session in proxy.sessions.values()]
        self.assertLessEqual(sum(held), udp_module.HELD_BYTES)
        self.assertGreater(sum(held), udp_module.HELD_BYTES - 2 * (4096 + HELD_COST), "full")
        self.assertEqual(proxy.held.held, sum(held))
        self.assertEqual(held[-1], 0, "a new session finds the proxy's bound spent")
        proxy.stopProtocol()
        self.assertEqual(proxy.held.held, 0, "every session's share given back")

    def test_held_datagrams_are_bounded_for_every_proxy_together(self) -> None:
        """Nor can a client multiply the bound by making proxies through the API: the process has one too."""
        whole = HeldBytes(100_000)
        self.patch(udp_module, "ALL_HELD", whole)
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        self.addCleanup(sink.close)
        proxies = []
        for _ in range(3):
            proxy = UDPProxy(
                sink.getsockname(), faults_with("upstream", Faults(latency=10)), MemoryReactorClock()
            )
            proxy.makeConnection(FakeDatagramTransport())
            self.addCleanup(proxy.stopProtocol)
            for n in range(30):
                proxy.datagramReceived(b"x" * 4096, ("10.0.0.1", 41000 + n))
            proxies.append(proxy)
        self.assertEqual(whole.held, sum(proxy.held.held for proxy in proxies))
        self.assertLessEqual(whole.held, 100_000)
        self.assertGreater(whole.held, 100_000 - (4096 + HELD_COST), "full")
        self.assertEqual(proxies[-1].held.held, 0, "the last proxy found the process's bound spent")
        for proxy in proxies:
            proxy.stopProtocol()
        self.assertEqual(whole.held, 0)


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = MemoryReactorClock()
        # The upstream: a bound socket nobody reads (no packet leaves the host).
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        self.addCleanup(sink.close)
        self.sink = sink
        self.opened: list[socket.socket] = []
        real = udp_module.session_socket

        def recording(upstream: tuple[str, int]) -> socket.socket:
            sock = real(upstream)
            self.opened.append(sock)
            return sock

        self.patch(udp_module, "session_socket", recording)
        self.proxy = UDPProxy(
            sink.getsockname(), ProxyFaults(seed=1), self.clock, max_sessions=2, idle_timeout=10
        )
        self.proxy.makeConnection(FakeDatagramTransport())
        self.addCleanup(self.proxy.stopProtocol)

    def test_one_upstream_socket_per_source_bounded_in_number(self) -> None:
        for source in range(3):
            self.proxy.datagramReceived(b"q", ("10.0.0.1", 41000 + source))
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41002))
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.1", 41001), ("10.0.0.1", 41002)])
        self.assertEqual(len(self.opened), 3, "one socket each")
        self.assertEqual(self.opened[0].fileno(), -1, "the oldest was closed to make room")
        self.assertEqual(len(self.clock.readers), 2, "the open sessions' sockets are read")

    def test_answers_go_to_the_whole_address_a_scope_id_too(self) -> None:
        """
        An IPv6 link-local client is reached through the interface its
        datagram came in on: the upstream's answers go to the whole address
        the port gave (its scope id), while the session is the client's
        (host, port).
        """
        client = ("fe80::1", 41000, 0, 3)
        self.proxy.datagramReceived(b"q", client)
        [session] = self.proxy.sessions.values()
        self.assertEqual(session.client, ("fe80::1", 41000))
        self.sink.sendto(b"answer", session.local)  # the upstream answers
        select.select([session.socket], [], [], DEADLINE)
        session.read_ready()
        written = self.proxy.transport.written  # type: ignore[union-attr]
        self.assertEqual(written, [(b"answer", client)])

    def test_session_sockets_count_against_the_descriptor_ceiling(self) -> None:
        self.patch(DESCRIPTORS, "open", 0)
        self.patch(DESCRIPTORS, "ceiling", 1)
        self.patch(DESCRIPTORS, "limit", lambda: 1)
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41000))
        self.assertEqual(DESCRIPTORS.open, 1, "the session's socket is held")
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41001))
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.1", 41001)], "the oldest went to make room")
        self.assertEqual(DESCRIPTORS.open, 1)
        DESCRIPTORS.open += 1  # a TCP client takes the last one
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41002))
        self.assertEqual(list(self.proxy.sessions), [], "no socket for a new source: dropped")
        self.proxy.stopProtocol()
        self.assertEqual(DESCRIPTORS.open, 1, "every session's descriptor given back")

    def test_no_socket_for_a_source_drops_its_datagram_quietly(self) -> None:
        def no_socket(upstream: Any) -> Any:
            raise OSError(24, "Too many open files")

        self.patch(udp_module, "session_socket", no_socket)
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41000))
        self.assertEqual(self.proxy.sessions, {})
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_quiet_sessions_are_closed(self) -> None:
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41000))
        self.clock.advance(5)
        self.proxy.datagramReceived(b"q", ("10.0.0.2", 41000))
        self.clock.advance(6)
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.2", 41000)])
        self.clock.advance(10)
        self.assertEqual(self.proxy.sessions, {})
        self.proxy.stopProtocol()
        self.assertFalse(self.clock.getDelayedCalls())
        self.assertEqual(self.clock.readers, set(), "no socket is watched any more")

    def test_new_sessions_are_rated_per_source_address_and_in_total(self) -> None:
        """A loop through another process (each hop a new port) dies within a burst; so does a spray."""
        self.proxy.max_sessions = 100_000
        burst = int(udp_module.SESSION_BURST)
        for port in range(1024, 1024 + burst + 10):
            self.proxy.datagramReceived(b"q", ("10.0.0.1", port))
        self.assertEqual(len(self.opened), burst, "one address: a burst of sessions, then none")
        self.clock.advance(1.0)
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 40009))
        self.assertEqual(len(self.opened), burst + 1, "the bucket refills")
        total = int(udp_module.SESSIONS_BURST)
        for host in range(total + 10):
            self.proxy.datagramReceived(b"q", (f"10.1.{host // 250}.{host % 250}", 5000))
        self.assertLess(len(self.opened), burst + 1 + total + 10, "everyone's bucket ran out")
        for session in list(self.proxy.sessions.values()):
            self.proxy.end(session)

    def test_a_datagram_from_our_own_session_socket_is_dropped(self) -> None:
        """A proxy pointed at itself, or at a proxy of this process pointed back: the first hop ends it."""
        self.proxy.datagramReceived(b"q", ("10.0.0.1", 41000))
        [session] = self.proxy.sessions.values()
        self.proxy.datagramReceived(b"q", session.local)
        host, port = session.local
        self.proxy.datagramReceived(b"q", ("::ffff:" + host, port))
        self.assertEqual(list(self.proxy.sessions), [("10.0.0.1", 41000)])
        self.assertEqual(len(self.opened), 1)
        self.proxy.end(session)
        self.proxy.datagramReceived(b"q", session.local)
        self.assertEqual(len(self.opened), 2, "a closed session's address is anyone's again")


class SourceGuardTests(SynchronousTestCase):
    """
    As the UDP greeter answers no system service's port nor its own, the
    proxy opens no session for them: a client on the echo port (7) behind
    an echo upstream bounced each datagram for ever, and one forged from
    the proxy's own address came round through it for good.
    """

    def setUp(self) -> None:
        from twisted.internet import udp

        self.proxy = UDPProxy(("127.0.0.1", 9), ProxyFaults(seed=1), MemoryReactorClock())
        self.port = udp.Port(0, self.proxy, interface="127.0.0.1", reactor=self.proxy.clock)
        self.port.startListening()
        self.addCleanup(self.port.connectionLost)

    def test_no_session_for_a_privileged_port_nor_its_own(self) -> None:
        own = self.port.getHost().port
        for source in (
            ("127.0.0.1", 7),
            ("127.0.0.1", 0),
            ("127.0.0.1", 1023),
            ("127.0.0.1", own),
            ("10.1.1.1", own),
        ):
            self.proxy.datagramReceived(b"q", source)
        self.assertEqual(self.proxy.sessions, {})
        self.proxy.datagramReceived(b"q", ("127.0.0.1", 1024))
        self.assertEqual(list(self.proxy.sessions), [("127.0.0.1", 1024)])

    def test_no_session_for_a_source_that_is_no_host(self) -> None:
        """Forged from a broadcast, multicast or unspecified address: answers would go to many hosts."""
        for host in ("255.255.255.255", "224.0.0.1", "0.0.0.0", "ff02::1", "::ffff:239.1.1.1"):
            self.proxy.datagramReceived(b"q", (host, 40000))
        self.assertEqual(self.proxy.sessions, {})
        self.proxy.datagramReceived(b"q", ("127.0.0.1", 40000))
        self.assertEqual(list(self.proxy.sessions), [("127.0.0.1", 40000)])

    def test_no_session_for_another_proxys_port_while_it_listens(self) -> None:
        """
        A second proxy of the process: answers sent to its port by the
        first (or forged from it) would go round the two for good.
        """
        from twisted.internet import udp

        other = UDPProxy(("127.0.0.1", 9), ProxyFaults(seed=1), MemoryReactorClock())
        port = udp.Port(0, other, interface="127.0.0.1", reactor=other.clock)
        port.startListening()
        theirs = port.getHost().port
        self.proxy.datagramReceived(b"q", ("127.0.0.1", theirs))
        self.assertEqual(self.proxy.sessions, {})
        port.connectionLost()
        self.proxy.datagramReceived(b"q", ("127.0.0.1", theirs))
        self.assertEqual(list(self.proxy.sessions), [("127.0.0.1", theirs)], "a port no proxy holds now")

    def test_a_session_socket_is_never_connected_to_itself(self) -> None:
        """The kernel gave a session the upstream's own port (the upstream down): made again."""
        from echoapp._proxy import sockets

        made: list[Any] = []
        real = socket.socket

        class FirstIsItself(real):  # type: ignore[misc, valid-type]
            def getsockname(self) -> Any:
                return ("127.0.0.1", 40999) if len(made) == 1 else super().getsockname()

        def making(*args: Any) -> Any:
            sock = FirstIsItself(*args)
            made.append(sock)
            return sock

        self.patch(sockets.socket, "socket", making)
        sock = sockets.session_socket(("127.0.0.1", 40999))
        self.addCleanup(sock.close)
        self.assertEqual(len(made), 2)
        self.assertEqual(made[0].fileno(), -1, "the one connected to itself is closed")
        self.assertIs(sock, made[1])


class StoppedPortTests(SynchronousTestCase):
    def stopped_port(self) -> tuple[UDPProxy, int]:
        """A proxy on Twisted's UDP port, started and stopped (its socket closed), and its old number."""
        from twisted.internet import udp

        proxy = UDPProxy(("127.0.0.1", 9), ProxyFaults(seed=1), MemoryReactorClock())
        port = udp.Port(0, proxy, interface="127.0.0.1", reactor=proxy.clock)
        port.startListening()
        number = port.fileno()
        port.connectionLost()
        return proxy, number

    def heir(self, number: int) -> socket.socket:
        """The socket that got descriptor C{number} next."""
        heir = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(heir.close)
        heir.bind(("127.0.0.1", 0))
        if heir.fileno() != number:
            self.skipTest("the descriptor number went elsewhere")
        return heir

    def assert_the_heir_keeps_its_datagram(self, number: int, wake_up: Any) -> None:
        """A socket that gets descriptor C{number} next has a datagram queued; C{wake_up} leaves it there."""
        heir = self.heir(number)
        heir.sendto(b"for the heir", heir.getsockname())
        select.select([heir], [], [], DEADLINE)
        wake_up()
        heir.settimeout(DEADLINE)
        self.assertEqual(heir.recv(100), b"for the heir")

    def test_a_stopped_port_reads_nothing_not_even_its_old_descriptor_number(self) -> None:
        """
        The listening port stopped (its socket closed): a wake-up still
        queued reads nothing, where reading on by the old number would take
        the datagrams of whatever socket got that number next.
        """
        proxy, number = self.stopped_port()
        self.assert_the_heir_keeps_its_datagram(number, proxy.read_ready)
        self.assertEqual(proxy.sessions, {})

    def test_a_stopped_port_sends_nothing_by_its_old_descriptor_number(self) -> None:
        """A late answer for a client after the port stopped never leaves by another socket's number."""
        proxy, number = self.stopped_port()
        self.heir(number)
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(client.close)
        client.bind(("127.0.0.1", 0))
        try:
            proxy.sendto(b"late answer", client.getsockname())
        except Exception:
            pass  # the stopped port's own transport refuses it: what matters is that nothing left
        self.assertEqual(select.select([client], [], [], 0.2)[0], [], "sent through the heir's socket")

    def test_a_closed_session_reads_nothing_not_even_its_old_descriptor_number(self) -> None:
        clock = MemoryReactorClock()
        proxy = UDPProxy(("127.0.0.1", 9), ProxyFaults(seed=1), clock)
        proxy.makeConnection(FakeDatagramTransport())
        self.addCleanup(proxy.stopProtocol)
        proxy.datagramReceived(b"q", ("127.0.0.1", 40000))
        [session] = proxy.sessions.values()
        number = session.socket.fileno()
        proxy.end(session)
        self.assert_the_heir_keeps_its_datagram(number, session.read_ready)


class RefusedTests(SynchronousTestCase):
    def test_a_refusal_met_when_sending_opens_a_fresh_session_for_the_datagram(self) -> None:
        """ICMP port unreachable for an earlier datagram, reported by the next send: that one is not lost."""
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.bind(("127.0.0.1", 0))
        upstream = closed.getsockname()
        closed.close()  # nothing listens there now
        proxy = UDPProxy(upstream, ProxyFaults(seed=1), MemoryReactorClock())
        proxy.makeConnection(FakeDatagramTransport())
        self.addCleanup(proxy.stopProtocol)
        proxy.datagramReceived(b"one", ("10.0.0.1", 41000))
        [first] = proxy.sessions.values()
        select.select([first.socket], [], [], DEADLINE)  # the ICMP error has come back
        proxy.datagramReceived(b"two", ("10.0.0.1", 41000))
        [second] = proxy.sessions.values()
        self.assertIsNot(second, first)
        self.assertEqual(first.socket.fileno(), -1, "the refused session is closed")


class LoopTests(SynchronousTestCase):
    def test_a_proxy_to_its_own_listen_address_is_refused(self) -> None:
        for listen, upstream in [
            ("127.0.0.1:5300", "127.0.0.1:5300"),
            ("0.0.0.0:5300", "127.0.0.1:5300"),
            (":5300", "127.0.0.1:5300"),
            ("[::]:5300", "[::1]:5300"),
        ]:
            with self.assertRaises(Invalid, msg=listen) as caught:
                NamedUDPProxy(ProxySpec("u", listen, upstream, protocol="udp"), ProxyFaults(), TCPLimits())
            self.assertIn("is its own listen address", str(caught.exception))
        proxy = NamedUDPProxy(
            ProxySpec("u", "127.0.0.1:5300", "127.0.0.1:5301", protocol="udp"), ProxyFaults(), TCPLimits()
        )
        with self.assertRaises(Invalid):
            proxy.set_upstream("127.0.0.1:5300")
        self.assertEqual(proxy.spec.upstream, "127.0.0.1:5301")

    def test_loops_to_itself(self) -> None:
        self.assertTrue(loops_to_itself("127.0.0.1", 53, ("127.0.0.1", 53)))
        self.assertTrue(loops_to_itself("", 53, ("127.0.0.2", 53)), "every interface holds all of 127/8")
        self.assertTrue(loops_to_itself("::", 53, ("127.0.0.1", 53)), "dual-stack")
        self.assertTrue(loops_to_itself("::ffff:127.0.0.1", 53, ("127.0.0.1", 53)))
        self.assertFalse(loops_to_itself("127.0.0.1", 53, ("127.0.0.1", 54)))
        self.assertFalse(loops_to_itself("127.0.0.1", 53, ("127.0.0.2", 53)))
        self.assertFalse(loops_to_itself("0.0.0.0", 53, ("::1", 53)), "an IPv4 port is not reached over IPv6")
        self.assertFalse(loops_to_itself("", 53, ("192.0.2.1", 53)), "not this host's (TEST-NET-1)")
        self.assertFalse(loops_to_itself("127.0.0.1", 0, ("127.0.0.1", 0)))


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


class Echo(DatagramProtocol):
    """The upstream: each datagram straight back, whatever its size."""

    noisy = False

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.transport.write(datagram, addr)


def exchange(socks: list[socket.socket], port: int, datagram: bytes, wait: float) -> list[bytes | None]:
    """From each of C{socks} (bound client sockets), one datagram to the proxy, and its answer or L{None}."""
    answers: list[bytes | None] = []
    for sock in socks:
        sock.settimeout(wait)
        sock.sendto(datagram, ("127.0.0.1", port))
        try:
            answers.append(sock.recvfrom(70000)[0])
        except TimeoutError:
            answers.append(None)
    return answers


class LiveUDPProxyTests(TestCase):
    """The proxy on the running reactor (both: the paths differ), between loopback sockets."""

    def echo(self, port: int = 0) -> Any:
        from twisted.internet import reactor

        listening = reactor.listenUDP(port, Echo(), interface="127.0.0.1", maxPacketSize=65535)
        return listening

    def proxy(self, upstream: tuple[str, int]) -> tuple[UDPProxy, int]:
        protocol = UDPProxy(upstream, ProxyFaults())
        service = UDPListenService(UDPListen.parse(UDP_LOOPBACK), protocol)
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        return protocol, int(service.port.getHost().port)

    def clients(self, count: int) -> list[socket.socket]:
        socks = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            self.addCleanup(sock.close)
            socks.append(sock)
        return socks

    async def test_a_restarted_upstream_costs_each_client_at_most_one_datagram(self) -> None:
        """As nginx's stream proxy: an upstream error ends the session, the next datagram opens a new one."""
        echo = self.echo()
        upstream_port = echo.getHost().port
        proxy, port = self.proxy(("127.0.0.1", upstream_port))
        socks = self.clients(5)
        self.assertEqual(await deferToThread(exchange, socks, port, b"up", DEADLINE), [b"up"] * 5)
        await echo.stopListening()
        # While it is down: ICMP port unreachable for each session.
        self.assertEqual(await deferToThread(exchange, socks, port, b"down", 0.3), [None] * 5)
        await wait_until(lambda: not proxy.sessions, "the refused sessions end")
        echo = self.echo(upstream_port)
        self.addCleanup(echo.stopListening)
        for attempt in range(2):
            answers = await deferToThread(exchange, socks, port, b"again", 1.0 if attempt == 0 else DEADLINE)
            if attempt == 1:
                self.assertEqual(answers, [b"again"] * 5, "the next-but-one datagram is answered")
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_the_largest_datagram_comes_back_whole(self) -> None:
        echo = self.echo()
        self.addCleanup(echo.stopListening)
        _, port = self.proxy(("127.0.0.1", echo.getHost().port))
        [sock] = self.clients(1)
        big = bytes(range(256)) * 255 + b"x" * 227  # 65,507 bytes: the largest UDP payload over IPv4
        self.assertEqual(len(big), 65507)
        self.assertEqual(await deferToThread(exchange, [sock], port, big, DEADLINE), [big])

    async def test_sources_leave_the_log_alone(self) -> None:
        echo = self.echo()
        self.addCleanup(echo.stopListening)
        proxy, port = self.proxy(("127.0.0.1", echo.getHost().port))
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        socks = self.clients(200)
        answers = await deferToThread(exchange, socks, port, b"hi", DEADLINE)
        self.assertEqual(answers, [b"hi"] * 200)
        proxy.stopProtocol()  # every session closed: nor a line for that
        proxy.startProtocol()
        self.assertEqual([formatEvent(event) for event in events], [])

    async def test_a_proxy_pointed_at_itself_forwards_one_hop_only(self) -> None:
        proxy, port = self.proxy(("127.0.0.1", 9))
        proxy.upstream = ("127.0.0.1", port)  # as an upstream that moved onto the proxy's port would
        [sock] = self.clients(1)
        await deferToThread(exchange, [sock], port, b"loop", 0.5)
        self.assertEqual(list(proxy.sessions), [sock.getsockname()], "the client's session, and no other")

    async def test_two_proxies_pointed_at_each_other_stop_at_the_first_hop_back(self) -> None:
        await self.loop_of_two("127.0.0.1")

    async def test_a_loop_through_ipv4_mapped_upstreams_stops_at_the_first_hop_back(self) -> None:
        """The same loop with upstreams written as IPv4-mapped IPv6 addresses: the same hosts."""
        await self.loop_of_two("::ffff:127.0.0.1")

    async def loop_of_two(self, host: str) -> None:
        first, first_port = self.proxy((host, 9))
        second, second_port = self.proxy((host, first_port))
        first.upstream = (host, second_port)
        [sock] = self.clients(1)
        await deferToThread(exchange, [sock], first_port, b"loop", 0.5)
        self.assertEqual(len(first.sessions), 1, "the client's")
        self.assertEqual(len(second.sessions), 1, "the first proxy's session")

    async def test_proxies_chained_in_one_process_forward(self) -> None:
        """Not a loop: a proxy in front of another proxy of the same process (a chain of faults)."""
        echo = self.echo()
        self.addCleanup(echo.stopListening)
        _, inner = self.proxy(("127.0.0.1", echo.getHost().port))
        _, outer = self.proxy(("127.0.0.1", inner))
        [sock] = self.clients(1)
        self.assertEqual(await deferToThread(exchange, [sock], outer, b"chain", DEADLINE), [b"chain"])
