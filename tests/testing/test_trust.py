"""
A test peer you can trust (issue 20): every fault keeps its promise with
real clients on loopback (half-closing ones too), changes reach open
connections, faults that cannot apply are refused, runs with one seed
repeat under concurrency, and conditional faults serve clients that retry.
Run under both reactors: C{--reactor=uvloop} takes the native transports.
"""

from __future__ import annotations

import dataclasses
import shutil
import socket
import ssl
import subprocess
import time
from typing import Any

from twisted.internet.testing import EventLoggingObserver
from twisted.internet.threads import deferToThread
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp.testing import Faults
from tests.support import installed_env, make_certificates, unix_socket_path


def recv_all(sock: socket.socket) -> bytes:
    got = b""
    while data := sock.recv(65536):
        got += data
    return got


def half_closing_client(port: int, message: bytes = b"Ann\n") -> bytes:
    """C{shutdown(SHUT_WR)} after the last message, then read to the end."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(message)
        sock.shutdown(socket.SHUT_WR)
        return recv_all(sock)


DELAYING = [
    Faults(latency=0.1),
    Faults(slice=4, slice_delay=0.01),
    Faults(bandwidth=200),
    Faults(read_latency=0.05, latency=0.05),
]


class HalfCloseTests(TestCase):
    """Point 1: a client that half-closes after its last message gets every reply."""

    async def expected(self) -> bytes:
        plain = testing.greeter(self)
        return await deferToThread(half_closing_client, plain.port)

    async def test_socket_shutdown_gets_every_delayed_reply(self) -> None:
        expected = await self.expected()
        self.assertIn(b"Hello, Ann!", expected)
        for faults in DELAYING:
            peer = testing.greeter(self, faults=faults)
            self.assertEqual(await deferToThread(half_closing_client, peer.port), expected, str(faults))

    async def test_nc_N(self) -> None:
        if (
            shutil.which("nc") is None
            or b"-N" not in subprocess.run(["nc", "-h"], capture_output=True).stderr
        ):
            self.skipTest("no nc with -N here (Debian: netcat-openbsd)")
        expected = await self.expected()
        for faults in DELAYING:
            peer = testing.greeter(self, faults=faults)
            args = ["nc", "-N", "127.0.0.1", str(peer.port)]
            result = await deferToThread(
                subprocess.run, args, input=b"Ann\n", capture_output=True, timeout=20
            )
            self.assertEqual(result.stdout, expected, str(faults))

    async def test_socat(self) -> None:
        if shutil.which("socat") is None:
            self.skipTest("socat is not installed (Debian: socat)")
        expected = await self.expected()
        for faults in DELAYING:
            peer = testing.greeter(self, faults=faults)
            args = ["socat", "-t", "10", "-", f"TCP:127.0.0.1:{peer.port}"]
            result = await deferToThread(
                subprocess.run, args, input=b"Ann\n", capture_output=True, timeout=20
            )
            self.assertEqual(result.stdout, expected, str(faults))


class TimerTests(TestCase):
    """Point 2: no timer outlives its connection (trial fails a test that leaves one)."""

    async def test_half_close_after_bytes_then_exit(self) -> None:
        peer = testing.greeter(self, faults=Faults(half_close_after_bytes=10))

        def client() -> bytes:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                got = recv_all(sock)  # the banner, then the FIN
                sock.sendall(b"exit\n")
                try:
                    recv_all(sock)  # until the server closes
                except ConnectionResetError:
                    pass
                return got

        self.assertEqual(await deferToThread(client), b"Welcome!\r\n")
        await peer.stop()

    async def test_slow_close_timer_goes_with_the_connection(self) -> None:
        peer = testing.greeter(self, faults=Faults(slow_close=30))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                sock.sendall(b"exit\n")
                while b"Goodbye!" not in sock.recv(100):
                    pass
            # closed by the client, while the server's slow close waits

        await deferToThread(client)
        await peer.stop()


class RunTimeChangeTests(TestCase):
    """Point 3: C{peer.faults = ...} reaches connections that are already open."""

    async def opened(self, peer: testing.Peer) -> socket.socket:
        """A connection that has had its banner and one reply."""

        def client() -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", peer.port), timeout=10)
            self.addCleanup(sock.close)
            self.assertEqual(sock.recv(100), b"Welcome!\r\n")
            sock.sendall(b"Ann\n")
            self.assertEqual(sock.recv(100), b"Hello, Ann!\n")
            return sock

        return await deferToThread(client)

    async def test_a_connection_opened_without_faults_gets_them(self) -> None:
        peer = testing.greeter(self)
        sock = await self.opened(peer)
        peer.faults = Faults(reset_after_bytes=0)

        def then() -> None:
            sock.sendall(b"Bob\n")
            while sock.recv(100):
                pass

        with self.assertRaises(ConnectionResetError):
            await deferToThread(then)

    async def test_a_switch_to_stall_answer_is_not_ignored(self) -> None:
        peer = testing.greeter(self, faults=Faults(latency=0.01))
        sock = await self.opened(peer)
        peer.faults = Faults(stall="answer")

        def then() -> bytes:
            sock.sendall(b"Bob\n")
            sock.settimeout(0.5)
            return sock.recv(100)

        with self.assertRaises(TimeoutError):
            await deferToThread(then)

    async def test_a_switch_to_stall_read_pauses_an_open_connection(self) -> None:
        peer = testing.greeter(self)
        sock = await self.opened(peer)
        peer.faults = Faults(stall="read")

        def then() -> None:
            sock.settimeout(1)
            sock.sendall(b"x" * (64 << 20))

        with self.assertRaises(TimeoutError):
            await deferToThread(then)


class SeedInTheLogTests(TestCase):
    """The seed in every failure: a trial test's log says it at start and at every change."""

    def test_start_and_change_are_logged_with_the_seed(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        peer = testing.greeter(self, faults=Faults(latency=0.01, seed=77))
        peer.faults = Faults(stall="answer", seed=77)
        said = [formatEvent(event) for event in events]
        self.assertIn("echoapp-tcp faults: latency=10ms,seed=77 (seed=77)", said)
        self.assertIn("echoapp-tcp faults now: stall=answer,seed=77 (seed=77)", said)
        with self.assertRaises(ValueError):
            peer.faults = Faults(loss=0.5)


class RefusedFaultTests(SynchronousTestCase):
    """Point 5: a fault that cannot apply, or a bad value, is refused at once in one line."""

    def test_bad_values_in_python(self) -> None:
        for kwargs, reason in [
            ({"loss": 2.0}, "loss: must be a probability from 0 to 1, got 2.0"),
            ({"stall": "write"}, "stall: stall is read or answer, not 'write'"),
            ({"latency": -1}, "latency: must be 0 or more seconds"),
            ({"latency": "fast"}, "latency: 'fast' is not a duration"),
            ({"refuse": 1}, "refuse: must be True or False"),
            ({"latency": 1e400}, "latency: must be 0 or more seconds"),
        ]:
            with self.assertRaises(ValueError) as raised:
                Faults(**kwargs)
            self.assertIn(reason, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))
        self.assertEqual(Faults(latency="50ms").latency, 0.05, "text is read as --fault reads it")
        self.assertEqual(str(Faults(latency="50ms")), "latency=50ms")

    def test_huge_values_in_text(self) -> None:
        for text in ["latency=" + "9" * 400 + "s", "bandwidth=" + "9" * 400, "slow-close=" + "9" * 30 + "ms"]:
            with self.assertRaises(ValueError) as raised:
                Faults.parse(text)
            reason = str(raised.exception)
            self.assertNotIn("inf", reason)
            self.assertNotIn("\n", reason)
            self.assertLess(len(reason), 120, "the typed value is shortened")

    def test_faults_a_service_cannot_apply(self) -> None:
        from echoapp._tap import tcp, udp

        for options, args, reason in [
            (udp.Options, ["--fault", "latency=1s,bandwidth=10"], "--fault: fault bandwidth: applies to TCP"),
            (udp.Options, ["--fault", "slice=1"], "fault slice: applies to TCP services only"),
            (tcp.Options, ["--fault", "loss=0.5"], "--fault: fault loss: applies to UDP services only"),
            (tcp.Options, ["--fault", "stall-handshake"], "fault stall-handshake: needs an ssl: listener"),
        ]:
            with self.assertRaises(usage.UsageError) as raised:
                options().parseOptions(["--listen", "tcp:0" if options is tcp.Options else "udp:0", *args])
            self.assertIn(reason, str(raised.exception))
        udp.Options().parseOptions(["--listen", "udp:0", "--fault", "latency=1s,jitter=10ms,loss=0.1"])
        paths = make_certificates(self.mktemp() + "-certs")
        tls = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        with self.assertRaises(ValueError) as raised:
            testing.greeter(listen=tls, faults=Faults(half_close_after_bytes=3))
        self.assertIn("needs a listener without TLS (TLS cannot half-close)", str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            testing.greeter(faults=Faults(loss=0.5))
        self.assertEqual(str(raised.exception), "fault loss: applies to UDP services only")

    def test_refused_by_twistd_in_one_line(self) -> None:
        result = subprocess.run(
            [
                "twistd",
                "-n",
                "--pidfile=",
                "echoapp-tcp",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--fault",
                "loss=0.5",
            ],
            capture_output=True,
            text=True,
            env=installed_env(),
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("--fault: fault loss: applies to UDP services only", result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)


class ExactResetTests(TestCase):
    """Point 6: reset-after-bytes sends exactly N bytes, then an RST, on ssl: and unix: too."""

    async def test_ssl(self) -> None:
        paths = make_certificates(self.mktemp() + "-certs")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        peer = testing.greeter(self, listen=listen, faults=Faults(reset_after_bytes=15))

        def client() -> tuple[bytes, type]:
            """TLS over memory BIOs, to see what the TCP socket itself reports: an RST or a FIN."""
            context = ssl.create_default_context(cafile=paths["ca.pem"])
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
            got = b""
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as raw:

                def exchange() -> bool:
                    raw.sendall(outgoing.read())
                    data = raw.recv(65536)
                    incoming.write(data)
                    return bool(data)

                while True:
                    try:
                        tls.do_handshake()
                        break
                    except ssl.SSLWantReadError:
                        exchange()
                tls.write(b"Bob\n")
                try:
                    while exchange():
                        while True:
                            try:
                                got += tls.read(65536)
                            except ssl.SSLWantReadError:
                                break
                except ConnectionResetError:
                    return got, ConnectionResetError
            return got, type(None)

        got, error = await deferToThread(client)
        self.assertEqual(got, b"Welcome!\r\nHello")
        self.assertTrue(issubclass(error, ConnectionResetError), error)

    async def test_unix(self) -> None:
        path = unix_socket_path(self)
        peer = testing.greeter(self, listen=f"unix:{path}", faults=Faults(reset_after_bytes=4))
        self.assertTrue(peer.service)

        def client() -> tuple[bytes, type]:
            got = b""
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(path)
                try:
                    while data := sock.recv(100):
                        got += data
                except OSError as error:
                    return got, type(error)
            return got, type(None)

        got, error = await deferToThread(client)
        self.assertEqual(got, b"Welc")
        # A UNIX socket has no RST: its reader sees the end, or a reset if it had sent unread bytes.
        self.assertIn(error, (type(None), ConnectionResetError))


class ReadmeTests(TestCase):
    """Point 7: what README says of C{stall=answer} is what it does."""

    async def test_stall_answer_closes_on_the_exit_word_and_at_the_idle_timeout(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="answer"), idle_timeout=0.3)

        def client(message: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                sock.sendall(message)
                return recv_all(sock)

        self.assertEqual(await deferToThread(client, b"exit\n"), b"", "closed at once, no farewell")
        self.assertEqual(await deferToThread(client, b""), b"", "closed at the idle timeout")
        # The manual's fault reference is generated from this help text.
        [stall] = [field for field in dataclasses.fields(Faults) if field.name == "stall"]
        self.assertNotIn("never closes", stall.metadata["help"])
        self.assertIn("exit word", stall.metadata["help"])


class RepeatTests(TestCase):
    """Point 9: one seed, four concurrent sources: each gets the same draws, run after run."""

    async def test_concurrent_udp_sources_repeat_exactly(self) -> None:
        def run(port: int, order: list[int]) -> list[set[bytes]]:
            socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
            try:
                for number, sock in enumerate(socks):  # the order of arrival: 0, 1, 2, 3
                    sock.sendto(b"%d-0" % number, ("127.0.0.1", port))
                time.sleep(0.2)
                for message in range(1, 20):
                    for number in order:  # the rest interleaved as the run likes
                        socks[number].sendto(b"%d-%d" % (number, message), ("127.0.0.1", port))
                got: list[set[bytes]] = []
                for sock in socks:
                    sock.settimeout(0.5)
                    replies = set()
                    try:
                        while True:
                            replies.add(sock.recvfrom(100)[0])
                    except TimeoutError:
                        got.append(replies)
                return got
            finally:
                for sock in socks:
                    sock.close()

        first = await deferToThread(
            run, testing.udp(self, faults=Faults(loss=0.5, seed=1234)).port, [0, 1, 2, 3]
        )
        second = await deferToThread(
            run, testing.udp(self, faults=Faults(loss=0.5, seed=1234)).port, [3, 1, 0, 2]
        )
        self.assertEqual(first, second)
        self.assertTrue(all(0 < len(replies) < 20 for replies in first), "each source lost some")


class TrapTests(TestCase):
    """Point 10: the test peer's rate limits drop none of a test's burst."""

    async def test_a_300_datagram_burst_is_not_rate_limited(self) -> None:
        peer = testing.udp(self, faults=Faults(loss=0.1, seed=3))

        def client() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                for number in range(300):
                    sock.sendto(b"%d" % number, ("127.0.0.1", peer.port))
                sock.settimeout(0.5)
                try:
                    while sock.recvfrom(100):
                        pass
                except TimeoutError:
                    pass

        await deferToThread(client)
        [listener] = [child for child in peer.service if hasattr(child, "protocol")]
        stats: Any = listener.protocol.stats
        self.assertEqual(
            stats.dropped, dict.fromkeys(stats.dropped, 0), "loss is the fault's, not the limiter's"
        )
        self.assertGreater(stats.answered, 0)


class NativeDropTests(SynchronousTestCase):
    """Point 10: replies uvloop's native UDP transport drops are counted as drops, not answers."""

    def test_a_full_buffer_is_its_own_drop_reason(self) -> None:
        from echoapp._protocols.udp import UDPGreeter
        from echoapp._transports.native_udp import DATAGRAM_BUFFER_LIMIT, NativeDatagramPort

        class Full:
            """The loop's transport with more than the limit buffered already."""

            def is_closing(self) -> bool:
                return False

            def get_write_buffer_size(self) -> int:
                return DATAGRAM_BUFFER_LIMIT + 1

        from twisted.internet.address import IPv4Address
        from twisted.internet.task import Clock

        greeter = UDPGreeter(clock=Clock())
        port = NativeDatagramPort(greeter, IPv4Address("UDP", "127.0.0.1", 9))
        port._transport = Full()
        greeter.makeConnection(port)
        greeter.datagramReceived(b"Ann", ("127.0.0.1", 40000))
        self.assertEqual((greeter.stats.answered, greeter.stats.dropped["buffer"]), (0, 1))


def retrying_client(port: int, messages: list[bytes], tries: int = 50) -> tuple[list[bytes], int]:
    """
    A client that retries: it reconnects after a refusal or a reset and
    sends again the message that got no reply.  Returns the replies and the
    connections it took.
    """
    replies: list[bytes] = []
    connections = 0
    while messages and connections < tries:
        connections += 1
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                reader = sock.makefile("rb")
                if reader.readline() != b"Welcome!\r\n":
                    time.sleep(0.05)
                    continue
                while messages:
                    sock.sendall(messages[0] + b"\n")
                    reply = reader.readline()
                    if not reply:
                        break
                    replies.append(reply)
                    messages = messages[1:]
        except ConnectionError:
            time.sleep(0.05)
    return replies, connections


class ConditionalFaultTests(TestCase):
    """Faults on conditions, met by a real client that retries."""

    async def test_first_connections_refused(self) -> None:
        peer = testing.greeter(self, faults=Faults(refuse=True, first=2))
        replies, connections = await deferToThread(retrying_client, peer.port, [b"Ann"])
        self.assertEqual((replies, connections), ([b"Hello, Ann!\n"], 3))

    async def test_reset_after_two_messages_on_each_connection(self) -> None:
        peer = testing.greeter(self, faults=Faults(after_messages=2, reset_after_bytes=0))
        messages = [b"m%d" % number for number in range(5)]
        replies, connections = await deferToThread(retrying_client, peer.port, messages)
        self.assertEqual(replies, [b"Hello, %s!\n" % message for message in messages])
        self.assertEqual(connections, 3, "two replies on each connection, then a reset")

    async def test_refused_during_a_window_after_start(self) -> None:
        peer = testing.greeter(self, faults=Faults(refuse=True, active_until=0.3))
        replies, connections = await deferToThread(retrying_client, peer.port, [b"Ann"])
        self.assertEqual(replies, [b"Hello, Ann!\n"])
        self.assertGreater(connections, 1, "refused at first, served after the window")

    async def test_reset_when_a_message_matches(self) -> None:
        peer = testing.greeter(self, faults=Faults(match=b"pay", first=1, reset_after_bytes=0))
        replies, connections = await deferToThread(retrying_client, peer.port, [b"hello", b"pay"])
        self.assertEqual((replies, connections), ([b"Hello, hello!\n", b"Hello, pay!\n"], 2))

    async def test_udp_first_sources_lose_every_reply(self) -> None:
        peer = testing.udp(self, faults=Faults(loss=1, first=1))

        def client() -> tuple[bytes, int]:
            for attempt in range(1, 10):
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # a new source each time
                    sock.settimeout(0.3)
                    sock.sendto(b"Ann", ("127.0.0.1", peer.port))
                    try:
                        return sock.recvfrom(100)[0], attempt
                    except TimeoutError:
                        continue
            return b"", 10

        self.assertEqual(await deferToThread(client), (b"Hello, Ann!", 2))

    async def test_read_bandwidth_slows_the_request_path(self) -> None:
        peer = testing.echo(self, faults=Faults(read_bandwidth=20_000))
        data = bytes(range(256)) * 100
        self.assertEqual(await deferToThread(half_closing_client, peer.port, data), data)

    async def test_udp_latency(self) -> None:
        peer = testing.udp(self, faults=Faults(latency=0.05, jitter=0.01))

        def client() -> bytes:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(5)
                sock.sendto(b"Ann", ("127.0.0.1", peer.port))
                return sock.recvfrom(100)[0]

        self.assertEqual(await deferToThread(client), b"Hello, Ann!")
