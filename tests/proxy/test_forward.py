"""
echoapp-proxy's forwarding over loopback, against real upstreams: every
byte both ways, half-close passed through, resets passed on, backpressure
both ways, and the limits of the other TCP services.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from functools import partial
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.error import ConnectingCancelledError, NoProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor, MemoryReactorClock, StringTransport
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from echoapp import testing
from echoapp._faults import reset
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._proxy.forward import ProxyFactory, TCPUpstream, upstream_endpoint
from echoapp._transports.native_tcp import NativeConnection
from echoapp._twisted import asyncio_loop
from tests.support import (
    DEADLINE,
    LOOP,
    FloodClient,
    Recording,
    buffered,
    connect_tcp,
    free_port,
    make_certificates,
    recv_until_closed,
    wait_until,
    watched,
)


def exchange(port: int, payload: bytes, half_close: bool = True) -> bytes:
    """Send C{payload}, shut down the write side, read until the proxy closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


def reset_seen(port: int, payload: bytes = b"x") -> str:
    """What a client sees: C{reset} for ECONNRESET, else the bytes it got before a clean close."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(payload)
            got = recv_until_closed(sock)
    except ConnectionResetError:  # in connect too: the proxy may reset before the client's connect returns
        return "reset"
    return f"closed after {got!r}"


@implementer(IHalfCloseableProtocol)
class AnswersAfterFin(Protocol):
    """An upstream that answers only once the client has finished sending (as HTTP/1.0 or nc -N do)."""

    def connectionMade(self) -> None:
        self.received = b""

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def readConnectionLost(self) -> None:
        self.transport.write(b"got %d bytes" % len(self.received))  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class ResetsOnData(Protocol):
    """An upstream that resets the connection when the first bytes arrive."""

    def dataReceived(self, data: bytes) -> None:
        reset(self.transport)


async def listen(test: TestCase, protocol: type[Protocol]) -> int:
    port = await serverFromString(reactor, LOOP).listen(Factory.forProtocol(protocol))
    test.addCleanup(port.stopListening)
    return int(port.getHost().port)


class ForwardingTests(TestCase):
    def echo_proxy(self, **options: Any) -> testing.ProxyPeer:
        echo = testing.echo(self)
        return testing.proxy(self, upstream=f"127.0.0.1:{echo.port}", **options)

    async def test_every_byte_both_ways(self) -> None:
        peer = self.echo_proxy()
        payload = bytes(range(256)) * 4096  # 1 MiB: many reads and writes each way
        got = await deferToThread(exchange, peer.port, payload)
        self.assertTrue(got == payload, f"{len(got)} of {len(payload)} bytes came back")

    async def test_half_close_reaches_the_upstream_and_its_answer_comes_back(self) -> None:
        upstream = await listen(self, AnswersAfterFin)
        peer = testing.proxy(self, upstream=f"tcp:127.0.0.1:{upstream}")
        got = await deferToThread(exchange, peer.port, b"a" * 100_000)
        self.assertEqual(got, b"got 100000 bytes")

    async def test_refused_upstream_is_a_reset(self) -> None:
        peer = testing.proxy(self, upstream=f"127.0.0.1:{free_port()}")
        self.assertEqual(await deferToThread(reset_seen, peer.port), "reset")

    async def test_upstream_reset_is_a_reset(self) -> None:
        upstream = await listen(self, ResetsOnData)
        peer = testing.proxy(self, upstream=f"127.0.0.1:{upstream}")
        self.assertEqual(await deferToThread(reset_seen, peer.port), "reset")

    async def flood(self, endpoint: Any, native: bool) -> None:
        """
        The client floods and does not read: the echo upstream's replies
        fill the client's side, which pauses reading from the upstream,
        whose echo then stops, which pauses reading from the client.  The
        proxy then holds about a write buffer each way, not the flood.
        """
        recording = Recording(ProxyFactory(endpoint))
        port = await serverFromString(reactor, LOOP).listen(recording)
        self.addCleanup(port.stopListening)
        payload = b"z" * (32 << 20)
        client = FloodClient(payload, len(payload))
        await connect_tcp(port.getHost().port, client)
        await wait_until(lambda: recording.protocols and recording.protocols[0].upstream, "the upstream")
        side: Any = recording.protocols[0]
        up = side.upstream.transport
        self.assertEqual(isinstance(up, NativeConnection), native)
        await wait_until(lambda: not watched(side.transport) and not watched(up), "the proxy to stop reading")
        held = up.unsent() if native else buffered(up)
        self.assertLess(buffered(side.transport) + held, 8 << 20)
        self.assertLess(side.stats.bytes_in, len(payload), "the proxy stopped reading before the flood ended")
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await client.done
        self.assertTrue(client.data == payload, "every byte, in order")
        client.transport.loseConnection()  # type: ignore[union-attr]

    async def test_backpressure_both_ways(self) -> None:
        echo = testing.echo(self)
        await self.flood(TCP4ClientEndpoint(reactor, "127.0.0.1", echo.port), native=False)

    async def test_backpressure_through_the_loops_own_upstream(self) -> None:
        """The upstream connected by the loop (uvloop) pauses and resumes as Twisted's does."""
        if asyncio_loop(reactor) is None:
            raise self.skipTest("the reactor has no asyncio loop (run trial --reactor=uvloop)")
        echo = testing.echo(self)
        await self.flood(upstream_endpoint(reactor, f"127.0.0.1:{echo.port}"), native=True)

    async def test_on_an_asyncio_reactor_the_upstream_is_the_loops_own(self) -> None:
        """uvloop: both sides on the loop's C transports; elsewhere Twisted's own TCP client."""
        peer = self.echo_proxy()
        held = socket.create_connection(("127.0.0.1", peer.port), timeout=DEADLINE)
        self.addCleanup(held.close)
        held.sendall(b"hi")
        self.assertEqual(await deferToThread(held.recv, 2), b"hi")
        [side] = list(peer._proxy.connections.live)  # type: ignore[attr-defined]
        upstream = side.upstream.transport
        while hasattr(upstream, "wrappedProtocol") or hasattr(upstream, "transport"):
            upstream = getattr(upstream, "transport", upstream)
        native = isinstance(upstream, NativeConnection)
        self.assertEqual(native, asyncio_loop(reactor) is not None, repr(upstream))

    async def test_nothing_sits_between_the_upstream_transport_and_the_proxy(self) -> None:
        """
        On Twisted's reactors the upstream's TCP transport delivers each
        chunk to the proxy's side (or the fault wrapper in front of it),
        not through a client endpoint's wrapper: one call less per chunk.
        """
        if asyncio_loop(reactor) is not None:
            raise self.skipTest("uvloop: the loop's own transport (the test above)")
        echo = testing.echo(self)
        plain = Recording(ProxyFactory(upstream_endpoint(reactor, f"127.0.0.1:{echo.port}")))
        port = await serverFromString(reactor, LOOP).listen(plain)
        self.addCleanup(port.stopListening)
        live = testing.proxy(self, upstream=f"127.0.0.1:{echo.port}")  # toxics may come: a fault wrapper
        for number, sides in ((port.getHost().port, plain.protocols), (live.port, None)):
            held = socket.create_connection(("127.0.0.1", number), timeout=DEADLINE)
            self.addCleanup(held.close)
            held.sendall(b"hi")
            self.assertEqual(await deferToThread(held.recv, 2), b"hi")
            [side] = sides if sides is not None else list(live._proxy.connections.live)  # type: ignore[attr-defined]
            bottom = side.upstream.transport
            while hasattr(bottom, "wrappedProtocol"):
                bottom = bottom.transport
            delivers_to = bottom.protocol
            self.assertIs(getattr(delivers_to, "wrappedProtocol", delivers_to), side.upstream)

    async def test_each_proxied_client_holds_two_descriptors(self) -> None:
        peer = self.echo_proxy()
        before = DESCRIPTORS.open
        held = socket.create_connection(("127.0.0.1", peer.port), timeout=DEADLINE)
        held.sendall(b"hi")
        self.assertEqual(await deferToThread(held.recv, 2), b"hi")
        self.assertEqual(DESCRIPTORS.open - before, 3, "the client's, the upstream's, and the echo's own")
        held.close()
        await wait_until(lambda: DESCRIPTORS.open == before, "every descriptor given back")

    async def test_max_connections_refuses_with_a_line(self) -> None:
        peer = self.echo_proxy(max_connections=1)
        first = socket.create_connection(("127.0.0.1", peer.port), timeout=DEADLINE)
        self.addCleanup(first.close)
        first.sendall(b"hold")
        self.assertEqual(await deferToThread(first.recv, 4), b"hold")
        got = await deferToThread(exchange, peer.port, b"", False)
        self.assertTrue(got.startswith(b"ERROR: "), got)

    async def test_idle_timeout_closes_both_sides(self) -> None:
        peer = self.echo_proxy(idle_timeout=0.2)
        got = await deferToThread(exchange, peer.port, b"idle", False)
        self.assertEqual(got, b"idle", "what came back, then the close at the idle timeout")

    async def test_down_refuses_and_up_listens_on_the_same_port(self) -> None:
        peer = self.echo_proxy()
        port = peer.port
        await peer.down()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE).close()
        peer.up()
        self.assertEqual(peer.port, port)
        self.assertEqual(await deferToThread(exchange, port, b"back"), b"back")


def over(family: int, address: Any, payload: bytes, wrap: Any = None) -> bytes:
    """A client on any socket family (and TLS with C{wrap}): send, half-close, read to the end."""
    with socket.socket(family, socket.SOCK_STREAM) as raw:
        raw.settimeout(DEADLINE)
        raw.connect(address)
        sock = wrap(raw) if wrap is not None else raw
        sock.sendall(payload)
        if wrap is None:
            sock.shutdown(socket.SHUT_WR)
        got = b""
        while len(got) < len(payload) and (chunk := sock.recv(65536)):
            got += chunk
        return got


def tls_to_the_end(port: int, payload: bytes, wrap: Any) -> bytes:
    """Send over TLS and read until the server's close: a FIN without close_notify raises C{SSLEOFError}."""
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as raw, wrap(raw) as sock:
        sock.sendall(payload)
        got = b""
        while chunk := sock.recv(65536):
            got += chunk
        return got


class EndpointTests(TestCase):
    """Any stream endpoint on either side: unix, tcp6, ssl to the client, tls to the upstream, haproxy:."""

    def scratch(self) -> str:
        directory = tempfile.mkdtemp(prefix="echoapp-proxy-")
        self.addCleanup(shutil.rmtree, directory, True)
        return directory

    async def test_unix_on_both_sides(self) -> None:
        directory = self.scratch()
        up, front = os.path.join(directory, "up.sock"), os.path.join(directory, "front.sock")
        testing.echo(self, listen=f"unix:{up}")
        testing.proxy(self, listen=f"unix:{front}", upstream=f"unix:{up}")
        self.assertEqual(await deferToThread(over, socket.AF_UNIX, front, b"over unix"), b"over unix")

    async def test_tcp6_on_both_sides(self) -> None:
        echo = testing.echo(self, listen=r"tcp6:0:interface=\:\:1")
        peer = testing.proxy(self, listen=r"tcp6:0:interface=\:\:1", upstream=f"[::1]:{echo.port}")
        self.assertEqual(peer.host, "::1")
        got = await deferToThread(over, socket.AF_INET6, ("::1", peer.port), b"over IPv6")
        self.assertEqual(got, b"over IPv6")

    async def test_ssl_to_the_client_and_tls_to_the_upstream(self) -> None:
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(self.scratch())
        roots = self.scratch()
        shutil.copy(paths["ca.pem"], roots)
        keys = f"privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        echo = testing.echo(self, listen=f"ssl:0:interface=127.0.0.1:{keys}")
        peer = testing.proxy(
            self,
            listen=f"ssl:0:interface=127.0.0.1:{keys}",
            upstream=f"tls:localhost:{echo.port}:trustRoots={roots}",
        )
        context = ssl.create_default_context(cafile=paths["ca.pem"])
        wrap = partial(context.wrap_socket, server_hostname="localhost")
        got = await deferToThread(over, socket.AF_INET, ("127.0.0.1", peer.port), b"TLS both ways", wrap)
        self.assertEqual(got, b"TLS both ways")

    async def test_tls_client_gets_close_notify_when_the_upstream_closes(self) -> None:
        """
        The upstream closing is passed on as TLS's close (close_notify), not a
        bare FIN: a strict client (Python's C{ssl}) reads a clean end, with and
        without faults, and nothing is logged as unhandled.
        """
        try:
            import OpenSSL  # noqa: F401
        except ImportError:
            self.skipTest("TLS needs pyOpenSSL")
        paths = make_certificates(self.scratch())
        keys = f"privateKey={paths['server.key']}:certKey={paths['server.pem']}"
        greeter = testing.greeter(self)
        context = ssl.create_default_context(cafile=paths["ca.pem"])
        wrap = partial(context.wrap_socket, server_hostname="localhost", suppress_ragged_eofs=False)
        for faults in (None, testing.Faults(latency=0.01)):
            peer = testing.proxy(
                self,
                listen=f"ssl:0:interface=127.0.0.1:{keys}",
                upstream=f"127.0.0.1:{greeter.port}",
                faults=faults,
            )
            got = await deferToThread(tls_to_the_end, peer.port, b"exit\n", wrap)
            self.assertIn(b"Goodbye!", got, f"faults {faults}")
            await peer.stop()
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_haproxy_listener_reads_the_header_and_forwards_the_rest(self) -> None:
        echo = testing.echo(self)
        peer = testing.proxy(
            self, listen="haproxy:tcp:0:interface=127.0.0.1", upstream=f"127.0.0.1:{echo.port}"
        )
        header = b"PROXY TCP4 10.1.1.1 127.0.0.1 1111 2222\r\n"
        got = await deferToThread(over, socket.AF_INET, ("127.0.0.1", peer.port), header + b"payload")
        self.assertEqual(got, b"payload", "the header is the proxy's, not the upstream's")


class TCPUpstreamTests(SynchronousTestCase):
    """
    L{TCPUpstream}: C{connectTCP} as Twisted's C{tcp:} endpoint calls it,
    the caller's protocol straight on the transport, the attempt's end in
    its Deferred.
    """

    def connecting(self) -> tuple[MemoryReactor, Any, Deferred[Any], Factory]:
        memory = MemoryReactor()
        factory = Factory.forProtocol(Protocol)
        attempt = TCPUpstream(memory, "127.0.0.1", 1234).connect(factory)
        [(host, port, connecting, timeout, bind)] = memory.tcpClients
        self.assertEqual((host, port, timeout, bind), ("127.0.0.1", 1234, 30, None))
        return memory, connecting, attempt, factory

    def test_connected_fires_with_the_callers_own_protocol(self) -> None:
        _, connecting, attempt, _ = self.connecting()
        protocol = connecting.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        self.assertIsInstance(protocol, Protocol)
        self.assertIs(type(protocol), Protocol, "not wrapped")
        self.assertIs(self.successResultOf(attempt), protocol)

    def test_refused_fails_with_the_reason(self) -> None:
        memory, connecting, attempt, _ = self.connecting()
        connecting.clientConnectionFailed(memory.connectors[0], Failure(ConnectionRefusedError()))
        self.failureResultOf(attempt, ConnectionRefusedError)

    def test_a_factory_that_builds_nothing_fails(self) -> None:
        _, connecting, attempt, factory = self.connecting()
        factory.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        self.assertIsNone(connecting.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234)))
        self.failureResultOf(attempt, NoProtocol)

    def test_cancel_stops_connecting(self) -> None:
        memory, connecting, attempt, _ = self.connecting()
        attempt.cancel()
        self.failureResultOf(attempt, ConnectingCancelledError)
        self.assertTrue(memory.connectors[0].stoppedConnecting)
        connecting.clientConnectionFailed(memory.connectors[0], Failure(ConnectionRefusedError()))

    def test_the_callers_factory_is_started_for_the_attempt(self) -> None:
        """Started as the attempt begins, stopped once it ends, whatever the connector does with its own."""
        _, connecting, attempt, factory = self.connecting()
        self.assertEqual(factory.numPorts, 1)
        connecting.doStart()
        self.assertEqual(factory.numPorts, 1, "the connector starts its own factory, not the caller's")
        connecting.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1234))
        self.successResultOf(attempt)
        self.assertEqual(factory.numPorts, 0)
        _, _, attempt, factory = self.connecting()
        attempt.cancel()
        self.failureResultOf(attempt, ConnectingCancelledError)
        self.assertEqual(factory.numPorts, 0, "stopped when the attempt ends otherwise too")

    def test_plain_tcp_upstreams_use_it_on_twisteds_reactors(self) -> None:
        memory = MemoryReactor()
        for upstream in ("127.0.0.1:99", "tcp:127.0.0.1:99", "tcp:host=127.0.0.1:port=99"):
            found = upstream_endpoint(memory, upstream)
            self.assertIsInstance(found, TCPUpstream)
            self.assertEqual((found.host, found.port), ("127.0.0.1", 99))  # type: ignore[attr-defined]
        self.assertNotIsInstance(upstream_endpoint(memory, "tcp:127.0.0.1:99:timeout=3"), TCPUpstream)
        self.assertNotIsInstance(upstream_endpoint(memory, "unix:/nowhere"), TCPUpstream)


class NeverReads(Protocol):
    """An upstream that takes the connection and never reads: what it is sent stays in the sockets."""

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]
        self.factory.made.append(self)  # type: ignore[attr-defined]

    def state(self) -> int:
        """Its socket's TCP state (Linux's C{TCP_INFO}): 1 while established, as it never reads."""
        info = self.transport.getHandle().getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)  # type: ignore[union-attr]
        return info[0]


class UpstreamCloseTests(TestCase):
    async def test_an_upstream_that_never_reads_is_let_go_after_the_close_grace(self) -> None:
        """
        The client's side closes (here at the idle timeout) while the
        upstream holds what the proxy sent it unread: the upstream's FIN
        waits behind those bytes, so its connection is aborted at the end of
        the close grace, as the client's own would be (it was held for ever:
        a descriptor and megabytes of buffers per such client).
        """
        upstream = Factory.forProtocol(NeverReads)
        upstream.made = []  # type: ignore[attr-defined]
        port = await serverFromString(reactor, LOOP).listen(upstream)
        self.addCleanup(port.stopListening)
        peer = testing.proxy(
            self, upstream=f"127.0.0.1:{port.getHost().port}", idle_timeout=0.3, close_grace=0.3
        )
        client = FloodClient(b"z" * (16 << 20), 0)
        await connect_tcp(peer.port, client)
        self.addCleanup(lambda: client.transport.abortConnection())  # type: ignore[union-attr]
        await wait_until(lambda: upstream.made, "the upstream connected")  # type: ignore[attr-defined]
        held: NeverReads = upstream.made[0]  # type: ignore[attr-defined]
        self.addCleanup(lambda: held.transport.abortConnection())  # type: ignore[union-attr]
        self.assertEqual(held.state(), 1, "established")
        await wait_until(lambda: held.state() != 1, "the proxy's side of it gone (an RST: it never drained)")


def arrive(proxy: ProxyFactory, peer: int, host: int) -> StringTransport:
    """A client from port C{peer} accepted on port C{host} (a fake transport)."""
    protocol = proxy.buildProtocol(IPv4Address("TCP", "127.0.0.1", peer))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", host),
        peerAddress=IPv4Address("TCP", "127.0.0.1", peer),
    )
    protocol.makeConnection(transport)
    return transport


def upstream_connects(memory: MemoryReactorClock, index: int, local: int, remote: int) -> None:
    """The C{index}th upstream attempt on C{memory} connects, from port C{local} to C{remote}."""
    connecting = memory.tcpClients[index][2]
    upstream = connecting.buildProtocol(IPv4Address("TCP", "127.0.0.1", remote))
    upstream.makeConnection(
        StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", local),
            peerAddress=IPv4Address("TCP", "127.0.0.1", remote),
        )
    )


class LoopTellingTests(SynchronousTestCase):
    """
    A forwarding loop is told by both ends of the proxy's upstream
    connection.  A local client may use the port number of a live upstream
    connection to another address (Linux shares an ephemeral port across
    destinations): by that port alone, 1 to 153 of 1,000 clients were cut
    as loops.
    """

    def test_a_client_on_an_upstream_connections_port_number_is_served(self) -> None:
        memory = MemoryReactorClock()
        proxy = ProxyFactory(TCPUpstream(memory, "127.0.0.1", 7000), clock=memory)
        arrive(proxy, 40000, 6000)
        upstream_connects(memory, 0, 50000, 7000)
        second = arrive(proxy, 50000, 6000)  # port 50000 again, to the proxy, not to 7000
        self.assertFalse(second.disconnecting, "served, not cut as a loop")
        self.assertEqual(len(memory.tcpClients), 2, "its own upstream connection asked for")

    def test_come_back_before_its_maker_heard_it_was_connected_it_is_cut_then(self) -> None:
        """
        The proxy accepts its own upstream connection before the side that
        made it hears it is connected (the two are ready in one pass of the
        reactor, in either order): cut when that side hears it.
        """
        memory = MemoryReactorClock()
        proxy = ProxyFactory(TCPUpstream(memory, "127.0.0.1", 6000), clock=memory)  # pointed at itself
        arrive(proxy, 40000, 6000)
        back = arrive(proxy, 50000, 6000)
        self.assertFalse(back.disconnecting, "nothing known of it yet")
        upstream_connects(memory, 0, 50000, 6000)
        self.assertTrue(back.disconnecting, "its maker connected: it is that connection, come back")

    def test_the_proxys_own_upstream_connection_come_back_is_cut(self) -> None:
        memory = MemoryReactorClock()
        proxy = ProxyFactory(TCPUpstream(memory, "127.0.0.1", 6000), clock=memory)  # pointed at itself
        arrive(proxy, 40000, 6000)
        upstream_connects(memory, 0, 50000, 6000)
        back = arrive(proxy, 50000, 6000)
        self.assertTrue(back.disconnecting, "its own upstream connection, arriving: cut")
        self.assertEqual(len(memory.tcpClients), 1, "no upstream asked for it")


class UpstreamDescriptorTests(SynchronousTestCase):
    """
    A proxied client's upstream descriptor counts against the ceiling from
    its admission, not from when its upstream connects: an accept batch
    admitted its clients before any upstream was counted, and past the
    ceiling C{accept()} met C{EMFILE} (Twisted then logs a line per socket
    it closes; under ulimit -n 200 and a burst, 51 lines).
    """

    def setUp(self) -> None:
        self.memory = MemoryReactorClock()
        self.proxy = ProxyFactory(TCPUpstream(self.memory, "127.0.0.1", 7000), clock=self.memory)
        self.before = DESCRIPTORS.open

    def held(self) -> int:
        return DESCRIPTORS.open - self.before

    def test_two_from_admission_to_the_close(self) -> None:
        client = arrive(self.proxy, 40000, 6000)
        self.assertEqual(self.held(), 2, "the client's and its upstream's, while it connects")
        upstream_connects(self.memory, 0, 50000, 7000)
        self.assertEqual(self.held(), 2, "the upstream's side holds its own now")
        client.loseConnection()
        [protocol] = list(self.proxy.connections.live)
        protocol.connectionLost(None)
        self.assertEqual(self.held(), 1, "the upstream's, until it closes too")

    def test_given_back_when_the_upstream_fails_or_the_client_leaves_first(self) -> None:
        arrive(self.proxy, 40000, 6000)
        connector = self.memory.connectors[0]
        self.memory.tcpClients[0][2].clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        [refused] = list(self.proxy.connections.live)
        self.assertEqual(self.held(), 1, "the attempt's descriptor given back as it fails")
        refused.connectionLost(None)
        self.assertEqual(self.held(), 0)
        arrive(self.proxy, 40001, 6000)
        [leaving] = list(self.proxy.connections.live)
        leaving.connectionLost(None)
        self.assertEqual(self.held(), 0, "the client left while its upstream connected")

    def test_a_ceiling_of_two_admits_one_proxied_client(self) -> None:
        self.patch(DESCRIPTORS, "ceiling", DESCRIPTORS.open + 2)
        first = arrive(self.proxy, 40000, 6000)
        second = arrive(self.proxy, 40001, 6000)
        self.assertFalse(first.disconnecting)
        self.assertTrue(second.value().startswith(b"ERROR: "), second.value())
        self.assertEqual(len(self.memory.tcpClients), 1, "no upstream asked for the refused one")


class StoppedTests(TestCase):
    def test_stop_drains(self) -> Deferred[Any]:
        echo = testing.echo(self)
        peer = testing.proxy(None, upstream=f"127.0.0.1:{echo.port}")
        return peer.stop()


class EagerSwitchTests(TestCase):
    def test_no_eager_writes_reaches_the_upstream_side_too(self) -> None:
        """
        C{--no-eager-writes} (or ECHOAPP_EAGER_WRITES=0) is for the whole
        process: the proxy's upstream connections too.
        """
        from echoapp._process import PROCESS
        from echoapp._proxy.forward import EagerConnecting, eager_connecting
        from echoapp._transports.eager import eager_problem

        if asyncio_loop(reactor) is not None or eager_problem() is not None:
            self.skipTest("eager writes are for Twisted's own reactors, where they work")
        self.patch(PROCESS, "eager_off", [])
        self.assertIsInstance(eager_connecting(reactor), EagerConnecting)
        self.patch(PROCESS, "eager_off", ["--no-eager-writes"])
        self.assertIs(eager_connecting(reactor), reactor)
