"""
The shared poll (L{echoapp._transports.polled}): echoapp's stream
connections on Twisted's own reactors are one reader of the reactor, each
event handled by Twisted's rules and in the log context Twisted gives it.
"""

from __future__ import annotations

import gc
import os
import socket
import weakref
from typing import Any

from twisted.internet import error
from twisted.internet.interfaces import IHalfCloseableDescriptor, IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import globalLogPublisher
from twisted.python import context
from twisted.python.failure import Failure
from twisted.python.log import ILogContext
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echoapp._transports import eager
from echoapp._transports.polled import Polled, SharedPoll, polled
from echoapp._twisted import global_reactor
from tests.support import DEADLINE, connect_tcp, wait_until, watched


class Descriptor:
    """One end of a socket pair as a reactor's descriptor: what it was told, in order."""

    def __init__(self, test: SynchronousTestCase, prefix: str = "one", read: Any = None) -> None:
        self.sock, self.peer = socket.socketpair()
        test.addCleanup(self.sock.close)
        test.addCleanup(self.peer.close)
        self.sock.setblocking(False)
        self.prefix = prefix
        self.read = read
        self.told: list[Any] = []

    def fileno(self) -> int:
        return self.sock.fileno()

    def logPrefix(self) -> str:
        return self.prefix

    def doRead(self) -> Any:
        data = self.sock.recv(100)
        self.told.append(("read", data, context.get(ILogContext)["system"]))
        if self.read is not None:
            return self.read()
        return None if data else error.ConnectionDone()

    def doWrite(self) -> Any:
        self.told.append(("write",))
        return None

    def connectionLost(self, reason: Failure) -> None:
        self.told.append(("lost", reason.type))


@implementer(IHalfCloseableDescriptor)
class HalfClosing(Descriptor):
    def readConnectionLost(self, reason: Failure) -> None:
        self.told.append(("read lost", reason.type))

    def writeConnectionLost(self, reason: Failure) -> None:
        self.told.append(("write lost", reason.type))


class SharedPollTests(SynchronousTestCase):
    """L{SharedPoll} over a L{MemoryReactor}, with socket pairs as its descriptors."""

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.on = polled(self.reactor)
        self.poll = self.on.poll

    def test_one_reader_while_it_has_descriptors(self) -> None:
        first, second = Descriptor(self), Descriptor(self)
        self.on.addReader(first)
        self.on.addReader(second)
        self.on.addWriter(second)
        self.assertEqual(self.reactor.getReaders(), [self.poll])
        self.assertEqual(set(self.on.getReaders()), {first, second})
        self.assertEqual(self.on.getWriters(), [second])
        self.on.removeReader(first)
        self.on.removeReader(second)
        self.assertEqual(self.reactor.getReaders(), [self.poll], "second is still watched for writing")
        self.on.removeWriter(second)
        self.assertEqual(self.reactor.getReaders(), [], "nothing left behind")

    def test_one_pass_handles_every_ready_descriptor_in_its_own_log_context(self) -> None:
        first, second = Descriptor(self, "first"), Descriptor(self, "second")
        for each in (first, second):
            self.on.addReader(each)
            each.peer.send(b"x")
        outside = context.get(ILogContext)
        self.poll.doRead()
        self.assertEqual(
            sorted(first.told + second.told), [("read", b"x", "first"), ("read", b"x", "second")]
        )
        self.assertIs(context.get(ILogContext), outside, "the pass's context ends with it")

    def test_a_read_before_a_write(self) -> None:
        one = Descriptor(self)
        self.on.addReader(one)
        self.on.addWriter(one)
        one.peer.send(b"x")
        self.poll.doRead()
        self.assertEqual(one.told, [("read", b"x", "one"), ("write",)])

    def test_the_end_of_reading_half_closes_where_it_can(self) -> None:
        half, whole = HalfClosing(self), Descriptor(self)
        for each in (half, whole):
            self.on.addReader(each)
            self.on.addWriter(each)
            each.peer.shutdown(socket.SHUT_WR)
        self.poll.doRead()
        self.assertEqual(half.told, [("read", b"", "one"), ("read lost", error.ConnectionDone)])
        self.assertEqual(whole.told, [("read", b"", "one"), ("lost", error.ConnectionDone)])
        self.assertEqual(self.on.getReaders(), [])
        self.assertEqual(self.on.getWriters(), [half], "the half-closed one still writes")

    def test_a_hang_up_is_lost_unless_it_was_reading(self) -> None:
        one = Descriptor(self)
        self.on.addWriter(one)
        one.peer.close()
        self.poll.doRead()
        self.assertEqual(one.told[-1], ("lost", error.ConnectionLost))
        self.assertEqual(self.reactor.getReaders(), [])

    def test_a_failure_is_logged_and_loses_that_one_alone(self) -> None:
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broken = Descriptor(self, read=lambda: 1 / 0)
        fine = Descriptor(self)
        for each in (broken, fine):
            self.on.addReader(each)
            each.peer.send(b"x")
        self.poll.doRead()
        self.assertEqual(broken.told[-1], ("lost", ZeroDivisionError))
        self.assertEqual(fine.told, [("read", b"x", "one")])
        self.assertEqual(self.on.getReaders(), [fine])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual([event.get("log_system", event.get("system")) for event in events], ["one"])

    def test_dropped_by_the_reactor_each_is_told(self) -> None:
        """A shutdown's C{disconnectAll} drops the poll: its descriptors are lost, as the reactor's are."""
        first, second = Descriptor(self), Descriptor(self)
        self.on.addReader(first)
        self.on.addWriter(second)
        # What a reactor's removeAll returns (MemoryReactor's returns None before Twisted 26.10).
        dropped = set(self.reactor.getReaders() + self.reactor.getWriters())
        self.reactor.removeAll()
        for each in dropped:
            each.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(first.told, [("lost", error.ConnectionLost)])
        self.assertEqual(second.told, [("lost", error.ConnectionLost)])
        self.assertEqual(self.on.getReaders() + self.on.getWriters(), [])

    def test_taken_away_it_forgets_and_comes_back_with_the_next_descriptor(self) -> None:
        """
        A test's janitor removes every reader: the next test's connection is
        polled, and the dirty test's are forgotten, as the reactor forgets
        its own (served on, they made the next test fail too).
        """
        left = Descriptor(self, "left")
        self.on.addReader(left)
        self.reactor.removeAll()
        new = Descriptor(self, "new")
        self.on.addReader(new)
        self.assertEqual(self.reactor.getReaders(), [self.poll])
        self.assertEqual(self.on.getReaders(), [new])
        for each in (left, new):
            each.peer.send(b"x")
        self.poll.doRead()
        self.assertEqual(left.told, [])
        self.assertEqual(new.told, [("read", b"x", "new")])

    def test_nothing_leaves_the_pass(self) -> None:
        """
        Anything raised while one descriptor is lost (a C{BaseException}
        too) is logged under its prefix, as C{callWithLogger} does; out of
        the pass, it would lose every descriptor on the poll.
        """

        class Stop(BaseException):
            pass

        def stop(reason: Failure) -> None:
            raise Stop()

        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        broken, fine = Descriptor(self, "broken"), Descriptor(self, "fine")
        broken.connectionLost = stop  # type: ignore[method-assign]
        for each in (broken, fine):
            self.on.addReader(each)
        broken.peer.close()
        fine.peer.send(b"x")
        self.poll.doRead()
        self.assertEqual(fine.told, [("read", b"x", "fine")])
        self.assertEqual(self.on.getReaders(), [fine])
        self.assertEqual(self.reactor.getReaders(), [self.poll])
        self.assertEqual(len(self.flushLoggedErrors(Stop)), 1)
        self.assertEqual([event.get("log_system", event.get("system")) for event in events], ["broken"])

    def test_a_reactor_that_goes_takes_its_poll(self) -> None:
        """Each test's reactor gets a poll: it must not keep the reactor (and its descriptors) for ever."""
        reactor = MemoryReactor()
        poll = polled(reactor).poll
        poll.add(Descriptor(self), poll._reads, poll._writes, 1, 4)
        gone = weakref.ref(reactor)
        epoll = weakref.ref(poll)
        del reactor, poll
        gc.collect()
        self.assertIsNone(gone())
        self.assertIsNone(epoll())

    def test_closed_behind_its_back(self) -> None:
        """
        A socket closed while still watched, its description kept open by a
        duplicate: epoll would report it for ever under a gone number (a
        busy loop).  The poll starts afresh and the others are still served.
        """
        gone, kept = Descriptor(self), Descriptor(self)
        self.on.addReader(gone)
        self.on.addReader(kept)
        duplicate = os.dup(gone.sock.fileno())
        self.addCleanup(os.close, duplicate)
        number = gone.sock.fileno()
        gone.sock.close()
        gone.fileno = lambda: number  # type: ignore[method-assign]
        self.on.removeReader(gone)
        self.assertEqual(self.on.getReaders(), [kept])
        self.assertEqual(self.reactor.getReaders(), [self.poll])
        gone.peer.send(b"stale")
        kept.peer.send(b"x")
        self.poll.doRead()
        self.assertEqual(kept.told, [("read", b"x", "one")])
        self.assertEqual(gone.told, [])

    def test_one_per_reactor(self) -> None:
        self.assertIs(polled(self.reactor), self.on)
        self.assertIs(polled(self.on), self.on)
        self.assertIsInstance(self.on, Polled)
        self.assertIsInstance(self.poll, SharedPoll)
        self.assertEqual(self.on.connectTCP, self.reactor.connectTCP, "everything else is the reactor's")


class Echo(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]


class Client(Protocol):
    def __init__(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data


class ListenerTests(TestCase):
    """echoapp's eager listeners on the running reactor put their connections on its shared poll."""

    async def test_connections_are_one_reader_of_the_reactor_and_leave_nothing(self) -> None:
        reactor = self.on_twisteds_reactor()
        port = eager.EagerListening(reactor).listenTCP(0, Factory.forProtocol(Echo), interface="127.0.0.1")
        clients = [Client() for _ in range(3)]
        for index, client in enumerate(clients):
            await connect_tcp(port.getHost().port, client)
            client.transport.write(b"%d" % index)  # type: ignore[union-attr]
        await wait_until(lambda: [client.received for client in clients] == [b"0", b"1", b"2"], "every echo")
        shared = polled(reactor).poll
        servers = [each for each in polled(reactor).getReaders() if each not in reactor.getReaders()]
        self.assertEqual(len(servers), 4, "the port and the three connections are on the shared poll")
        self.assertTrue(all(watched(server) for server in servers))
        self.assertIn(shared, reactor.getReaders())
        for client in clients:
            client.transport.loseConnection()  # type: ignore[union-attr]
        await port.stopListening()
        await wait_until(lambda: shared not in reactor.getReaders(), "the shared poll to leave the reactor")

    def on_twisteds_reactor(self) -> Any:
        """The running reactor, if echoapp's listeners put their connections on its shared poll."""
        reactor = global_reactor()
        if polled(reactor) is reactor or not isinstance(eager.eager_reactor(reactor), eager.EagerListening):
            raise self.skipTest("echoapp's listeners use the loop's own transports on this reactor")
        return reactor

    async def test_pause_resume_and_a_full_send_buffer(self) -> None:
        """
        Through the poll's four calls: a paused transport reads nothing
        until resumed; bytes the kernel cannot take wait for writability,
        and the writer goes once they have left.
        """
        reactor = self.on_twisteds_reactor()
        made: list[Client] = []

        class Kept(Client):
            def connectionMade(self) -> None:
                made.append(self)

        port = eager.EagerListening(reactor).listenTCP(0, Factory.forProtocol(Kept), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        peer = socket.create_connection(("127.0.0.1", port.getHost().port))
        self.addCleanup(peer.close)
        await wait_until(lambda: made, "the connection")
        transport: Any = made[0].transport
        transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        transport.pauseProducing()
        self.assertFalse(watched(transport))
        peer.sendall(b"while paused")
        transport.resumeProducing()
        self.assertTrue(watched(transport))
        await wait_until(lambda: made[0].received == b"while paused", "the bytes, once resumed")
        blob = bytes(range(256)) * 8192  # 2 MiB: more than the send buffers hold
        transport.write(blob)
        self.assertTrue(watched(transport, writing=True))
        peer.setblocking(False)
        got = bytearray()

        def drained() -> bool:
            try:
                got.extend(peer.recv(1 << 16))
            except BlockingIOError:
                pass
            return len(got) >= len(blob)

        await wait_until(drained, "every byte")
        self.assertTrue(got == blob)
        await wait_until(lambda: not watched(transport, writing=True), "the writer to go once drained")

    async def test_the_proxys_upstream_side(self) -> None:
        """
        C{connectTCP} of the proxy's upstream side: a refused connection
        fails as Twisted's does, a half-close from the upstream reaches the
        protocol, and the poll is left empty.
        """
        from twisted.internet.protocol import ClientFactory

        from echoapp._proxy.forward import EagerConnecting

        reactor = self.on_twisteds_reactor()
        poll = polled(reactor).poll

        @implementer(IHalfCloseableProtocol)
        class Upstream(Client):
            def readConnectionLost(self) -> None:
                self.transport.write(b"bye")  # type: ignore[union-attr]
                self.transport.loseConnection()  # type: ignore[union-attr]

            def writeConnectionLost(self) -> None:
                pass

        class Connecting(ClientFactory):
            protocol = Upstream

            def __init__(self) -> None:
                self.ended: list[type] = []

            def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
                self.ended.append(reason.type)  # type: ignore[arg-type]

            def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
                self.ended.append(reason.type)  # type: ignore[arg-type]

        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
        closed.close()
        factory = Connecting()
        EagerConnecting(reactor).connectTCP("127.0.0.1", refused, factory)
        await wait_until(lambda: factory.ended, "the refusal")
        self.assertEqual(factory.ended, [error.ConnectionRefusedError])

        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        factory = Connecting()
        EagerConnecting(reactor).connectTCP("127.0.0.1", server.getsockname()[1], factory)
        accepted: list[socket.socket] = []

        def accept() -> bool:
            try:
                accepted.append(server.accept()[0])
            except BlockingIOError:
                pass
            return bool(accepted)

        await wait_until(accept, "the upstream connection")
        upstream = accepted[0]
        self.addCleanup(upstream.close)
        upstream.sendall(b"data")
        upstream.shutdown(socket.SHUT_WR)
        await wait_until(lambda: factory.ended, "the close")
        self.assertEqual(factory.ended, [error.ConnectionDone])
        upstream.settimeout(DEADLINE)
        self.assertEqual(upstream.recv(10), b"bye", "written after the upstream's half-close")
        await wait_until(lambda: poll not in reactor.getReaders(), "the poll to be left empty")
