"""
The batches' contract (L{echoapp._transports.datagram_batches}), kept alike
by the C accelerator (recvmmsg) and its Python twin on recvfrom: each test
runs on both, over real loopback sockets, IPv4 and IPv6.
"""

from __future__ import annotations

import errno
import functools
import select
import socket
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from echoapp._transports.datagram_batches import (
    BATCH,
    AcceleratedBatches,
    SocketBatches,
    batches,
    reader,
)
from tests.support import DEADLINE, use_udp_accelerator


class _Contract:
    """The tests; the two classes below say on which batches they run."""

    accelerated: bool
    family = socket.AF_INET
    host = "127.0.0.1"
    largest = 65507

    def setUp(self: Any) -> None:
        self.mmsg = use_udp_accelerator(self, self.accelerated)
        if self.family == socket.AF_INET6 and not socket.has_ipv6:
            self.skipTest("no IPv6 here")
        self.server = self.socket()
        self.server.setblocking(False)
        self.batches = batches(self.server)
        self.assertIsInstance(self.batches, AcceleratedBatches if self.accelerated else SocketBatches)

    def socket(self: Any) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        try:
            sock.bind((self.host, 0))
        except OSError as error:
            self.skipTest(f"cannot bind {self.host}: {error}")
        sock.settimeout(DEADLINE)
        return sock

    def arrived(self: Any, sock: socket.socket | None = None) -> None:
        """
        Wait (up to the deadline) until a datagram is queued, without taking
        it: loopback queues a datagram before C{sendto} returns, and those
        sent after it behind it; this only guards against a slow machine.
        """
        sock = sock or self.server
        sock.settimeout(DEADLINE)
        sock.recvfrom(1, socket.MSG_PEEK)
        sock.setblocking(False)

    def refused(self: Any, mine: Any) -> list[Any]:
        """Batches from C{mine} until one raises (the ICMP refusal arrived), up to the deadline."""
        got: list[Any] = []
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            got.extend(mine.recv(BATCH, 100))
        raise AssertionError(f"no error within the deadline; got {got}")

    def test_nothing_ready_is_an_empty_batch(self: Any) -> None:
        self.assertEqual(self.batches.recv(BATCH, 65535), [])

    def test_datagrams_in_order_with_recvfroms_addresses(self: Any) -> None:
        client = self.socket()
        for data in (b"one", b"", b"three\r\n"):
            client.sendto(data, self.server.getsockname())
        self.arrived()
        got = self.batches.recv(BATCH, 65535)
        client.sendto(b"by recvfrom", self.server.getsockname())
        self.arrived()
        _, reference = self.server.recvfrom(100)
        self.assertEqual(got, [(b"one", reference), (b"", reference), (b"three\r\n", reference)])
        self.assertEqual(len(reference), 2 if self.family == socket.AF_INET else 4)
        self.assertEqual(self.batches.recv(BATCH, 65535), [])

    def test_at_most_count_per_batch_the_rest_left_queued(self: Any) -> None:
        client = self.socket()
        for index in range(BATCH + 2):
            client.sendto(b"%d" % index, self.server.getsockname())
        self.arrived()
        first = self.batches.recv(BATCH, 100)
        second = self.batches.recv(BATCH, 100)
        self.assertEqual([data for data, _ in first + second], [b"%d" % i for i in range(BATCH + 2)])
        self.assertEqual((len(first), len(second)), (BATCH, 2))
        if self.accelerated:  # its buffers are for BATCH datagrams; the twin needs none
            self.assertRaises(ValueError, self.batches.recv, BATCH + 1, 100)

    def test_the_largest_datagram_whole_and_a_longer_read_cut_as_recvfrom_cuts(self: Any) -> None:
        client = self.socket()
        largest = bytes(range(256)) * (self.largest // 256) + b"z" * (self.largest % 256)
        client.sendto(largest, self.server.getsockname())
        client.sendto(b"0123456789", self.server.getsockname())
        self.arrived()
        got = self.batches.recv(BATCH, 65535)
        self.assertEqual([data for data, _ in got], [largest, b"0123456789"])
        client.sendto(b"0123456789", self.server.getsockname())
        self.arrived()
        self.assertEqual([data for data, _ in self.batches.recv(BATCH, 4)], [b"0123"])
        self.assertEqual(
            self.batches.recv(BATCH, 4), [], "the rest of a cut datagram is gone, as with recvfrom"
        )

    def test_an_error_before_any_datagram_is_raised(self: Any) -> None:
        client = self.socket()
        gone = self.socket()
        where = gone.getsockname()
        gone.close()
        client.setblocking(False)
        client.connect(where)  # a connected socket hears the ICMP "port unreachable"
        client.send(b"to nobody")
        mine = batches(client)
        self.assertRaises(ConnectionRefusedError, self.refused, mine)

    def test_an_error_and_datagrams_in_the_kernels_order(self: Any) -> None:
        """A pending error comes first (Linux reports it before what is queued), then the datagrams."""
        peer = self.socket()
        client = self.socket()
        client.setblocking(False)
        client.connect(peer.getsockname())
        peer.sendto(b"before", client.getsockname())
        self.arrived(client)
        peer.close()
        client.send(b"to a closed port")  # the refusal comes after "before" is queued
        mine = batches(client)
        self.assertRaises(ConnectionRefusedError, self.refused, mine)
        self.assertEqual([data for data, _ in mine.recv(BATCH, 100)], [b"before"])
        self.assertEqual(mine.recv(BATCH, 100), [])

    # What the UDP proxy asks of a socket beside batches, the same with the
    # accelerator and without: send_to sends a datagram as it is, and
    # reader reads a connected socket's next datagram, None when nothing
    # is ready, OSError for a refusal.

    def connected(self: Any, to: Any) -> socket.socket:
        sock = self.socket()
        sock.connect(to)
        sock.setblocking(False)
        return sock

    def test_send_to_sends_the_datagram_as_it_is(self: Any) -> None:
        client = self.connected(self.server.getsockname())
        for datagram in (b"", b"Bob\r\n", b"\r\n", bytes(range(256)) * 10, b"z" * self.largest):
            self.assertEqual(self.batches.send_to(datagram, client.getsockname()), len(datagram))
            client.settimeout(DEADLINE)
            self.assertEqual(client.recv(65535), datagram)

    def test_send_to_a_bad_address_is_a_clear_error(self: Any) -> None:
        port = self.server.getsockname()[1]
        for address in ("not a tuple", (self.host, 70000), (self.host + "\0junk", port)):
            self.assertRaises((TypeError, ValueError, OverflowError), self.batches.send_to, b"x", address)

    def test_reader_reads_one_datagram_and_none_when_nothing_is_ready(self: Any) -> None:
        client = self.connected(self.server.getsockname())
        read = reader(client, 65535)
        self.assertEqual(isinstance(read, functools.partial), self.accelerated)
        self.assertIsNone(read())
        self.server.sendto(b"one", client.getsockname())
        self.server.sendto(b"two\n", client.getsockname())
        self.arrived(client)
        self.assertEqual([read(), read(), read()], [b"one", b"two\n", None])

    def test_reader_raises_a_refusal(self: Any) -> None:
        """An upstream gone (ICMP port unreachable): the session learns it from its next read."""
        gone = self.socket()
        address = gone.getsockname()
        gone.close()
        sock = self.connected(address)
        read = reader(sock, 100)
        sock.send(b"anyone?")
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                self.assertIsNone(read())
            except ConnectionRefusedError:
                return
            time.sleep(0.001)
        self.fail("no refusal within the deadline")


class AcceleratedIPv4Tests(_Contract, SynchronousTestCase):
    accelerated = True


class PythonIPv4Tests(_Contract, SynchronousTestCase):
    accelerated = False


class AcceleratedIPv6Tests(_Contract, SynchronousTestCase):
    accelerated = True
    family = socket.AF_INET6
    host = "::1"
    largest = 65527


class PythonIPv6Tests(_Contract, SynchronousTestCase):
    accelerated = False
    family = socket.AF_INET6
    host = "::1"
    largest = 65527


class _Replies:
    """
    The accelerator's replier makes the greeter's reply exactly as
    C{udp.py} makes it in Python, over real loopback sockets.
    """

    family = socket.AF_INET
    host = "127.0.0.1"

    def setUp(self: Any) -> None:
        use_udp_accelerator(self, True)
        self.server = _Contract.socket(self)  # type: ignore[arg-type]
        self.client = _Contract.socket(self)  # type: ignore[arg-type]
        self.reply = batches(self.server).replier(b"Hello, ", b"!")

    def test_the_reply_is_the_python_rule(self: Any) -> None:
        for datagram in (b"", b"Bob", b"Bob\n", b"Bob\r\n", b"\r\n", b"a\n\r\n", b"in\rside\n", b"x" * 3000):
            message = datagram.rstrip(b"\r\n")
            expected = b"Hello, " + message + b"!" + datagram[len(message) :]
            sent = self.reply(datagram, self.client.getsockname())
            self.assertEqual((self.client.recvfrom(65535)[0], sent), (expected, len(expected)), datagram)

    def test_the_largest_reply_whole(self: Any) -> None:
        largest = 65507 if self.family == socket.AF_INET else 65527
        datagram = bytes(range(256)) * ((largest - 8) // 256) + b"z" * ((largest - 8) % 256)
        self.assertEqual(self.reply(datagram, self.client.getsockname()), largest)
        self.assertEqual(self.client.recvfrom(65535)[0], b"Hello, " + datagram + b"!")

    def test_each_reply_goes_to_its_own_host(self: Any) -> None:
        """The last host parsed is kept: a different one is parsed again."""
        other = socket.socket(self.family, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        try:
            other.bind(("127.0.0.2" if self.family == socket.AF_INET else "::1", 0))
        except OSError as error:
            self.skipTest(f"no second loopback address: {error}")
        other.settimeout(DEADLINE)
        for name in (b"a", b"b", b"c"):
            self.reply(name, self.client.getsockname())
            self.reply(name.upper(), other.getsockname())
        self.assertEqual(
            [self.client.recvfrom(100)[0] for _ in range(3)], [b"Hello, a!", b"Hello, b!", b"Hello, c!"]
        )
        self.assertEqual(
            [other.recvfrom(100)[0] for _ in range(3)], [b"Hello, A!", b"Hello, B!", b"Hello, C!"]
        )

    def test_a_bad_address_is_a_clear_error_and_nothing_is_resolved(self: Any) -> None:
        port = self.client.getsockname()[1]
        wrong_family = "127.0.0.1" if self.family == socket.AF_INET6 else "::1"
        for address, error in (
            ("not a tuple", TypeError),
            ((b"127.0.0.1", port), TypeError),
            ((self.host, port, 0), TypeError),
            ((self.host, 70000), OverflowError),
            ((self.host + "\0junk", port), ValueError),
            (("localhost", port), OSError),
            ((wrong_family, port), OSError),
        ):
            self.assertRaises(error, self.reply, b"x", address)
        self.assertEqual(self.reply(b"after", self.client.getsockname()), len(b"Hello, after!"))

    def test_a_refusal_of_the_kernel_is_an_os_error(self: Any) -> None:
        """A reply one byte over the largest datagram: C{EMSGSIZE}, as C{sendto} raises it."""
        largest = 65507 if self.family == socket.AF_INET else 65527
        with self.assertRaises(OSError) as caught:
            self.reply(b"x" * (largest - 8 + 1), self.client.getsockname())
        self.assertEqual(caught.exception.errno, errno.EMSGSIZE)


class AcceleratedIPv4ReplyTests(_Replies, SynchronousTestCase):
    def test_a_reply_goes_where_it_was_sent_even_if_the_cache_changes_under_it(self) -> None:
        """
        Releasing the host the cache held may run Python code that sends
        a reply of its own (and caches its host): the reply being sent
        still goes to its own address.
        """
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        try:
            other.bind(("127.0.0.2", 0))
        except OSError as error:
            self.skipTest(f"no second loopback address: {error}")
        other.settimeout(DEADLINE)
        reply = self.reply

        class Host(str):
            def __del__(self) -> None:
                reply(b"inner", ("127.0.0.2", other.getsockname()[1]))

        host = Host("127.0.0.1")
        reply(b"first", (host, self.client.getsockname()[1]))
        del host  # the cache holds it now, alone
        reply(b"outer", ("127.0.0.1", self.client.getsockname()[1]))
        self.assertEqual(
            [self.client.recvfrom(100)[0] for _ in range(2)], [b"Hello, first!", b"Hello, outer!"]
        )
        self.assertEqual(other.recvfrom(100)[0], b"Hello, inner!")

    def test_arguments_out_of_range_are_refused_not_cut(self) -> None:
        mmsg = use_udp_accelerator(self, True)
        fd = self.server.fileno()
        self.assertRaises(OverflowError, mmsg.recv_batch, 2**32 + fd, 1, 100)
        self.assertRaises(OverflowError, mmsg.recv_batch, fd, 1, 2**59 + 1)
        self.assertRaises(ValueError, mmsg.recv_batch, fd, 1, 65537)
        self.assertRaises(TypeError, mmsg.recv_batch, "x", 1, 100)
        self.assertRaises(
            OverflowError, mmsg.send_reply, fd, 2**32 + socket.AF_INET, b"", b"", b"x", ("127.0.0.1", 1)
        )


class ReentryTests(SynchronousTestCase):
    family = socket.AF_INET
    host = "127.0.0.1"

    def test_a_read_from_a_finalizer_does_not_change_the_batch_being_built(self) -> None:
        """
        Building C{recv_batch}'s result may run the garbage collector, and a
        finalizer may read a socket again (a proxy session's C{recv_one},
        into the same buffer, grown): the batch holds what its own socket
        gave.
        """
        import gc

        mmsg = use_udp_accelerator(self, True)
        server, other, sender = (_Contract.socket(self) for _ in range(3))  # type: ignore[arg-type]
        for sock in (server, other):
            sock.setblocking(False)
        mmsg.recv_batch(server.fileno(), 1, 100)  # the buffer: 100 bytes a datagram
        sender.sendto(b"the batch's own datagram", server.getsockname())
        sender.sendto(b"EVIL", other.getsockname())
        for sock in (server, other):
            select.select([sock], [], [], DEADLINE)
        read_again: list[Any] = []

        class Cycle:
            me: Any

            def __del__(self) -> None:
                read_again.append(mmsg.recv_one(other.fileno(), 60000))

        threshold, enabled = gc.get_threshold(), gc.isenabled()
        self.addCleanup(gc.set_threshold, *threshold)
        self.addCleanup(lambda: gc.enable() if enabled else gc.disable())
        gc.disable()
        gc.set_threshold(1)
        keep = [(i, -i) for i in range(5000)] + [[i] for i in range(5000)]  # free lists emptied
        cycle = Cycle()
        cycle.me = cycle
        del cycle
        gc.enable()
        got = mmsg.recv_batch(server.fileno(), 32, 100)
        gc.set_threshold(*threshold)
        self.assertEqual(read_again, [b"EVIL"], "the finalizer ran inside recv_batch")
        self.assertEqual([data for data, _ in got], [b"the batch's own datagram"])
        del keep


class AcceleratedIPv6ReplyTests(_Replies, SynchronousTestCase):
    family = socket.AF_INET6
    host = "::1"


class SelectionTests(SynchronousTestCase):
    """Which batches a socket gets."""

    def test_the_accelerator_only_on_real_udp_sockets(self) -> None:
        mmsg = use_udp_accelerator(self, True)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            self.assertIsInstance(batches(udp), AcceleratedBatches)
            self.assertIsInstance(batches(tcp, mmsg), SocketBatches)
            self.assertIsInstance(batches(_FakeSocket(), mmsg), SocketBatches)


class PythonTwinTests(SynchronousTestCase):
    def test_no_replier_without_the_accelerator(self) -> None:
        """The greeter then makes and sends each reply itself (udp.py)."""
        self.assertIsNone(SocketBatches(_FakeSocket()).replier(b"Hello, ", b"!"))

    def test_an_error_after_some_datagrams_is_raised_by_the_next_batch(self) -> None:
        """
        As C{recvmmsg} leaves it: the datagrams read before an error are
        a batch, and the error is the next batch's (an ICMP error may come
        between two C{recvfrom}s).
        """
        refused = ConnectionRefusedError(111, "refused")
        queued: list[Any] = [(b"a", ("127.0.0.1", 40000)), refused, (b"b", ("127.0.0.1", 40000))]

        def recvfrom(size: int) -> Any:
            if not queued:
                raise BlockingIOError
            item = queued.pop(0)
            if isinstance(item, OSError):
                raise item
            return item

        fake = _FakeSocket()
        fake.recvfrom = recvfrom  # type: ignore[method-assign]
        twin = SocketBatches(fake)
        self.assertEqual(twin.recv(BATCH, 100), [(b"a", ("127.0.0.1", 40000))])
        self.assertRaises(ConnectionRefusedError, twin.recv, BATCH, 100)
        self.assertEqual(twin.recv(BATCH, 100), [(b"b", ("127.0.0.1", 40000))])


class _FakeSocket:
    """Not a socket: only what the Python twin uses."""

    def recvfrom(self, size: int) -> Any:
        raise BlockingIOError
