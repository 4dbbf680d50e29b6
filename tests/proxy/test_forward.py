"""
echoapp-proxy's forwarding over loopback, against real upstreams: every
byte both ways, half-close passed through, resets passed on, backpressure
both ways, and the limits of the other TCP services.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, serverFromString
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from echoapp import testing
from echoapp._faults import reset
from echoapp._proxy.forward import ProxyFactory, upstream_endpoint
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
    recv_until_closed,
    wait_until,
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
        readers: Any = reactor.getReaders  # type: ignore[attr-defined]
        await wait_until(
            lambda: side.transport not in readers() and up not in readers(), "the proxy to stop reading"
        )
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
        [side] = list(peer.proxy.connections.live)  # type: ignore[union-attr]
        upstream = side.upstream.transport
        while hasattr(upstream, "wrappedProtocol") or hasattr(upstream, "transport"):
            upstream = getattr(upstream, "transport", upstream)
        native = isinstance(upstream, NativeConnection)
        self.assertEqual(native, asyncio_loop(reactor) is not None, repr(upstream))

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


class StoppedTests(TestCase):
    def test_stop_drains(self) -> Deferred[Any]:
        echo = testing.echo(self)
        peer = testing.proxy(None, upstream=f"127.0.0.1:{echo.port}")
        return peer.stop()
