import errno
import os
import random
import socket
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import services
from echoapp._protocols.udp import MAX_DATAGRAM, READ_BATCH, UDPGreeter
from echoapp._transports.datagram_batches import BATCH, AcceleratedBatches, SocketBatches
from echoapp.config import UDPLimits
from echoapp.template import ReplyTemplate
from tests.support import RecordingUDPTransport, forge_udp, start, use_udp_accelerator, wait_until


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

    def test_no_reply_to_a_source_that_is_no_host(self) -> None:
        """
        A datagram "from" a broadcast, multicast or unspecified address is
        forged: its answer would go to many hosts (or be refused by the
        kernel, a traceback in the log); it is dropped, counted as such,
        and takes no source's bucket.
        """
        protocol, transport = greeter(limits=UDPLimits(max_sources=2))
        forged = ["255.255.255.255", "224.0.0.1", "239.255.255.250", "0.0.0.0", "ff02::1", "::"]
        forged.append("::ffff:224.0.0.251")
        for host in forged:
            protocol.datagramReceived(b"amplify", (host, 40000))
        self.assertEqual(transport.written, [])
        self.assertEqual(protocol.stats.dropped["source"], len(forged))
        self.assertEqual(len(protocol.sources._buckets), 0)
        protocol.datagramReceived(b"fine", ("223.255.255.254", 40000))
        self.assertEqual(transport.written, [(b"Hello, fine!", ("223.255.255.254", 40000))])

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


class QueuedSocket:
    """A socket with datagrams queued: C{recvfrom} hands them out, then says "nothing more"."""

    def __init__(self, datagrams: list[tuple[bytes, Any]]) -> None:
        self.queued = list(datagrams)
        self.sent: list[tuple[bytes, Any]] = []

    def recvfrom(self, size: int) -> tuple[bytes, Any]:
        if not self.queued:
            raise BlockingIOError(errno.EAGAIN, "nothing more")
        item = self.queued.pop(0)
        if isinstance(item, OSError):
            raise item
        return item

    def sendto(self, data: bytes, addr: Any) -> int:
        self.sent.append((data, addr))
        return len(data)


class TricklingSocket(QueuedSocket):
    """
    A socket whose datagrams arrive in trickles: the next trickle arrives
    while the server answers (at the first reply after the queue ran
    empty), as clients answer the first replies of a wake-up.
    """

    def __init__(self, trickles: list[list[tuple[bytes, Any]]]) -> None:
        super().__init__(trickles[0])
        self.trickles = [list(trickle) for trickle in trickles[1:]]

    def sendto(self, data: bytes, addr: Any) -> int:
        if not self.queued and self.trickles:
            self.queued = self.trickles.pop(0)
        return super().sendto(data, addr)


class CountingClock(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def seconds(self) -> float:
        self.reads += 1
        return super().seconds()


def reading_greeter(
    sock: QueuedSocket,
    limits: UDPLimits | None = None,
    clock: Clock | None = None,
    template: str = "Hello, {}!",
) -> UDPGreeter:
    """A greeter that reads C{sock} itself, as it does on Twisted's own port."""
    protocol = UDPGreeter(ReplyTemplate.parse(template), limits, clock=clock or Clock())
    transport = RecordingUDPTransport()
    transport.getHandle = lambda: sock  # type: ignore[attr-defined]
    transport.maxPacketSize = 65535  # type: ignore[attr-defined]
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    protocol.read_from(sock)
    return protocol


class ReadReadyTests(SynchronousTestCase):
    """
    One wake-up, every datagram ready: the greeter reads and answers them in
    one frame (L{UDPGreeter.read_ready}), with the clock read once and the
    guards deciding each datagram exactly as L{UDPGreeter.datagramReceived}
    would at that time.
    """

    def test_twisteds_port_is_read_by_the_greeter_once_per_wake_up(self) -> None:
        from twisted.internet import reactor, udp

        clock = CountingClock()
        protocol = UDPGreeter(ReplyTemplate.parse("Hello, {}!"), clock=clock)
        port = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if not isinstance(port, udp.Port):
            self.skipTest("this reactor's UDP port is not Twisted's udp.Port")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.bind(("127.0.0.1", 0))
            client.settimeout(5)
            for name in (b"Ann", b"Bob\n", b"Cy"):
                client.sendto(name, ("127.0.0.1", port.getHost().port))
            reads = clock.reads
            port.doRead()  # one wake-up
            replies = [client.recvfrom(100)[0] for _ in range(3)]
        self.assertEqual(replies, [b"Hello, Ann!", b"Hello, Bob!\n", b"Hello, Cy!"])
        self.assertEqual(clock.reads - reads, 1, "the clock is read once per wake-up, not per datagram")
        self.assertEqual(
            (protocol.stats.answered, protocol.stats.bytes_in, protocol.stats.bytes_out), (3, 9, 33)
        )

    def test_a_wake_up_reads_a_bounded_batch(self) -> None:
        sock = QueuedSocket([(b"x", ("127.0.0.1", 40000))] * (READ_BATCH + 3))
        protocol = reading_greeter(sock, UDPLimits(rate=1e6, burst=10_000))
        protocol.read_ready()
        self.assertEqual((len(sock.sent), len(sock.queued)), (READ_BATCH, 3), "other events get their turn")
        protocol.read_ready()
        self.assertEqual(len(sock.sent), READ_BATCH + 3)

    def test_datagrams_that_arrive_while_answering_are_read_in_the_same_wake_up(self) -> None:
        """
        A batch that comes back short does not end the wake-up: what
        arrived while it was answered is read too, until the socket says
        "nothing more" (a return to the reactor costs far more than one
        receive call that finds nothing).
        """
        sock = TricklingSocket([[(b"Ann", ("127.0.0.1", 40000))], [(b"Bob", ("127.0.0.1", 40001))]])
        protocol = reading_greeter(sock)
        protocol.read_ready()
        self.assertEqual(
            sock.sent, [(b"Hello, Ann!", ("127.0.0.1", 40000)), (b"Hello, Bob!", ("127.0.0.1", 40001))]
        )

    def test_the_first_read_takes_one_and_every_later_one_all_that_are_ready(self) -> None:
        """
        The first read takes one datagram (answered at once: a client
        waiting on it is not held back by the rest); every later read of
        the wake-up asks for L{BATCH}, all that are ready, including after
        a short one (not one again, doubling: a receive call per two
        datagrams in a ping-pong).
        """
        sock = TricklingSocket([[(b"x", ("127.0.0.1", 40000))] * 100, [(b"y", ("127.0.0.1", 40000))] * 3])
        protocol = reading_greeter(sock, UDPLimits(rate=1e6, burst=10_000))
        assert protocol._batches is not None
        asked: list[int] = []
        recv = protocol._batches.recv

        def counting(count: int, size: int) -> list[tuple[bytes, Any]]:
            asked.append(count)
            return recv(count, size)

        protocol._batches.recv = counting  # type: ignore[method-assign]
        protocol.read_ready()
        self.assertEqual(len(sock.sent), 103)
        self.assertEqual(BATCH, 32)
        self.assertEqual(asked[:5], [1, 32, 32, 32, 32], "the last came back short: 100 = 97 + 3")
        self.assertEqual(asked[5:], [32, 32], "the trickle, then nothing more")

    def test_buckets_are_found_once_per_wake_up_not_per_batch(self) -> None:
        """
        A wake-up of several batches from one source takes that source's
        bucket and the global one out once each, and puts them back once
        (its time is one): a ping-pong wake-up reads two or three datagrams
        a batch, so per-batch bookkeeping was paid nearly per datagram.
        """
        source = ("127.0.0.1", 40000)
        sock = TricklingSocket([[(b"a", source)]] * 5 + [[(b"b", source)] * 3])
        protocol = reading_greeter(sock, UDPLimits(rate=1e6, burst=10_000))
        calls: list[str] = []
        for table, name in ((protocol.sources, "source"), (protocol.everyone, "global")):
            for method in ("take_out", "put_back"):
                original = getattr(table, method)

                def counted(*args: Any, _original: Any = original, _name: str = f"{name} {method}") -> Any:
                    calls.append(_name)
                    return _original(*args)

                setattr(table, method, counted)
        protocol.read_ready()
        self.assertEqual(len(sock.sent), 8)
        self.assertEqual(
            sorted(calls), ["global put_back", "global take_out", "source put_back", "source take_out"]
        )
        self.assertEqual(protocol.stats.answered, 8, "the counts are added once, all of them")
        self.assertEqual(protocol.sources.take_out("127.0.0.1", 0.0), 10_000 - 8)

    def test_guards_decide_as_one_datagram_at_a_time(self) -> None:
        """
        The same datagrams, through L{read_ready} in wake-ups of random size
        and one by one: the same replies, drops and rate tables, whatever
        the mix of sources, privileged and own ports, sizes and addresses.
        """
        rng = random.Random(30)
        limits = UDPLimits(rate=3, burst=4, global_rate=25, max_sources=3)
        hosts = [
            "127.0.0.1",
            "127.0.0.2",
            "10.0.0.7",
            "::ffff:127.0.0.2",
            "2001:db8::1",
            "2001:db8::2",
            "fe80::1",
            "224.0.0.1",  # forged sources, dropped between the others' runs
            "ff02::1",
            "::",  # in the same /64 as ::1: dropped all the same
            "::1",
        ]
        for trial in range(20):
            one_clock, batch_clock = Clock(), Clock()
            single, transport = greeter("<{}>", limits, one_clock)
            sock = QueuedSocket([])
            batched = reading_greeter(sock, limits, batch_clock, "<{}>")
            for _ in range(15):  # wake-ups
                arrivals = []
                for _ in range(rng.randrange(0, 12)):
                    host = rng.choice(hosts)
                    port = rng.choice([40000, 40001, 53, 0, 9999])
                    size = rng.choice([1, 5, MAX_DATAGRAM - 2, MAX_DATAGRAM + 3])
                    body = b"m" * size + rng.choice([b"", b"\n", b"\r\n"])
                    arrivals.append((body, (host, port, 0, 0) if ":" in host else (host, port)))
                for body, addr in arrivals:
                    single.datagramReceived(body, addr[:2])
                sock.queued = arrivals
                batched.read_ready()
                step = rng.choice([0, 0.1, 0.5, 2])
                one_clock.advance(step)
                batch_clock.advance(step)
            # The same replies to the same (host, port); the batch path keeps
            # the socket's whole IPv6 address (its scope id), Twisted's port
            # gives two items.
            sent = [(reply, addr[:2]) for reply, addr in sock.sent]
            self.assertEqual(sent, transport.written, f"trial {trial}")
            self.assertEqual(batched.stats.dropped, single.stats.dropped)
            self.assertEqual(
                (batched.stats.answered, batched.stats.bytes_in, batched.stats.bytes_out),
                (single.stats.answered, single.stats.bytes_in, single.stats.bytes_out),
            )
            # The same sources, least recently seen first, with the same tokens now.
            now = one_clock.seconds()
            self.assertEqual(list(batched.sources._buckets), list(single.sources._buckets))
            for table in (batched.sources._buckets, single.sources._buckets):
                for source, (tokens, then) in table.items():
                    table[source] = (min(limits.burst, tokens + (now - then) * limits.rate), now)
            for source, (tokens, _) in single.sources._buckets.items():
                self.assertAlmostEqual(batched.sources._buckets[source][0], tokens)
            self.assertAlmostEqual(batched.everyone.take_out(now), single.everyone.take_out(now))

    def test_an_error_is_counted_and_the_rest_answered(self) -> None:
        sock = QueuedSocket([(b"a", ("127.0.0.1", 40000)), (b"b", ("127.0.0.1", 40001))])
        sent = sock.sendto

        def broken_for_a(data: bytes, addr: Any) -> int:
            if data == b"Hello, a!":
                raise RuntimeError("boom")
            return sent(data, addr)

        sock.sendto = broken_for_a  # type: ignore[method-assign]
        protocol = reading_greeter(sock)
        protocol.read_ready()
        self.assertEqual(sock.sent, [(b"Hello, b!", ("127.0.0.1", 40001))])
        self.assertEqual((protocol.stats.dropped["error"], protocol.stats.answered), (1, 1))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_a_receive_error_is_left_to_twisteds_port(self) -> None:
        from twisted.internet import udp

        refused = ConnectionRefusedError(errno.ECONNREFUSED, "an ICMP error for an earlier reply")
        sock = QueuedSocket([refused, (b"after", ("127.0.0.1", 40000))])  # type: ignore[list-item]
        protocol = reading_greeter(sock)
        taken: list[object] = []
        self.patch(udp.Port, "doRead", lambda port: taken.append(port))
        protocol.read_ready()
        self.assertEqual(taken, [protocol.transport])
        self.assertEqual(sock.sent, [])

    def test_a_receive_error_on_the_loops_port_stops_it_once(self) -> None:
        """
        On the loop's own port there is no Twisted C{doRead} to hand the
        error to: a refusal is ignored, anything else is logged and the
        port stopped, and no exception reaches the loop's callback.
        """
        from twisted.internet.address import IPv4Address

        from echoapp._transports.native_udp import NativeDatagramPort

        refused = ConnectionRefusedError(errno.ECONNREFUSED, "an ICMP error for an earlier reply")
        broken = OSError(errno.EBADF, "bad file descriptor")
        sock = QueuedSocket([refused, (b"after", ("127.0.0.1", 40000)), broken])  # type: ignore[list-item]
        protocol = UDPGreeter(ReplyTemplate.parse("Hello, {}!"), clock=Clock())
        port = NativeDatagramPort(protocol, IPv4Address("UDP", "127.0.0.1", 5353))
        stopped: list[bool] = []
        port.stopListening = lambda: stopped.append(True)  # type: ignore[method-assign,assignment,return-value]
        port.maxPacketSize = 65535  # type: ignore[attr-defined]
        protocol.makeConnection(port)  # type: ignore[arg-type]
        protocol.read_from(sock)
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol.read_ready()
        self.assertEqual((sock.sent, stopped), ([], []), "a refusal ends the wake-up, nothing more")
        protocol.read_ready()
        self.assertEqual(sock.sent, [(b"Hello, after!", ("127.0.0.1", 40000))])
        self.assertEqual(stopped, [True])
        self.assertEqual([event["error"] for event in events if "error" in event], [broken])

    def test_a_full_send_buffer_is_a_buffer_drop(self) -> None:
        """
        A full buffer (EAGAIN, or ENOBUFS from a full device queue) drops
        the reply, counted as such, without trying again through the port
        (Twisted's would raise the same error, counted as a failure).
        """
        for full in (BlockingIOError(errno.EAGAIN, "full"), OSError(errno.ENOBUFS, "no buffer space")):
            sock = QueuedSocket([(b"a", ("127.0.0.1", 40000))])

            def refuse(data: bytes, addr: Any, full: OSError = full) -> int:
                raise full

            sock.sendto = refuse  # type: ignore[method-assign]
            protocol = reading_greeter(sock)
            protocol.transport.write = self.fail  # type: ignore[method-assign, assignment]
            protocol.read_ready()
            self.assertEqual((protocol.stats.answered, protocol.stats.dropped["buffer"]), (0, 1), full)
            self.assertEqual(protocol.stats.dropped["error"], 0)

    def test_an_ipv6_reply_keeps_the_scope_it_came_from(self) -> None:
        """
        A link-local client is reached through the interface its datagram
        came in on: the reply goes to the whole address the socket gave,
        scope id included, with the accelerator and without.
        """
        source = ("fe80::1", 40000, 0, 3)
        sock = QueuedSocket([(b"a", source), (b"b", source)])
        protocol = reading_greeter(sock)
        replied: list[Any] = []

        def reply_to(datagram: bytes, addr: Any) -> int:
            replied.append(addr)
            if datagram == b"b":
                raise OSError(errno.EINVAL, "made again in Python")
            return len(datagram)

        protocol._reply_to = reply_to
        protocol.read_ready()
        self.assertEqual(replied, [source, source])
        self.assertEqual(sock.sent, [(b"Hello, b!", source)])

    def test_a_full_buffer_under_the_accelerator_is_one_try(self) -> None:
        sock = QueuedSocket([(b"a", ("127.0.0.1", 40000))])
        sock.sendto = self.fail  # type: ignore[method-assign, assignment]
        protocol = reading_greeter(sock)

        def full(datagram: bytes, addr: Any) -> int:
            raise BlockingIOError(errno.EAGAIN, "full")

        protocol._reply_to = full
        protocol.transport.write = self.fail  # type: ignore[method-assign, assignment]
        protocol.read_ready()
        self.assertEqual((protocol.stats.answered, protocol.stats.dropped["buffer"]), (0, 1))

    def test_behind_a_wrapper_each_datagram_is_handed_over(self) -> None:
        """A wrapper (faults) sees every datagram: the greeter does not take over the port's reads."""
        from twisted.internet import reactor, udp
        from twisted.internet.protocol import DatagramProtocol

        greeter_ = UDPGreeter(clock=Clock())

        class Wrapper(DatagramProtocol):
            def startProtocol(self) -> None:
                greeter_.makeConnection(self.transport)

        port = reactor.listenUDP(0, Wrapper(), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        if not isinstance(port, udp.Port):
            self.skipTest("this reactor's UDP port is not Twisted's udp.Port")
        self.assertNotIn("doRead", vars(port))


class _GuardsOverLoopback:
    """
    Every guard over real loopback sockets, through the service as twistd
    runs it (Twisted's own UDP port, or uvloop's loop under
    C{--reactor=uvloop}), its socket read and answered by the C accelerator
    (recvmmsg) or by its Python twin: the same replies, drops and
    counts, written out, for both.  The greeter's clock is stopped once it
    listens, so that no bucket refills while the test runs.
    """

    accelerated: bool

    def setUp(self: Any) -> None:
        use_udp_accelerator(self, self.accelerated)

    async def serve(self: Any, limits: UDPLimits, *listen: str) -> list[Any]:
        ports = start(self, services.udp_greeter(listen, limits=limits))
        greeters = [port.protocol for port in ports]
        await wait_until(lambda: all(greeter._batches is not None for greeter in greeters), "listening")
        for greeter in greeters:
            frozen = greeter.clock.seconds()
            greeter._seconds = lambda frozen=frozen: frozen
            self.assertIsInstance(greeter._batches, AcceleratedBatches if self.accelerated else SocketBatches)
        return ports

    def client(self: Any, host: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind((host, 0))
        return sock

    async def exchange(
        self: Any, greeter: UDPGreeter, sends: list[tuple[socket.socket, bytes]], to: Any
    ) -> None:
        """Send each datagram in order, then wait until the greeter has answered or dropped them all."""
        stats = greeter.stats
        seen = stats.answered + sum(stats.dropped.values())
        for sock, datagram in sends:
            sock.sendto(datagram, to)
        await wait_until(
            lambda: stats.answered + sum(stats.dropped.values()) >= seen + len(sends), "all handled"
        )

    def replies(self: Any, sock: socket.socket) -> list[bytes]:
        sock.setblocking(False)
        got = []
        while True:
            try:
                got.append(sock.recv(70000))
            except BlockingIOError:
                return got

    async def test_every_guard_over_ipv4(self: Any) -> None:
        first, second = await self.serve(
            UDPLimits(rate=1, burst=3, global_rate=7),
            "udp:0:interface=127.0.0.1",
            "udp:0:interface=127.0.0.1",
        )
        greeter, to = first.protocol, ("127.0.0.1", first.getHost().port)
        a, b, c = (self.client(f"127.0.0.{n}") for n in (1, 2, 3))
        # Per source: 3 of a's 5; b's largest datagram has no room for the
        # reply (its token spent all the same); 65,499 bytes make a reply of
        # 65,507, the most IPv4 carries; c's second is over the total of 7.
        await self.exchange(greeter, [(a, b"a%d\n" % n) for n in range(5)], to)
        await self.exchange(greeter, [(b, b"x" * MAX_DATAGRAM)], to)
        await self.exchange(
            greeter, [(b, b"y" * (MAX_DATAGRAM - 8)), (b, b"b\r\n"), (c, b"c1"), (c, b"c2")], to
        )
        second.write(b"a loop", to)  # from another port of the service's own
        await wait_until(lambda: greeter.stats.dropped["port"] == 1, "the loop dropped")
        if os.geteuid() == 0:
            low = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.addCleanup(low.close)
            low.bind(("127.0.0.1", 1000 + os.getpid() % 23))
            await self.exchange(greeter, [(low, b"storm")], to)
            self.assertEqual(self.replies(low), [])
        self.assertEqual(self.replies(a), [b"Hello, a0!\n", b"Hello, a1!\n", b"Hello, a2!\n"])
        self.assertEqual(self.replies(b), [b"Hello, " + b"y" * (MAX_DATAGRAM - 8) + b"!", b"Hello, b!\r\n"])
        self.assertEqual(self.replies(c), [b"Hello, c1!"])
        stats = greeter.stats
        self.assertEqual((stats.answered, stats.bytes_in, stats.bytes_out), (6, 65513, 65513 + 6 * 8))
        ports = 2 if os.geteuid() == 0 else 1
        self.assertEqual({k: v for k, v in stats.dropped.items() if v}, {"rate": 3, "size": 1, "port": ports})

    async def test_a_forged_source_that_is_no_host_gets_no_reply(self: Any) -> None:
        """
        Datagrams forged "from" the broadcast address (a reply to it is a
        send the kernel refuses: it was a traceback in the log), a
        multicast group (a reply to every member) and "this network"
        (0.0.0.0/8; a raw socket's 0.0.0.0 itself is filled in) are dropped
        unanswered, counted, and not logged one by one; a real client's
        datagram after them is answered.
        """
        [port] = await self.serve(UDPLimits(), "udp:0:interface=127.0.0.1")
        greeter, number = port.protocol, port.getHost().port
        # 127.255.255.255: loopback's own broadcast address, which only the kernel's refusal tells.
        for source in ("255.255.255.255", "224.0.0.1", "0.1.2.3", "127.255.255.255"):
            forge_udp(self, source, number, b"amplify me\n")
        await wait_until(lambda: greeter.stats.dropped["source"] == 4, "the forged datagrams dropped")
        client = self.client("127.0.0.1")
        await self.exchange(greeter, [(client, b"real\n")], ("127.0.0.1", number))
        self.assertEqual(self.replies(client), [b"Hello, real!\n"])
        stats = greeter.stats
        self.assertEqual((stats.answered, {k: v for k, v in stats.dropped.items() if v}), (1, {"source": 4}))

    async def test_every_size_over_ipv6(self: Any) -> None:
        if not socket.has_ipv6:
            self.skipTest("no IPv6 here")
        try:
            [port] = await self.serve(UDPLimits(rate=1, burst=4), "udp:0:interface=::1")
        except SystemExit as error:
            self.skipTest(f"no ::1 here: {error}")
        greeter, six = port.protocol, self.client("::1")
        largest = 65527 - 8  # IPv6 carries 65,527 bytes of UDP payload
        await self.exchange(greeter, [(six, b"y" * largest)], ("::1", port.getHost().port))
        await self.exchange(greeter, [(six, b"x" * (largest + 1))], ("::1", port.getHost().port))
        await self.exchange(greeter, [(six, b"six\n")] * 3, ("::1", port.getHost().port))
        self.assertEqual(
            self.replies(six), [b"Hello, " + b"y" * largest + b"!", b"Hello, six!\n", b"Hello, six!\n"]
        )
        stats = greeter.stats
        self.assertEqual(
            (stats.answered, stats.bytes_in, stats.bytes_out), (3, largest + 8, largest + 8 + 3 * 8)
        )
        self.assertEqual({k: v for k, v in stats.dropped.items() if v}, {"rate": 1, "size": 1})


class AcceleratedGuardsTests(_GuardsOverLoopback, TestCase):
    accelerated = True


class PythonGuardsTests(_GuardsOverLoopback, TestCase):
    accelerated = False
