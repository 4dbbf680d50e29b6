"""
Faults in either direction, changed while connections are open, each toxic
with its own toxicity, every choice from one seed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from echoapp import testing
from echoapp._faults import HELD_BYTES, Faults
from echoapp._proxy.api import status_of
from echoapp._proxy.errors import ProxyError
from echoapp._proxy.schema import toxic_from_json
from echoapp._proxy.toxics import ProxyFaults, merged
from tests.support import DEADLINE, LOOP, connect_tcp, recv_until_closed, wait_until, watched


def talk(port: int, first: bytes, change: object, then: bytes) -> tuple[bytes, bytes]:
    """
    One connection: C{first} and its echo, then C{change()} (run in the
    reactor by the caller's callback), then C{then} and all that comes back.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(first)
        got = b""
        while len(got) < len(first):
            got += sock.recv(65536)
        change()  # type: ignore[operator]
        sock.sendall(then)
        sock.shutdown(socket.SHUT_WR)
        return got, recv_until_closed(sock)


def cut_at(port: int, payload: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return len(recv_until_closed(sock))


class LiveFaultTests(TestCase):
    def setUp(self) -> None:
        self.echo = testing.echo(self)

    def proxy(self, **options: object) -> testing.ProxyPeer:
        return testing.proxy(self, upstream=f"127.0.0.1:{self.echo.port}", **options)  # type: ignore[arg-type]

    async def test_downstream_fault_reaches_an_open_connection(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.threads import blockingCallFromThread

        peer = self.proxy()

        def change() -> None:
            def apply() -> None:
                peer.faults = Faults(half_close_after_bytes=3)

            blockingCallFromThread(reactor, apply)

        first, rest = await deferToThread(talk, peer.port, b"ab", change, b"cdefgh")
        self.assertEqual((first, rest), (b"ab", b"cde"))

    async def test_upstream_fault_reaches_an_open_connection(self) -> None:
        from twisted.internet import reactor
        from twisted.internet.threads import blockingCallFromThread

        peer = self.proxy()

        def change() -> None:
            def apply() -> None:
                peer.faults_upstream = Faults(half_close_after_bytes=2)

            blockingCallFromThread(reactor, apply)

        first, rest = await deferToThread(talk, peer.port, b"ab", change, b"cdefgh")
        self.assertEqual((first, rest), (b"ab", b"cd"), "the upstream got 2 bytes and its FIN")

    async def test_a_half_closing_client_gets_every_delayed_reply(self) -> None:
        """
        The client sends and shuts down its side at once; the upstream
        answers and closes; the replies are still held by the latency when
        the upstream's close arrives.  (toxiproxy loses them at random.)
        """
        peer = self.proxy(faults=Faults(latency=0.05, slice=3))
        payload = b"every byte of this must arrive" * 100
        self.assertEqual(await deferToThread(cut_at, peer.port, payload), len(payload))

    async def test_removed_fault_stops_applying(self) -> None:
        peer = self.proxy(faults=Faults(half_close_after_bytes=1))
        self.assertEqual(await deferToThread(cut_at, peer.port, b"abc"), 1)
        peer.faults = Faults()
        self.assertEqual(await deferToThread(cut_at, peer.port, b"abc"), 3)

    async def test_toxicity_draws_repeat_with_the_seed(self) -> None:
        async def pattern(seed: int) -> list[int]:
            peer = self.proxy(faults=Faults(half_close_after_bytes=1, fraction=0.5), seed=seed)
            cuts = [await deferToThread(cut_at, peer.port, b"abc") for _ in range(16)]
            await peer.stop()
            return cuts

        first, again, other = await pattern(7), await pattern(7), await pattern(8)
        self.assertEqual(first, again, "one seed, one run")
        self.assertEqual(set(first), {1, 3}, "toxicity 0.5: some connections spared, some not")
        self.assertNotEqual(first, other, "another seed, other choices")


class ToxicUnitTests(SynchronousTestCase):
    def test_toxiproxy_types_map_onto_faults(self) -> None:
        cases = {
            '{"type": "latency", "attributes": {"latency": 100, "jitter": 10}}': Faults(
                latency=0.1, jitter=0.01
            ),
            '{"type": "bandwidth", "attributes": {"rate": 16}}': Faults(bandwidth=16000),
            '{"type": "slow_close", "attributes": {"delay": 500}}': Faults(slow_close=0.5),
            '{"type": "reset_peer", "attributes": {"timeout": 2000}}': Faults(reset_after=2.0),
            '{"type": "limit_data", "attributes": {"bytes": 9}}': Faults(half_close_after_bytes=9),
            '{"type": "slicer", "attributes": {"average_size": 4, "delay": 1000}}': Faults(
                slice=4, slice_delay=0.001
            ),
            '{"type": "slicer", "attributes": {"average_size": 8, "size_variation": 3}}': Faults(
                slice=8, slice_variation=3
            ),
            '{"type": "timeout", "attributes": {"timeout": 0}}': Faults(stall="answer"),
            '{"type": "timeout", "attributes": {"timeout": 250}}': Faults(stall="answer", close_after=0.25),
            '{"type": "echoapp", "attributes": {"stall": "read"}}': Faults(stall="read"),
        }
        import json

        for text, faults in cases.items():
            self.assertEqual(toxic_from_json(json.loads(text)).faults, faults, text)

    def test_refusals_are_one_line_with_toxiproxys_status(self) -> None:
        for body, status, said in [
            ({"type": "nope"}, 400, "invalid toxic type"),
            ({"type": "latency", "stream": "sideways"}, 400, "stream was invalid"),
            ({"type": "latency", "attributes": {"latency": "abc"}}, 400, "bad request body"),
            ({"type": "latency", "toxicity": 2}, 400, "toxicity"),
            ({"type": "echoapp", "attributes": {"latency": "fast"}}, 400, "fault latency"),
            ([], 400, "bad request body"),
        ]:
            with self.assertRaises(ProxyError) as caught:
                toxic_from_json(body)
            self.assertEqual(status_of(caught.exception), status)
            self.assertIn(said, str(caught.exception))
            self.assertNotIn("\n", str(caught.exception))

    def test_an_unknown_attribute_is_left_out_and_named(self) -> None:
        """toxiproxy's JSON decoder drops it and answers 200; echoapp does too, and says which."""
        toxic = toxic_from_json({"type": "latency", "attributes": {"latency": 5, "bogus": 1}})
        self.assertEqual(toxic.attributes, {"latency": 5, "jitter": 0})
        self.assertEqual(toxic.faults, Faults(latency=0.005))
        self.assertEqual(toxic.ignored, ("bogus",))

    def test_latencies_add_and_the_last_of_the_rest_wins(self) -> None:
        both = merged([Faults(latency=0.1, slice=4), Faults(latency=0.05, slice=8)])
        self.assertEqual(both, Faults(latency=0.15000000000000002, slice=8))

    def test_a_connection_keeps_its_draw_across_changes(self) -> None:
        proxy = ProxyFaults(seed=1)
        proxy.set(toxic_from_json({"type": "limit_data", "toxicity": 0.5, "attributes": {"bytes": 1}}))
        links = [proxy.link("downstream") for _ in range(20)]
        before = [link.current() is not None for link in links]
        proxy.set(toxic_from_json({"type": "latency", "name": "other", "stream": "upstream"}))
        self.assertEqual([link.current() is not None for link in links], before)
        self.assertEqual(set(before), {True, False})

    def test_toxicity_is_drawn_per_stream_from_the_one_seed(self) -> None:
        """The same seed, the same luck; and a connection's luck upstream does not decide downstream's."""

        def luck(seed: int) -> list[tuple[bool, bool]]:
            proxy = ProxyFaults(seed=seed)
            for stream in ("upstream", "downstream"):
                proxy.set(
                    toxic_from_json(
                        {
                            "type": "latency",
                            "name": stream,
                            "stream": stream,
                            "toxicity": 0.5,
                            "attributes": {"latency": 100},
                        }
                    )
                )
            links = [(proxy.link("upstream"), proxy.link("downstream")) for _ in range(40)]
            return [(up.current() is not None, down.current() is not None) for up, down in links]

        self.assertEqual(luck(5), luck(5))
        self.assertNotEqual([up for up, _ in luck(5)], [down for _, down in luck(5)])


class Flood(Protocol):
    """An upstream that sends 16 MiB as soon as it is connected, then closes."""

    SIZE = 16 << 20

    def connectionMade(self) -> None:
        self.transport.write(b"d" * self.SIZE)  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]


class Reader(Protocol):
    """A client that does not read until told to, then counts to the end."""

    def __init__(self) -> None:
        self.received = 0
        self.done: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += len(data)

    def connectionLost(self, reason: object = None) -> None:
        self.done.callback(None)


class HeldBytesTests(TestCase):
    async def test_what_the_faults_hold_pauses_the_upstream(self) -> None:
        """
        A downstream latency holds the server's bytes in the proxy, not in
        a transport's buffer: past the bound, the upstream must be paused,
        or a fast server and a slow client grow the proxy without limit.
        """
        from twisted.internet import reactor
        from twisted.internet.endpoints import serverFromString

        listening = await serverFromString(reactor, LOOP).listen(Factory.forProtocol(Flood))
        self.addCleanup(listening.stopListening)
        peer = running_proxy(self, listening.getHost().port, Faults(latency=0.02))
        client = Reader()
        await connect_tcp(peer.port.getHost().port, client)
        await wait_until(lambda: peer.connections.live, "the proxied connection")
        [side] = list(peer.connections.live)
        await wait_until(lambda: side.upstream is not None, "the upstream")
        faulty = side.transport
        await wait_until(lambda: not watched(side.upstream.transport.transport), "the upstream to be paused")
        self.assertLess(faulty.sending.queue.held, 4 * HELD_BYTES, "held bytes stay bounded")
        client.transport.resumeProducing()  # type: ignore[union-attr]
        await client.done
        self.assertEqual(client.received, Flood.SIZE)


def running_proxy(test: TestCase, upstream: int, faults: Faults | None = None) -> Any:
    """
    One proxy of its own L{Proxies} to C{upstream} on loopback, stopped at
    cleanup: the registry's proxy itself, for its toxics and connections.
    """
    from echoapp._proxy.registry import Proxies
    from echoapp._proxy.schema import ProxySpec
    from echoapp._proxy.toxics import Toxic

    proxies = Proxies()
    toxics = [Toxic("down", "echoapp", "downstream", 1.0, faults)] if faults else []
    proxy = proxies.add(proxies.make(ProxySpec("p", "127.0.0.1:0", f"127.0.0.1:{upstream}"), toxics))
    proxies.privilegedStartService()
    proxies.startService()
    test.addCleanup(proxies.stopService)
    return proxy


def toxic(proxy: Any, kind: str, stream: str = "downstream", **attributes: int) -> None:
    """A toxiproxy toxic on C{proxy}, as its API would add it."""
    proxy.add_toxic(toxic_from_json({"type": kind, "stream": stream, "attributes": attributes}))


def until_closed(sock: socket.socket) -> tuple[bytes, str]:
    """Everything that arrives, and how the connection ended: C{"fin"}, C{"rst"}."""
    got = b""
    try:
        while data := sock.recv(65536):
            got += data
    except ConnectionResetError:
        return got, "rst"
    return got, "fin"


def quiet_for(sock: socket.socket, seconds: float) -> bool:
    """Whether nothing (no byte, no close) arrives within C{seconds}."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    except ConnectionResetError:
        return False
    finally:
        sock.settimeout(DEADLINE)
    return False


class ToxiproxyTimingTests(TestCase):
    """
    Each toxiproxy toxic times its fault as toxiproxy does, measured on the
    wire through the proxy to an echo server (toxiproxy's figures, with
    generous bounds: a loaded machine is late, never early).
    """

    def setUp(self) -> None:
        self.echo = testing.echo(self)
        self.peer = running_proxy(self, self.echo.port)

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.peer.port.getHost().port), timeout=DEADLINE)
        self.addCleanup(sock.close)
        return sock

    async def test_timeout_is_an_idle_timer(self) -> None:
        """Sends at 0 s and 0.3 s, timeout=500: closed at about 0.8 s (toxiproxy: 0.80 s), not 0.5 s."""
        toxic(self.peer, "timeout", timeout=500)

        def client() -> tuple[float, bytes, str]:
            sock = self.connect()
            start = time.monotonic()
            sock.sendall(b"a")
            quiet = quiet_for(sock, 0.3)
            sock.sendall(b"b")
            got, how = until_closed(sock)
            return time.monotonic() - start, got if quiet else b"early", how

        elapsed, got, how = await deferToThread(client)
        self.assertEqual((got, how), (b"", "fin"), "the data dropped, then a FIN")
        self.assertGreaterEqual(elapsed, 0.75, "the second chunk started the timer again")
        self.assertLess(elapsed, 3.0)

    async def test_timeout_never_closes_a_connection_that_keeps_talking(self) -> None:
        """A PING every 200 ms against timeout=500: still open after 2 s (toxiproxy: never closes)."""
        toxic(self.peer, "timeout", timeout=500)

        def client() -> bool:
            sock = self.connect()
            for _ in range(10):
                sock.sendall(b"PING\r\n")
                if not quiet_for(sock, 0.2):
                    return False
            return True

        self.assertTrue(await deferToThread(client))

    async def test_reset_peer_counts_from_the_first_chunk_and_swallows_it(self) -> None:
        """A silent connection is never reset; the first chunk starts the count and is not passed on."""
        toxic(self.peer, "reset_peer", timeout=300)

        def client() -> tuple[bool, float, bytes, str]:
            sock = self.connect()
            silent_kept = quiet_for(sock, 0.6)
            sock.sendall(b"hello")
            start = time.monotonic()
            got, how = until_closed(sock)
            return silent_kept, time.monotonic() - start, got, how

        silent_kept, elapsed, got, how = await deferToThread(client)
        self.assertTrue(silent_kept, "no reset while the client sends nothing")
        self.assertEqual((got, how), (b"", "rst"), "the echo swallowed, then an RST")
        self.assertGreaterEqual(elapsed, 0.25)
        self.assertLess(elapsed, 3.0)

    async def test_reset_peer_added_to_an_open_connection_closes_with_a_fin(self) -> None:
        """toxiproxy sets SO_LINGER 0 only on connections opened while the toxic is there."""

        def client() -> tuple[bytes, str]:
            sock = self.connect()
            sock.sendall(b"a")
            first = sock.recv(10)
            from twisted.internet import reactor
            from twisted.internet.threads import blockingCallFromThread

            blockingCallFromThread(reactor, toxic, self.peer, "reset_peer", timeout=100)
            sock.sendall(b"b")
            got, how = until_closed(sock)
            return first + got, how

        self.assertEqual(await deferToThread(client), (b"a", "fin"))

    async def test_limit_data_upstream_closes_the_whole_connection(self) -> None:
        """bytes=1000 upstream, 2000 sent: nothing of the echo comes back (toxiproxy: 0 bytes)."""
        toxic(self.peer, "limit_data", stream="upstream", bytes=1000)

        def client() -> tuple[bytes, str]:
            sock = self.connect()
            sock.sendall(b"x" * 2000)
            return until_closed(sock)

        got, how = await deferToThread(client)
        self.assertEqual(len(got), 0)
        self.assertIn(how, ("fin", "rst"))

    async def test_slices_leave_one_at_a_time(self) -> None:
        """
        average 100, variation 50, delay 1 ms, 10 kB: toxiproxy's client
        reads about 100 times, 32-150 B each.  The client is a process of
        its own, so that its reads are not held back by the proxy's.
        """
        toxic(self.peer, "slicer", average_size=100, size_variation=50, delay=1000)
        script = (
            "import socket,sys\n"
            f"s=socket.create_connection(('127.0.0.1',{self.peer.port.getHost().port}),timeout={DEADLINE})\n"
            "s.sendall(b'x'*10000);n=0;sizes=[]\n"
            "while n<10000:\n d=s.recv(65536);n+=len(d);sizes.append(len(d))\n"
            "print(' '.join(map(str,sizes)))\n"
        )
        result = await deferToThread(
            subprocess.run, [sys.executable, "-c", script], capture_output=True, text=True, timeout=DEADLINE
        )
        sizes = sorted(int(size) for size in result.stdout.split())
        self.assertEqual(sum(sizes), 10_000, result.stderr)
        self.assertGreater(len(sizes), 50, "about 100 reads, not a few bunches")
        self.assertLessEqual(sizes[len(sizes) // 2], 150, "the median read is one slice")


class SlicesOnALateClockTests(SynchronousTestCase):
    """
    toxiproxy's slicer sends one slice, waits its delay, sends the next: a
    timer that fires late (a busy reactor) sends one slice, not every slice
    that came due meanwhile in one write, which a client would read as one
    bunch (seen on the default reactor: reads of 4.5 kB among 100 B ones).
    """

    def test_a_late_timer_sends_one_slice(self) -> None:
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from echoapp._proxy.toxics import faulty_factory

        class Writes(StringTransport):
            def __init__(self) -> None:
                super().__init__()
                self.writes: list[bytes] = []

            def write(self, data: bytes) -> None:
                self.writes.append(data)
                super().write(data)

        clock = Clock()
        proxy = ProxyFaults(seed=1, clock=clock)
        slicer = {"type": "slicer", "attributes": {"average_size": 100, "size_variation": 50, "delay": 1000}}
        proxy.set(toxic_from_json(slicer))
        connection = faulty_factory(Factory.forProtocol(Protocol), proxy, "downstream").buildProtocol(None)
        transport = Writes()
        connection.makeConnection(transport)
        connection.write(b"x" * 10_000)
        clock.advance(0)
        for _ in range(5):
            before = len(transport.writes)
            clock.advance(0.05)  # fifty delays at once
            self.assertEqual(len(transport.writes), before + 1, "one slice per timer")
        self.assertTrue(all(50 <= len(piece) <= 150 for piece in transport.writes), transport.writes)
