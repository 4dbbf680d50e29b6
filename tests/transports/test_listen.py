import io
import socket
import subprocess
import sys
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._protocols.echo import EchoFactory
from echoapp._protocols.udp import UDPGreeter
from echoapp._transports.endpoints import (
    ParseOnlyReactor,
    SocketEndpoint,
    StreamListen,
    UDPListen,
    bound_socket,
    check_endpoint,
    describe_address,
    describe_listening,
    with_backlog,
)
from echoapp._transports.listen import (
    READ_SIZE,
    StreamListenService,
    UDPListenService,
    descendants,
    listeners,
)
from echoapp._twisted import tcp_server_parameters
from echoapp.config import TCPLimits
from tests.support import DEADLINE, start


class UDPListenParseTests(SynchronousTestCase):
    def test_valid(self) -> None:
        cases = {
            "udp:9999": UDPListen(9999, ""),
            "udp:0:interface=127.0.0.1": UDPListen(0, "127.0.0.1"),
            "udp:53:interface=::1": UDPListen(53, "::1"),
            r"udp:53:interface=\:\:1": UDPListen(53, "::1"),
            "udp:7:interface=fe80::1:2": UDPListen(7, "fe80::1:2"),
        }
        for text, expected in cases.items():
            self.assertEqual(UDPListen.parse(text), expected, text)

    def test_round_trip(self) -> None:
        for text in ("udp:9999", "udp:1:interface=127.0.0.2", "udp:2:interface=::1"):
            self.assertEqual(str(UDPListen.parse(text)), text)

    def test_invalid_is_one_clear_line(self) -> None:
        cases = {
            "tcp:9999": "not a UDP listen description",
            "udp": "not a UDP listen description",
            "udp:": "port '' is not a number",
            "udp:http": "port 'http' is not a number",
            "udp:65536": "port '65536' is not a number from 0 to 65535",
            "udp:-1": "port '-1'",
            "udp:1:iface=127.0.0.1": "unknown parameter 'iface'",
            "udp:1:interface=127.0.0.1:interface=127.0.0.2": "interface given twice",
            "udp:1:interface=localhost": "interface 'localhost' is not an IP address",
            "udp:1:interface=": "interface '' is not an IP address",
        }
        for text, reason in cases.items():
            error = self.assertRaises(ValueError, UDPListen.parse, text)
            self.assertIn(reason, str(error), text)
            self.assertIn(repr(text), str(error))
            self.assertIn("udp:PORT[:interface=ADDRESS]", str(error))
            self.assertNotIn("\n", str(error))


class CheckEndpointTests(SynchronousTestCase):
    def test_accepts_endpoint_strings(self) -> None:
        for text in ("tcp:9999", "tcp:0:interface=127.0.0.1", r"tcp6:0:interface=\:\:1", "unix:/tmp/x.sock"):
            self.assertEqual(check_endpoint(text), text)

    def test_rejects_with_one_line(self) -> None:
        for text, reason in [
            ("foo:1", "unknown kind 'foo'"),
            ("tcp:abc", "port 'abc' is not a number"),
            ("", ""),
        ]:
            error = self.assertRaises(ValueError, check_endpoint, text)
            self.assertIn(f"cannot listen on {text!r}", str(error))
            self.assertIn(reason, str(error))
            self.assertNotIn("\n", str(error))


class DescribeAddressTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        self.assertEqual(describe_address(IPv4Address("TCP", "127.0.0.1", 5)), "tcp:127.0.0.1:5")
        self.assertEqual(describe_address(IPv4Address("UDP", "127.0.0.1", 5)), "udp:127.0.0.1:5")
        self.assertEqual(describe_address(IPv6Address("TCP", "::1", 5)), "tcp6:[::1]:5")
        self.assertEqual(describe_address(UNIXAddress(b"/run/x.sock")), "unix:/run/x.sock")

    def test_a_unix_path_that_is_not_utf8(self) -> None:
        """Its odd bytes are escaped rather than the "listening on" line lost."""
        self.assertEqual(describe_address(UNIXAddress(b"/tmp/\xff.sock")), "unix:/tmp/\\xff.sock")
        self.assertEqual(describe_address(UNIXAddress("/tmp/\udcff.sock")), "unix:/tmp/\\xff.sock")


class UDPMemoryReactor(MemoryReactor):
    """MemoryReactor records TCP and UNIX listens; this records UDP ones too."""

    def __init__(self) -> None:
        super().__init__()
        self.udpServers: list[tuple[int, object, str, int]] = []

    def listenUDP(
        self, port: int, protocol: object, interface: str = "", maxPacketSize: int = 8192
    ) -> object:
        self.udpServers.append((port, protocol, interface, maxPacketSize))
        return _FakeUDPPort(port, interface)


class _FakeUDPPort:
    def __init__(self, port: int, interface: str) -> None:
        self.address = IPv4Address("UDP", interface or "0.0.0.0", port)

    def getHost(self) -> IPv4Address:
        return self.address


class PrivilegedBindTests(SynchronousTestCase):
    """
    Ports are bound in privilegedStartService, which twistd runs before it
    drops privileges (--uid/--gid), and not again in startService.
    """

    def test_stream_binds_before_privileges_drop(self) -> None:
        reactor = MemoryReactor()
        listener = StreamListenService("tcp:80:interface=127.0.0.1", EchoFactory(), reactor)
        listener.setServiceParent(MultiService())
        listener.privilegedStartService()
        self.assertEqual([(port, host) for port, _, _, host in reactor.tcpServers], [(80, "127.0.0.1")])
        listener.startService()
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_udp_binds_before_privileges_drop(self) -> None:
        reactor = UDPMemoryReactor()
        listener = UDPListenService(UDPListen(53, "127.0.0.1"), UDPGreeter(), reactor)
        listener.setServiceParent(MultiService())
        listener.privilegedStartService()
        self.assertEqual(len(reactor.udpServers), 1)
        port, _, interface, size = reactor.udpServers[0]
        self.assertEqual((port, interface, size), (53, "127.0.0.1", READ_SIZE))
        listener.startService()
        self.assertEqual(len(reactor.udpServers), 1)

    def test_start_without_privileged_step_still_binds(self) -> None:
        reactor = UDPMemoryReactor()
        listener = UDPListenService(UDPListen(53, "127.0.0.1"), UDPGreeter(), reactor)
        listener.startService()
        self.assertEqual(len(reactor.udpServers), 1)


class CannotListenTests(TestCase):
    def test_port_in_use_is_one_line(self) -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            parent = MultiService()
            parent.setName("echoapp-echo")
            listener = StreamListenService(f"tcp:{port}:interface=127.0.0.1", EchoFactory())
            listener.setServiceParent(parent)
            error = self.assertRaises(SystemExit, listener.privilegedStartService)
        self.assertEqual(
            str(error.code),
            f"echoapp-echo: cannot listen on tcp:{port}:interface=127.0.0.1: "
            "[Errno 98] Address already in use",
        )

    def test_a_taken_udp_port_stays_taken(self) -> None:
        # SO_REUSEADDR on a datagram socket would let a second process bind a
        # port already in use; only --reuse-port may share one.
        first = bound_socket(socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", 0, reuse_port=False)
        self.addCleanup(first.close)
        port = first.getsockname()[1]
        self.assertRaises(
            CannotListenError, bound_socket, socket.AF_INET, socket.SOCK_DGRAM, "127.0.0.1", port, False
        )

    def test_udp_port_in_use_is_one_line(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
            taken.bind(("127.0.0.1", 0))
            port = taken.getsockname()[1]
            listener = UDPListenService(UDPListen(port, "127.0.0.1"), UDPGreeter())
            error = self.assertRaises(SystemExit, listener.privilegedStartService)
        self.assertIn(f"cannot listen on udp:{port}:interface=127.0.0.1:", str(error.code))
        self.assertIn("Address already in use", str(error.code))


class TerminalTests(SynchronousTestCase):
    """
    Where twistd logs to a file, a listener that cannot listen at start-up
    also says so on the terminal; once the reactor runs (a listener an API
    call makes) it does not: a pipe no one reads would block the daemon.
    """

    def fail_to_listen(self, running: bool, terminal: Any) -> str:
        from echoapp._transports import listen

        self.patch(listen, "global_reactor", lambda: type("R", (), {"running": running})())
        self.patch(sys, "__stderr__", terminal)
        self.patch(sys, "stderr", io.StringIO())  # twistd's log in its place
        error = listen._cannot_listen(Service(), "tcp:1", OSError(98, "Address already in use"))
        return str(error)

    def test_at_start_up_the_terminal_is_told(self) -> None:
        terminal = io.StringIO()
        line = self.fail_to_listen(False, terminal)
        self.assertEqual(
            terminal.getvalue(), "echoapp: cannot listen on tcp:1: [Errno 98] Address already in use\n"
        )
        self.assertIn("Address already in use", line)

    def test_once_running_the_terminal_is_left_alone(self) -> None:
        terminal = io.StringIO()
        self.fail_to_listen(True, terminal)
        self.assertEqual(terminal.getvalue(), "")

    def test_a_closed_terminal_is_no_failure(self) -> None:
        class Gone(io.StringIO):
            def write(self, text: str) -> int:
                raise BrokenPipeError(32, "Broken pipe")

        self.assertIn("Address already in use", self.fail_to_listen(False, Gone()))


class BacklogTests(SynchronousTestCase):
    """A listen backlog that fits the service's connection limit, unless a description names its own."""

    def test_added_where_the_kind_takes_one(self) -> None:
        cases = {
            "tcp:9999": "tcp:9999:backlog=300",
            "tcp6:9999:interface=\\:\\:1": "tcp6:9999:interface=\\:\\:1:backlog=300",
            "unix:/run/e.sock": "unix:/run/e.sock:backlog=300",
            "ssl:9443:privateKey=k.pem": "ssl:9443:privateKey=k.pem:backlog=300",
        }
        for description, expected in cases.items():
            self.assertEqual(with_backlog(description, 300), expected)

    def test_a_named_backlog_wins(self) -> None:
        self.assertEqual(with_backlog("tcp:9999:backlog=7", 300), "tcp:9999:backlog=7")

    def test_kinds_without_one_are_left_alone(self) -> None:
        self.assertEqual(with_backlog("systemd:domain=INET:index=0", 300), "systemd:domain=INET:index=0")
        self.assertEqual(with_backlog("tcp:9999", None), "tcp:9999")

    def test_behind_a_balancer_too(self) -> None:
        listen = replace(StreamListen.parse("haproxy:tcp:0:interface=127.0.0.1"), backlog=300)
        endpoint = listen.server_endpoint(ParseOnlyReactor())
        self.assertEqual(tcp_server_parameters(endpoint.wrapped)[2], 300)  # type: ignore[attr-defined]

    def test_services_listen_with_their_connection_limit(self) -> None:
        tree = services.tcp_greeter(["tcp:0:interface=127.0.0.1"], limits=TCPLimits(max_connections=777))
        [listener] = [child for child in tree if isinstance(child, StreamListenService)]
        endpoint = listener.endpoint
        # Twisted's endpoint keeps it privately; echoapp's own (uvloop, --reuse-port) as a field.
        backlog = (
            endpoint.backlog if isinstance(endpoint, SocketEndpoint) else tcp_server_parameters(endpoint)[2]
        )
        self.assertEqual(backlog, 777)


class BurstTests(TestCase):
    """
    Clients that connect at once to a server that speaks first each get a
    line, their banner or their refusal.  With Twisted's backlog of 50 the
    kernel's accept queue overflowed and 130 of 300 got nothing at all.
    """

    async def test_300_clients_at_once(self) -> None:
        [port] = start(self, services.tcp_greeter(["tcp:0:interface=127.0.0.1"]))
        clients = []
        for _ in range(300):  # all of them before the reactor runs again to accept any
            sock = socket.socket()
            self.addCleanup(sock.close)
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port.getHost().port))
            clients.append(sock)
        answered: dict[socket.socket, bytes] = {}
        for _ in range(int(DEADLINE / 0.05)):
            for sock in clients:
                if sock not in answered:
                    try:
                        answered[sock] = sock.recv(100)
                    except (BlockingIOError, InterruptedError):
                        pass
            if len(answered) == len(clients):
                break
            await deferLater(reactor, 0.05)
        lines = sorted(set(answered.values()))
        self.assertEqual(len(answered), 300, f"{300 - len(answered)} clients got nothing")
        self.assertEqual(lines, [b"ERROR: too many connections from your address\r\n", b"Welcome!\r\n"])


class ListeningLineTests(SynchronousTestCase):
    def test_names_the_kind_the_description_names(self) -> None:
        tcp4, tcp6 = IPv4Address("TCP", "127.0.0.1", 9443), IPv6Address("TCP", "::1", 9443)
        self.assertEqual(describe_listening("ssl:9443:privateKey=k.pem", tcp4), "ssl:127.0.0.1:9443")
        self.assertEqual(describe_listening("ssl:9443:interface=\\:\\:1", tcp6), "ssl:[::1]:9443")
        self.assertEqual(describe_listening("tcp:9443", tcp4), "tcp:127.0.0.1:9443")
        self.assertEqual(describe_listening("systemd:domain=INET:index=0", tcp4), "tcp:127.0.0.1:9443")

    def test_without_pyopenssl_says_which_extra(self) -> None:
        code = (
            "import sys; sys.modules['OpenSSL'] = None\n"
            "from echoapp._transports.endpoints import check_endpoint\n"
            "try:\n    check_endpoint('ssl:0:privateKey=k.pem')\n"
            "except ValueError as error:\n    print(error)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        self.assertEqual(
            result.stdout.strip(),
            "cannot listen on 'ssl:0:privateKey=k.pem': TLS needs pyOpenSSL: pip install 'echoapp[tls]'",
        )


class TreeWalkTests(SynchronousTestCase):
    """The one walk of a service tree: health, the test peer and the tests all use it."""

    def test_listeners_in_tree_order_at_any_depth(self) -> None:
        tree = services.everything(
            tcp=["tcp:0:interface=127.0.0.1"],
            udp=["udp:0:interface=127.0.0.1"],
            echo_listen=["tcp:0:interface=127.0.0.1", "tcp:1:interface=127.0.0.1"],
        )
        top = MultiService()
        tree.setServiceParent(top)
        found = [str(getattr(listener, "listen", "")) for listener in listeners(top)]
        self.assertEqual(
            found,
            [
                "tcp:0:interface=127.0.0.1",
                "udp:0:interface=127.0.0.1",
                "tcp:0:interface=127.0.0.1",
                "tcp:1:interface=127.0.0.1",
            ],
        )
        self.assertIn(tree, list(descendants(top)))
