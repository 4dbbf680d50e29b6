"""
Faults on demand (L{echoapp._faults}): each fault, its syntax and its seed,
first on a clock (what is sent when), then against unmodified real clients
over loopback: a Python socket, asyncio, C{echoapp-client} and C{nc}.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import tracemalloc
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._faults import HELD_BYTES, PIECES_PER_PASS, FaultPlan, Faults, FaultyConnection, FaultyFactory
from echoapp._limits.descriptors import DESCRIPTORS
from tests.support import RecordingProducer, installed_env, make_certificates


class Answer(Protocol):
    """Replies to each chunk with C{<chunk>} and closes on C{bye}."""

    def dataReceived(self, data: bytes) -> None:
        if data == b"bye":
            self.transport.write(b"farewell")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        else:
            self.transport.write(b"<" + data + b">")  # type: ignore[union-attr]


class Transport(StringTransport):
    """StringTransport with the half-close a TCP transport has."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def connection(faults: Faults, clock: Clock | None = None) -> tuple[Any, Transport, Clock]:
    clock = clock or Clock()
    factory = FaultyFactory(Factory.forProtocol(Answer), FaultPlan(faults, clock))
    protocol = factory.buildProtocol(None)
    transport = Transport()
    protocol.makeConnection(transport)
    return protocol, transport, clock


class SyntaxTests(SynchronousTestCase):
    def test_parse(self) -> None:
        faults = Faults.parse("latency=50ms, jitter=10ms,bandwidth=16KB,slice=1,slice-delay=2ms,seed=7")
        self.assertEqual(
            (faults.latency, faults.jitter, faults.bandwidth, faults.slice, faults.slice_delay, faults.seed),
            (0.05, 0.01, 16384, 1, 0.002, 7),
        )
        self.assertEqual(Faults.parse("stall=read,refuse,loss=0.5").stall, "read")
        self.assertEqual(Faults.parse("reset-after=2s", Faults(latency=1)).latency, 1, "on top of a base")

    def test_one_line_errors(self) -> None:
        for text, reason in [
            ("bogus=1", "unknown fault 'bogus'"),
            ("latency=5", "fault latency: '5' is not a duration (like 50ms or 2s)"),
            ("loss=2", "fault loss: '2' is not a probability from 0 to 1"),
            ("stall=sometimes", "fault stall: stall is read or answer, not 'sometimes'"),
            ("refuse=3", "fault refuse: '3': this fault takes no value"),
            ("seed=x", "fault seed: seed 'x' is not a whole number"),
            ("latency=" + "9" * 400 + "s", "fault latency: '99999999999999999999...' is longer than a day"),
            ("slow-close=86401s", "fault slow-close: '86401s' is longer than a day"),
        ]:
            with self.assertRaises(ValueError) as raised:
                Faults.parse(text)
            self.assertIn(reason, str(raised.exception))
            self.assertNotIn("\n", str(raised.exception))

    def test_shown_as_typed(self) -> None:
        text = "latency=50ms,stall=read,refuse,loss=0.5,seed=3"
        self.assertEqual(str(Faults.parse(text)), text)
        self.assertEqual(Faults.parse(str(Faults.parse(text))), Faults.parse(text))

    def test_off_means_off(self) -> None:
        self.assertFalse(Faults())
        self.assertFalse(Faults(seed=3, fraction=0.5), "a seed alone is no fault")
        self.assertTrue(Faults(refuse=True))


class ClockTests(SynchronousTestCase):
    """What is sent when, with a clock the test turns."""

    def test_latency_keeps_order_and_jitter_comes_from_the_seed(self) -> None:
        protocol, transport, clock = connection(Faults(latency=0.1, jitter=0.05, seed=7))
        protocol.dataReceived(b"a")
        protocol.dataReceived(b"b")
        clock.advance(0.049)
        self.assertEqual(transport.value(), b"", "nothing before latency - jitter")
        clock.advance(1)
        self.assertEqual(transport.value(), b"<a><b>")
        delays = [FaultPlan(Faults(latency=0.1, jitter=0.05, seed=7)).delay() for _ in range(2)]
        again = [FaultPlan(Faults(latency=0.1, jitter=0.05, seed=7)).delay() for _ in range(2)]
        self.assertEqual(delays, again, "the same seed, the same delays")

    def test_bandwidth(self) -> None:
        protocol, transport, clock = connection(Faults(bandwidth=1000))
        protocol.dataReceived(b"x" * 998)  # a 1000-byte reply at 1000 B/s
        clock.advance(0.5)
        self.assertLess(len(transport.value()), 600)
        clock.advance(0.6)
        self.assertEqual(len(transport.value()), 1000)

    def test_slices(self) -> None:
        protocol, transport, clock = connection(Faults(slice=2, slice_delay=0.01))
        writes: list[bytes] = []
        transport.write = writes.append  # type: ignore[method-assign]
        protocol.dataReceived(b"abcd")
        clock.pump([0.01] * 5)
        self.assertEqual(writes, [b"<a", b"bc", b"d>"])

    def test_reset_and_half_close_after_bytes(self) -> None:
        protocol, transport, clock = connection(Faults(reset_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual((transport.value(), transport.disconnected), (b"<ab", True), "aborted")
        protocol, transport, clock = connection(Faults(half_close_after_bytes=3))
        protocol.dataReceived(b"abcd")
        clock.advance(0)
        self.assertEqual(transport.value(), b"<ab")
        self.assertEqual(
            (transport.write_closed, transport.disconnecting), (True, False), "a FIN, still reading"
        )

    def test_held_replies_are_bounded(self) -> None:
        """A client flooding a slow peer pauses itself, as a full write buffer would."""
        protocol, transport, clock = connection(Faults(latency=10))
        for _ in range(300):
            protocol.dataReceived(b"x" * 4096)
        self.assertEqual(transport.producerState, "paused", "reading stops past 1 MiB held")
        clock.advance(11)
        self.assertEqual(transport.producerState, "producing", "and resumes once they have gone")
        self.assertEqual(len(transport.value()), 300 * 4098)

    def test_a_flood_holds_at_most_the_stated_bound(self) -> None:
        # Cut into pieces as queued, one 64 KiB reply under slice=1 was 6.6 MiB.
        chunk = b"x" * 65536
        for faults in (Faults(slice=1, slice_delay=0.001), Faults(bandwidth=10)):
            tracemalloc.start()
            try:
                protocol, transport, _ = connection(faults)
                before = tracemalloc.get_traced_memory()[0]
                for _ in range(40):
                    if transport.producerState == "paused":
                        break
                    protocol.dataReceived(chunk)
                held = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            self.assertEqual(transport.producerState, "paused", faults)
            self.assertLess(held, HELD_BYTES + 3 * len(chunk), faults)

    def test_one_pass_sends_a_bounded_number_of_pieces(self) -> None:
        protocol, transport, clock = connection(Faults(slice=1))
        protocol.dataReceived(b"x" * 3000)
        [pump] = clock.getDelayedCalls()
        pump.func(*pump.args, **pump.kw)  # one pass, as the reactor runs it
        self.assertEqual(len(transport.value()), PIECES_PER_PASS, "then the reactor runs again")
        clock.advance(0)
        self.assertEqual(len(transport.value()), 3002)

    def test_no_piece_is_sent_while_the_transport_is_full(self) -> None:
        protocol, transport, clock = connection(Faults(slice=1))
        protocol.registerProducer(RecordingProducer(), True)  # as the guard does for the service
        transport.producer.pauseProducing()  # the transport's buffer is full
        protocol.dataReceived(b"abc")
        clock.advance(0)
        self.assertEqual(transport.value(), b"")
        transport.producer.resumeProducing()
        clock.advance(0)
        self.assertEqual(transport.value(), b"<abc>")

    def test_reset_after_time(self) -> None:
        _, transport, clock = connection(Faults(reset_after=2))
        clock.advance(1.9)
        self.assertFalse(transport.disconnected)
        clock.advance(0.2)
        self.assertTrue(transport.disconnected, "aborted")

    def test_a_slow_close_timer_goes_with_its_connection(self) -> None:
        protocol, _, clock = connection(Faults(slow_close=600))
        protocol.dataReceived(b"bye")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        protocol.connectionLost(None)  # the client left first
        self.assertEqual(clock.getDelayedCalls(), [], "no timer holds the dead transport for 600 s")

    def test_slow_close(self) -> None:
        protocol, transport, clock = connection(Faults(slow_close=3))
        protocol.dataReceived(b"bye")
        self.assertEqual(transport.value(), b"farewell")
        clock.advance(2.9)
        self.assertFalse(transport.disconnecting, "the close waits")
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_stall_answer_and_read(self) -> None:
        protocol, transport, _ = connection(Faults(stall="answer"))
        protocol.dataReceived(b"hi")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting, "no answer, and no close either")
        protocol, transport, _ = connection(Faults(stall="read"))
        self.assertEqual(transport.producerState, "paused")

    def test_refuse_never_builds_the_service_protocol(self) -> None:
        built: list[object] = []
        factory = FaultyFactory(
            Factory.forProtocol(lambda: built.append(1) or Answer()), FaultPlan(Faults(refuse=True))
        )
        protocol = factory.buildProtocol(None)
        transport = Transport()
        protocol.makeConnection(transport)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(built, [])

    def test_a_refused_connection_counts_its_descriptor_until_it_is_gone(self) -> None:
        factory = FaultyFactory(Factory.forProtocol(Answer), FaultPlan(Faults(refuse=True)))
        before = DESCRIPTORS.open
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(Transport())
        self.assertEqual(DESCRIPTORS.open, before + 1, "it holds a socket, as any refusal does")
        protocol.connectionLost(None)
        protocol.connectionLost(None)
        self.assertEqual(DESCRIPTORS.open, before, "released once")

    def test_fraction_is_seeded(self) -> None:
        def pattern() -> list[bool]:
            factory = FaultyFactory(
                Factory.forProtocol(Answer), FaultPlan(Faults(refuse=True, fraction=0.5, seed=11))
            )
            return [isinstance(factory.buildProtocol(None), FaultyConnection | Answer) for _ in range(40)]

        first = pattern()
        self.assertEqual(first, pattern(), "the same seed spares the same connections")
        self.assertTrue(0 < first.count(True) < 40, "some connections are spared, some are not")

    def test_no_faults_no_wrapper(self) -> None:
        factory = FaultyFactory(Factory.forProtocol(Answer), FaultPlan(Faults()))
        self.assertIsInstance(factory.buildProtocol(None), Answer)


def recv_all(sock: socket.socket, limit: int = 1 << 20) -> bytes:
    got = b""
    while len(got) < limit:
        data = sock.recv(65536)
        if not data:
            break
        got += data
    return got


class RealClientTests(TestCase):
    """Unmodified clients meet each fault, over loopback, in a thread (the reactor serves meanwhile)."""

    async def test_read_timeout_fails_on_2s_latency_and_passes_on_100ms(self) -> None:
        def ask(port: int) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                return sock.recv(100)

        slow = testing.greeter(self, faults=Faults(latency=2))
        with self.assertRaises(TimeoutError):
            await deferToThread(ask, slow.port)
        quick = testing.greeter(self, faults=Faults(latency=0.1))
        self.assertEqual(await deferToThread(ask, quick.port), b"Welcome!\r\n")

    async def test_asyncio_reader_sees_the_reset(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after_bytes=20))

        async def client() -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", peer.port)
            writer.write(b"Michael\n")
            got = b""
            try:
                while True:
                    data = await reader.read(100)
                    if not data:
                        return got
                    got += data
            finally:
                writer.close()

        with self.assertRaises(ConnectionResetError):
            await deferToThread(asyncio.run, client())

    async def test_socket_reader_sees_a_reset_after_a_time(self) -> None:
        peer = testing.greeter(self, faults=Faults(reset_after=0.3))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                recv_all(sock)

        with self.assertRaises(ConnectionResetError):
            await deferToThread(client)

    async def test_slow_close_keeps_the_connection_open_after_the_farewell(self) -> None:
        peer = testing.greeter(self, faults=Faults(slow_close=2))

        def client() -> tuple[bytes, bool, bytes]:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=10) as sock:
                sock.sendall(b"exit\n")
                got = b""
                while not got.endswith(b"Goodbye!\n"):
                    got += sock.recv(100)
                sock.settimeout(0.5)
                try:
                    still_open = sock.recv(100) != b""
                except TimeoutError:
                    still_open = True
                sock.settimeout(10)
                return got, still_open, recv_all(sock)

        got, still_open, rest = await deferToThread(client)
        self.assertEqual(got, b"Welcome!\r\nGoodbye!\n")
        self.assertTrue(still_open, "no FIN right after the farewell")
        self.assertEqual(rest, b"", "then the close")

    async def test_one_recv_per_message_breaks_under_slicing(self) -> None:
        peer = testing.greeter(self, banner="", faults=Faults(slice=3, slice_delay=0.02))

        def client() -> tuple[bytes, bytes]:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
                sock.sendall(b"Bob\n")
                first = sock.recv(100)
                time.sleep(0.2)
                return first, first + sock.recv(100)

        first, whole = await deferToThread(client)
        self.assertEqual(first, b"Hel", "one recv() is not one message")
        self.assertEqual(whole, b"Hello, Bob!\n", "reassembled, every byte is there")

    async def test_half_close_and_bandwidth_with_nc(self) -> None:
        if shutil.which("nc") is None:
            self.skipTest("nc is not installed (Debian: netcat-openbsd)")
        peer = testing.greeter(self, faults=Faults(half_close_after_bytes=10, bandwidth=64))

        def client() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(["nc", "-d", "127.0.0.1", str(peer.port)], capture_output=True, timeout=20)

        result = await deferToThread(client)
        self.assertEqual(result.stdout, b"Welcome!\r\n", "ten bytes at 64 B/s, then a FIN, and nc is done")

    async def test_echoapp_client_times_out_on_stall_answer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="answer"))
        args = ["echoapp-client", "tcp", "--connect", f"tcp:127.0.0.1:{peer.port}", "--timeout", "1", "hi"]
        result = await deferToThread(
            subprocess.run, args, capture_output=True, text=True, env=installed_env()
        )
        self.assertEqual(result.returncode, 4, result.stderr)

    async def test_stall_read_fills_the_clients_send_buffer(self) -> None:
        peer = testing.greeter(self, faults=Faults(stall="read"))

        def client() -> None:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as sock:
                sock.sendall(b"x" * (64 << 20))

        with self.assertRaises(TimeoutError):
            await deferToThread(client)
        [listener] = [child for child in peer.service if hasattr(child, "factory")]
        self.assertEqual(listener.factory.stats.bytes_in, 0, "the server read nothing of it")

    async def test_refuse_and_change_while_running(self) -> None:
        peer = testing.greeter(self)

        def banner() -> bytes:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as sock:
                return recv_all(sock, 10)

        self.assertEqual(await deferToThread(banner), b"Welcome!\r\n")
        peer.faults = Faults(refuse=True)
        self.assertEqual(await deferToThread(banner), b"", "accepted, then closed at once")

    async def test_tls_handshake_stalls(self) -> None:
        paths = make_certificates(self.mktemp() + "-certs")
        listen = f"ssl:0:interface=127.0.0.1:privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        peer = testing.greeter(self, listen=listen, faults=Faults(stall_handshake=True))

        def client() -> None:
            context = ssl.create_default_context(cafile=paths["ca.pem"])
            with socket.create_connection(("127.0.0.1", peer.port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="localhost"):
                    pass

        with self.assertRaises(TimeoutError):
            await deferToThread(client)

    async def test_udp_loss_duplication_reordering(self) -> None:
        def exchange(port: int, datagrams: list[bytes], expect: int) -> list[bytes]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.settimeout(0.5)
                for datagram in datagrams:
                    sock.sendto(datagram, ("127.0.0.1", port))
                replies = []
                try:
                    while len(replies) < expect + 1:
                        replies.append(sock.recvfrom(100)[0])
                except TimeoutError:
                    pass
                return replies

        lossy = testing.udp(self, faults=Faults(loss=1))
        self.assertEqual(await deferToThread(exchange, lossy.port, [b"a"], 1), [])
        doubled = testing.udp(self, faults=Faults(duplicate=1))
        self.assertEqual(await deferToThread(exchange, doubled.port, [b"a"], 2), [b"Hello, a!"] * 2)
        swapped = testing.udp(self, faults=Faults(reorder=1))
        self.assertEqual(
            await deferToThread(exchange, swapped.port, [b"a", b"b"], 2), [b"Hello, b!", b"Hello, a!"]
        )


class PluginOptionTests(SynchronousTestCase):
    def test_fault_option_seed_printed_and_errors_in_one_line(self) -> None:
        with testing.Process("echoapp-tcp", "--fault", "latency=10ms", "--fault", "seed=42") as server:
            with socket.create_connection((server.host, server.port), timeout=5) as sock:
                self.assertEqual(sock.recv(100), b"Welcome!\r\n")
        self.assertIn("faults: latency=10ms,seed=42 (seed=42)", server.output)
        self.assertEqual(server.seed, 42)
        result = subprocess.run(
            ["twistd", "-n", "--pidfile=", "echoapp-tcp", "--fault", "latency=fast"],
            capture_output=True,
            text=True,
            env=installed_env(),
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("--fault: fault latency: 'fast' is not a duration (like 50ms or 2s)", result.stderr)
        self.assertNotIn("Traceback", result.stderr + result.stdout)

    def test_without_faults_nothing_is_wrapped(self) -> None:
        from echoapp._tap import tcp

        options = tcp.Options()
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1"])
        self.assertIsNone(options["faults"], "the benchmarked path: no wrapper at all")
