"""
The PROXY protocol behind a balancer: the client in the header is the peer
for every limit, LOCAL checks count against no one, bad or slow headers and
untrusted senders are closed and counted.  Over real loopback, so both
reactors' paths (Twisted's TCP and the native transports) are exercised.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._limits.connections import Connections
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._limits.guard import Refusal
from echoapp._protocols.echo import EchoFactory
from echoapp._tap import echo, tcp
from echoapp._transports import haproxy as proxy
from echoapp._transports.haproxy import parse_networks
from echoapp.config import TCPLimits
from tests.support import DEADLINE, address, free_port, in_checkout, listeners, make_certificates, start

LISTEN = "haproxy:tcp:0:interface=127.0.0.1"
V2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: str, port: int = 5555) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 9999\r\n".encode()


def v2(source: str, port: int = 5555) -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1") + struct.pack("!HH", port, 9999)
    return V2 + bytes([0x21, 0x11]) + struct.pack("!H", len(addresses)) + addresses


V2_LOCAL = V2 + bytes([0x20, 0x00]) + struct.pack("!H", 0)


def converse(port: int, data: bytes, half_close: bool = False) -> bytes:
    """Send C{data}, and read until the server closes or a line arrives."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        try:
            while chunk := sock.recv(4096):
                received += chunk
                if not half_close and received.endswith(b"\n"):
                    break
        except ConnectionResetError:
            pass
        return received


class BehindABalancerTests(TestCase):
    def serve(self, service: Any = services.tcp_greeter, **limits: Any) -> tuple[int, Any]:
        proxy_from = limits.pop("proxy_from", ())
        tree = service([LISTEN], limits=TCPLimits(**limits), proxy_from=proxy_from)
        [port] = start(self, tree)
        return port.getHost().port, tree

    async def talk(self, port: int, data: bytes, half_close: bool = False) -> bytes:
        return await deferToThread(converse, port, data, half_close)

    async def test_v1_and_v2_peers_are_the_clients(self) -> None:
        port, tree = self.serve(max_per_peer=1)
        connections = listeners(tree)[0].factory.connections
        for count, header in enumerate((v1("10.1.1.1"), v2("10.2.2.2")), 1):
            # One at a time: until its header is read, a connection counts
            # against the balancer's own address (here the limit of 1).
            sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
            self.addCleanup(sock.close)
            sock.sendall(header)
            for _ in range(int(DEADLINE / 0.02)):
                if len(connections.per_peer) == count and "127.0.0.1" not in connections.per_peer:
                    break
                await deferLater(reactor, 0.02)
        self.assertEqual(connections.per_peer, {"10.1.1.1": 1, "10.2.2.2": 1}, "per client, not per balancer")
        self.assertEqual(
            await self.talk(port, v1("10.1.1.1")), b"ERROR: too many connections from your address\r\n"
        )
        self.assertEqual(await self.talk(port, v2("10.3.3.3")), b"Welcome!\r\n")

    async def test_silent_connections_count_against_their_real_address(self) -> None:
        port, tree = self.serve(max_per_peer=5, proxy_silent_after=0.2)
        connections = listeners(tree)[0].factory.connections
        silent = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(5)]
        for sock in silent:
            self.addCleanup(sock.close)
        for _ in range(int(DEADLINE / 0.05)):
            if connections.per_peer.get("127.0.0.1") == 5:
                break
            await deferLater(reactor, 0.05)

        def flood() -> list[bytes]:
            socks = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(15)]
            try:
                return [sock.recv(100) for sock in socks]
            finally:
                for sock in socks:
                    sock.close()

        answers = await deferToThread(flood)
        self.assertEqual(answers, [b"ERROR: too many connections from your address\r\n"] * 15)
        self.assertEqual(listeners(tree)[0].factory.stats.refused["per-peer"], 15)

    async def test_what_follows_the_header_is_served(self) -> None:
        port, _ = self.serve()
        answer = await self.talk(port, v2("10.1.1.1") + b"hi\nexit\n", half_close=True)
        self.assertEqual(answer, b"Welcome!\r\nHello, hi!\nGoodbye!\n")

    async def test_echo_too(self) -> None:
        port, _ = self.serve(services.echo)
        self.assertEqual(await self.talk(port, v1("10.1.1.1") + b"bytes", half_close=True), b"bytes")

    async def test_local_checks_count_against_no_peer(self) -> None:
        port, tree = self.serve(max_per_peer=1)
        for _ in range(3):
            self.assertEqual(await self.talk(port, V2_LOCAL), b"Welcome!\r\n")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["per-peer"], 0)

    async def test_malformed_and_missing_headers_are_closed_and_counted(self) -> None:
        port, tree = self.serve()
        self.assertEqual(await self.talk(port, b"GET / HTTP/1.0\r\n\r\n"), b"")
        self.assertEqual(await self.talk(port, b"PROXY TCP4 nonsense\r\n"), b"")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["proxy"], 2)

    async def test_a_slow_header_is_cut_off(self) -> None:
        port, tree = self.serve(proxy_header_timeout=0.3)
        self.assertEqual(await self.talk(port, b"PROXY TCP4 10.1"), b"")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["proxy"], 1)

    async def test_only_trusted_senders(self) -> None:
        port, tree = self.serve(proxy_from=parse_networks(["10.0.0.0/8"]))
        self.assertEqual(await self.talk(port, v1("10.1.1.1")), b"", "loopback is not the balancer")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["proxy"], 1)
        port, _ = self.serve(proxy_from=parse_networks(["127.0.0.0/8"]))
        self.assertEqual(await self.talk(port, v1("10.1.1.1")), b"Welcome!\r\n")


class UNIXBehindABalancerTests(TestCase):
    async def test_haproxy_unix(self) -> None:
        """Any stream endpoint can be wrapped: a UNIX socket a local balancer connects to."""
        import os
        import tempfile

        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "e.sock")
        tree = services.tcp_greeter([f"haproxy:unix:{path}"], limits=TCPLimits(max_per_peer=1))
        start(self, tree)

        def talk(header: bytes) -> bytes:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(DEADLINE)
                sock.connect(path)
                sock.sendall(header + b"unix\nexit\n")
                sock.shutdown(socket.SHUT_WR)
                received = b""
                while chunk := sock.recv(4096):
                    received += chunk
                return received

        self.assertEqual(await deferToThread(talk, v1("10.1.1.1")), b"Welcome!\r\nHello, unix!\nGoodbye!\n")
        self.assertEqual(listeners(tree)[0].factory.stats.accepted, 1)


class DescriptorTests(SynchronousTestCase):
    def test_counted_once_whatever_the_service_answers(self) -> None:
        from twisted.internet.address import IPv4Address
        from twisted.internet.protocol import Factory
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from echoapp._limits.descriptors import DESCRIPTORS

        class Nobody(Factory):
            def buildProtocol(self, addr: Any) -> None:
                return None

        before = DESCRIPTORS.open
        reader = proxy.HAProxyFactory(Nobody(), clock=Clock()).buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 1)
        )
        assert reader is not None
        transport = StringTransport()
        reader.makeConnection(transport)
        self.assertEqual(DESCRIPTORS.open, before + 1, "held while the header is read")
        reader.dataReceived(v1("10.1.1.1"))
        self.assertTrue(transport.disconnecting, "no protocol: closed")
        reader.connectionLost(None)
        self.assertEqual(DESCRIPTORS.open, before)


TRUSTED = (ipaddress.ip_network("127.0.0.0/8"),)


class BeforeTheHeaderTests(SynchronousTestCase):
    """
    A connection that has not sent its header yet is one of the service's
    connections, by its real address: silent connections from one address
    once took every descriptor of the process.
    """

    def reader(self, factory: proxy.HAProxyFactory, host: str = "127.0.0.1") -> tuple[Any, StringTransport]:
        protocol = factory.buildProtocol(address(host))
        assert protocol is not None
        transport = StringTransport(peerAddress=address(host))
        protocol.makeConnection(transport)
        return protocol, transport

    def proxied(self, trusted: tuple[Any, ...] = (), **limits: Any) -> proxy.HAProxyFactory:
        self.clock = Clock()
        wrapped = EchoFactory(Connections(TCPLimits(**limits)), self.clock)
        return proxy.HAProxyFactory(wrapped, trusted, clock=self.clock)

    def test_untrusted_senders_count_against_their_address_once_silent(self) -> None:
        """
        With no --proxy-from every sender is believed, and a silent one is
        held to its own address's limit once it has been silent for
        SILENT_AFTER, as from a trusted balancer.
        """
        factory = self.proxied(max_per_peer=2)
        for _ in range(2):
            self.assertNotIsInstance(self.reader(factory)[0], Refusal)
        self.clock.advance(TCPLimits().proxy_silent_after)
        _, transport = self.reader(factory)
        self.assertEqual(transport.value(), b"ERROR: too many connections from your address\r\n")
        self.assertNotIsInstance(self.reader(factory, "127.0.0.2")[0], Refusal)  # other addresses are served

    def test_silent_connections_count_against_their_real_address(self) -> None:
        """From a trusted balancer, once they have been silent for SILENT_AFTER."""
        factory = self.proxied(TRUSTED, max_per_peer=2)
        silent = [self.reader(factory)[0] for _ in range(2)]
        self.clock.advance(TCPLimits().proxy_silent_after)
        refused, transport = self.reader(factory)
        self.assertIsInstance(refused, Refusal)
        self.assertEqual(transport.value(), b"ERROR: too many connections from your address\r\n")
        self.assertNotIsInstance(self.reader(factory, "127.0.0.2")[0], Refusal)  # other addresses are served
        silent[0].dataReceived(v1("10.1.1.1"))
        self.assertEqual(factory.connections.per_peer, {"127.0.0.1": 1, "10.1.1.1": 1})
        self.assertNotIsInstance(self.reader(factory)[0], Refusal)  # the header freed the slot

    def test_a_balancers_burst_is_not_refused_by_its_address(self) -> None:
        """Trusted (--proxy-from) or, with no --proxy-from, believed as every sender is."""
        for trusted in (TRUSTED, ()):
            factory = self.proxied(trusted, max_per_peer=2)
            burst = [self.reader(factory) for _ in range(10)]  # accepted together, headers on the way
            self.assertEqual([type(reader) for reader, _ in burst], [proxy.HeaderReader] * 10, trusted)
            for n, (reader, _) in enumerate(burst):
                reader.dataReceived(v1(f"10.1.1.{n}"))
            self.assertEqual(len(factory.connections.per_peer), 10, "each counted as its client")

    def test_the_connection_limit(self) -> None:
        factory = self.proxied(max_connections=3, max_per_peer=3)
        for n in range(3):
            self.reader(factory, f"127.0.0.{n + 1}")
        _, transport = self.reader(factory, "127.0.0.9")
        self.assertEqual(transport.value(), b"ERROR: too many connections\r\n")

    def test_the_descriptor_ceiling(self) -> None:
        factory = self.proxied()
        before = DESCRIPTORS.open
        reader, _ = self.reader(factory)
        self.assertEqual(DESCRIPTORS.open, before + 1)
        self.patch(DESCRIPTORS, "limit", lambda: DESCRIPTORS.open)
        _, transport = self.reader(factory, "127.0.0.2")
        self.assertEqual(transport.value(), b"ERROR: server busy\r\n")
        reader.connectionLost(None)
        self.assertEqual(factory.connections.live, set())

    def test_a_drain_closes_connections_without_a_header(self) -> None:
        factory = self.proxied()
        reader, transport = self.reader(factory)
        done = factory.connections.drain()
        self.assertTrue(transport.disconnected)
        self.assertNoResult(done)  # the connection is gone when the transport says so
        reader.connectionLost(None)
        self.successResultOf(done)


class OptionTests(SynchronousTestCase):
    def test_proxy_from(self) -> None:
        options = tcp.Options()
        options.parseOptions(["--listen", LISTEN, "--proxy-from", "10.0.0.0/8", "--proxy-from", "192.0.2.7"])
        [listen] = options["endpoints"]
        self.assertEqual([str(n) for n in listen.proxy_from], ["10.0.0.0/8", "192.0.2.7/32"])
        self.assertTrue(listen.proxy)

    def test_proxy_from_needs_a_haproxy_listener(self) -> None:
        options = echo.Options()
        error = self.assertRaises(usage.UsageError, options.parseOptions, ["--proxy-from", "10.0.0.0/8"])
        self.assertEqual(str(error), "--proxy-from: applies to haproxy: listeners, and there is none")

    def test_a_bad_network(self) -> None:
        error = self.assertRaises(
            usage.UsageError, tcp.Options().parseOptions, ["--listen", LISTEN, "--proxy-from", "ten"]
        )
        self.assertEqual(str(error), "--proxy-from: 'ten' is not an address or network (e.g. 10.0.0.0/8)")


def v2_unspec() -> bytes:
    """A v2 PROXY (not LOCAL) header whose family is AF_UNSPEC: no address."""
    return V2 + bytes([0x21, 0x00]) + struct.pack("!H", 0)


class HeaderRulesTests(SynchronousTestCase):
    """What a header says, as the spec reads it; sources that are not addresses are malformed."""

    def test_v1_sources_must_be_addresses(self) -> None:
        for header in (
            b"PROXY TCP4 balancer 5.6.7.8 1 2\r\n",  # the key of the balancer's own checks
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 \x1b[31mred 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # not of its family
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        ):
            self.assertRaises(ValueError, proxy.read_header, header)
        complete, source, rest = proxy.read_header(b"PROXY TCP6 2001:db8::1 ::1 65535 2\r\nhi")
        self.assertEqual(
            (complete, getattr(source, "host", None), getattr(source, "port", None), rest),
            (True, "2001:db8::1", 65535, b"hi"),
        )

    def test_unknown_and_unspec_name_no_client(self) -> None:
        self.assertEqual(proxy.read_header(b"PROXY UNKNOWN\r\nhi"), (True, None, b"hi"))
        self.assertEqual(proxy.read_header(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n"), (True, None, b""))
        self.assertEqual(proxy.read_header(v2_unspec() + b"x"), (True, None, b"x"))
        self.assertEqual(proxy.read_header(V2_LOCAL), (True, proxy.LOCAL, b""))
        self.assertEqual(proxy.read_header(b"PROXY UNKNOWN\r"), (False, None, b""))


class SpecShapesTests(TestCase):
    def serve(self, **limits: Any) -> tuple[int, Any]:
        tree = services.tcp_greeter([LISTEN], limits=TCPLimits(**limits), log_connections=True)
        [port] = start(self, tree)
        return port.getHost().port, tree

    async def test_unknown_and_unspec_count_against_the_real_peer(self) -> None:
        port, tree = self.serve(max_per_peer=2)

        def hold_two_then_one_more() -> tuple[list[bytes], bytes]:
            held = [socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) for _ in range(2)]
            try:
                welcomes = []
                for sock, header in zip(held, (b"PROXY UNKNOWN\r\n", v2_unspec()), strict=True):
                    sock.sendall(header)
                    welcomes.append(sock.recv(100))
                return welcomes, converse(port, b"PROXY UNKNOWN\r\n")
            finally:
                for sock in held:
                    sock.close()

        welcomes, third = await deferToThread(hold_two_then_one_more)
        self.assertEqual(welcomes, [b"Welcome!\r\n"] * 2, "served, the short UNKNOWN form too")
        self.assertEqual(
            third,
            b"ERROR: too many connections from your address\r\n",
            "counted against the connection's own address, not against no one",
        )
        self.assertEqual(listeners(tree)[0].factory.stats.refused["per-peer"], 1)

    async def test_a_balancer_keyword_does_not_bypass_the_per_peer_limit(self) -> None:
        port, tree = self.serve(max_per_peer=5)
        header = b"PROXY TCP4 balancer 5.6.7.8 1 2\r\n"
        answers = [await deferToThread(converse, port, header) for _ in range(8)]
        self.assertEqual(answers, [b""] * 8, "malformed: closed")
        self.assertEqual(listeners(tree)[0].factory.stats.refused["proxy"], 8)

    async def test_escape_bytes_never_reach_the_log(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        port, _ = self.serve()
        await deferToThread(converse, port, b"PROXY TCP4 \x1b]0;owned\x07 5.6.7.8 1 2\r\n")
        self.assertEqual(await deferToThread(converse, port, v1("10.1.1.1")), b"Welcome!\r\n")
        self.assertFalse([e for e in events if "\x1b" in formatEvent(e)])


def tls_after_header(port: int, ca: str, header: bytes) -> bytes:
    """The PROXY header in clear, then TLS, as HAProxy's C{ssl send-proxy-v2} and nginx send them."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), DEADLINE) as raw:
        raw.sendall(header)
        with context.wrap_socket(raw) as sock:
            sock.sendall(b"tls\n")
            received = b""
            while b"Hello" not in received:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk
            return received


class HeaderBeforeTLSTests(TestCase):
    def tls_listen(self) -> tuple[str, dict[str, str]]:
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(tempfile.mkdtemp())
        keys = f"privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        listen = f"haproxy:ssl:0:interface=127.0.0.1:{keys}"
        return listen, paths

    async def test_the_header_comes_before_the_handshake(self) -> None:
        listen, paths = self.tls_listen()
        tree = services.tcp_greeter([listen], limits=TCPLimits(max_per_peer=1))
        [port] = start(self, tree)
        received = await deferToThread(tls_after_header, port.getHost().port, paths["ca.pem"], v2("10.9.9.9"))
        self.assertEqual(received, b"Welcome!\r\nHello, tls!\n")
        self.assertEqual(listeners(tree)[0].factory.stats.accepted, 1)

    async def test_behind_the_real_haproxy(self) -> None:
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if haproxy is None:
            self.skipTest("haproxy is not installed here (.ci/run installs it with apt-get)")
        listen, _ = self.tls_listen()
        tree = services.tcp_greeter([listen], log_connections=True)
        [port] = start(self, tree)
        frontend = free_port()
        directory = tempfile.mkdtemp(prefix="echoapp-haproxy-ssl-")
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "haproxy.cfg")
        with open(config, "w") as file:
            file.write(
                "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n"
                f"frontend f\n  bind 127.0.0.1:{frontend}\n  default_backend b\n"
                f"backend b\n  server e 127.0.0.1:{port.getHost().port} ssl verify none send-proxy-v2\n"
            )
        proxy_process = subprocess.Popen(
            [haproxy, "-db", "-f", config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(proxy_process.wait, DEADLINE)
        self.addCleanup(proxy_process.terminate)

        def through_haproxy() -> bytes:
            end = time.monotonic() + DEADLINE
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", frontend), DEADLINE) as sock:
                        received = b""
                        sock.sendall(b"haproxy\n")
                        while b"Hello" not in received and (chunk := sock.recv(4096)):
                            received += chunk
                        if received or time.monotonic() > end:
                            return received
                except ConnectionRefusedError:
                    if time.monotonic() > end:
                        raise
                time.sleep(0.1)

        self.assertEqual(await deferToThread(through_haproxy), b"Welcome!\r\nHello, haproxy!\n")
        self.assertEqual(listeners(tree)[0].factory.stats.accepted, 1)


def established_to(port: int) -> int:
    """
    Connections to local TCP port C{port} that the kernel has established,
    accepted or still waiting in the listen queue: C{/proc/net/tcp}.
    """
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[1].endswith(f":{port:04X}") and fields[3] == "01":
                count += 1
    return count


class BurstBehindHAProxyTests(TestCase):
    """
    The shipped HAProxy front (ports changed, health checks left out: these
    instances have no metrics port) before two instances with no
    --proxy-from, every sender believed.  Its clients arrive as a burst of
    connections from HAProxy's one address, each header on its way.
    """

    def front(self, ports: list[int]) -> int:
        haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
        if haproxy is None:
            self.skipTest("haproxy is not installed here (.ci/run installs it with apt-get)")
        if not os.path.exists("/proc/net/tcp"):
            self.skipTest("the burst is timed by the kernel's own table, /proc/net/tcp (Linux)")
        with open(in_checkout("deploy", "haproxy", "haproxy.cfg")) as file:
            config = file.read()
        frontend = free_port()
        config = config.replace("bind 127.0.0.1:9000", f"bind 127.0.0.1:{frontend}")
        for name, port in zip("ab", ports, strict=True):
            config, count = re.subn(
                rf"server {name} 127\.0\.0\.1:\d+ check port \d+", f"server {name} 127.0.0.1:{port}", config
            )
            self.assertEqual(count, 1, config)
        directory = tempfile.mkdtemp(prefix="echoapp-haproxy-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "haproxy.cfg")
        with open(path, "w") as file:
            file.write(config)
        process = subprocess.Popen(
            [haproxy, "-db", "-f", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.addCleanup(process.wait, DEADLINE)
        self.addCleanup(process.terminate)
        return frontend

    async def test_a_burst_from_a_believed_balancer(self) -> None:
        """
        Each instance admits 10 per address; 20 addresses open 10 each, 5
        per instance: all are welcomed.  Counted against HAProxy's own
        address until their headers were read, all but 10 per instance were
        told C{too many connections from your address}.
        """
        trees = [services.tcp_greeter([LISTEN], limits=TCPLimits(max_per_peer=10)) for _ in "ab"]
        ports = [start(self, tree)[0].getHost().port for tree in trees]
        frontend = self.front(ports)
        self.assertEqual(await deferToThread(first_lines, frontend, ["127.0.0.1"]), [b"Welcome!\r\n"])
        sources = [f"127.0.0.{2 + n % 20}" for n in range(200)]
        socks: list[socket.socket] = []
        self.addCleanup(lambda: [sock.close() for sock in socks])
        # The instances wait (this reactor is held) while the clients connect
        # through HAProxy: its connections to them, headers sent, queue in
        # the kernel and are accepted together, on any machine.
        before = [established_to(port) for port in ports]
        connecting = threading.Thread(target=connect_from, args=(frontend, sources, socks))
        connecting.start()
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            queued = sum(established_to(port) - held for port, held in zip(ports, before, strict=True))
            if queued >= len(sources):
                break
            time.sleep(0.02)
        connecting.join(DEADLINE)
        lines = await deferToThread(read_first_lines, socks)
        self.assertEqual(lines.count(b"Welcome!\r\n"), len(sources), set(lines))


def connect_from(port: int, sources: list[str], socks: list[socket.socket]) -> None:
    """One connection to C{port} from each source address (loopback), kept in C{socks}."""
    for source in sources:
        sock = socket.socket()
        socks.append(sock)
        sock.bind((source, 0))
        sock.settimeout(DEADLINE)
        sock.connect(("127.0.0.1", port))


def read_first_lines(socks: list[socket.socket]) -> list[bytes]:
    """The first line each connection gets (or what it gets before it closes)."""
    lines = []
    for sock in socks:
        received = b""
        try:
            while not received.endswith(b"\n") and (chunk := sock.recv(100)):
                received += chunk
        except OSError:
            pass
        lines.append(received)
    return lines


def first_lines(port: int, sources: list[str]) -> list[bytes]:
    """Connect from each source, all open at once, and read each one's first line; retried until served."""
    end = time.monotonic() + DEADLINE
    while True:
        socks: list[socket.socket] = []
        try:
            connect_from(port, sources, socks)
            lines = read_first_lines(socks)
            if all(lines) or time.monotonic() > end:
                return lines
        except OSError:
            if time.monotonic() > end:
                raise
        finally:
            for sock in socks:
                sock.close()
        time.sleep(0.1)
