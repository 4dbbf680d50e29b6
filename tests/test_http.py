"""
The bounded HTTP site under both the metrics port and echoapp-proxy's API:
a newcomer displaces a connection that has waited past its grace, and on
loopback idle keep-alive and slowloris clients are cut by the cap and the
deadline while the operator's own calls get through; at a low descriptor
limit, idle API connections leave proxied clients their descriptors.
"""

from __future__ import annotations

import http.client
import resource
import socket
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource

from echoapp._http import BoundedSite, SiteLimits
from echoapp._limits.descriptors import DESCRIPTORS
from echoapp._proxy.api import API_LIMITS, api_service
from echoapp._proxy.registry import Proxies
from tests.support import DEADLINE, LOOP, Twistd, wait_until


class Ok(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b"ok\n"


def channel(site: BoundedSite) -> tuple[Any, StringTransport] | None:
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    if protocol is None:
        return None
    protocol.callLater = site.clock.callLater
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport


class DisplacementTests(SynchronousTestCase):
    def test_a_newcomer_displaces_the_longest_waiting_once_its_grace_is_over(self) -> None:
        clock = Clock()
        site = BoundedSite(Ok(), SiteLimits(max_connections=2, probe_slots=1, grace=1.0), clock)
        held = [channel(site) for _ in range(3)]
        self.assertIsNone(channel(site), "every slot is young: the newcomer is closed")
        clock.advance(0.5)
        busy = held[1]
        assert busy is not None
        busy[0].dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # answered: it waits again from now
        clock.advance(0.6)
        newcomer = channel(site)
        self.assertIsNotNone(newcomer)
        first, second, third = (pair[1] for pair in held if pair is not None)
        self.assertEqual(
            (first.disconnecting, second.disconnecting, third.disconnecting),
            (True, False, False),
            "the oldest",
        )
        self.assertEqual(site.live, 3)

    def test_a_line_over_the_bound_is_a_431(self) -> None:
        """A request line or a header over 16 KiB is told so, as Go's server tells it, then closed."""
        for request in (b"GET /" + b"x" * 17000, b"GET / HTTP/1.1\r\nX-Big: " + b"y" * 17000):
            made = channel(BoundedSite(Ok(), SiteLimits(), Clock()))
            assert made is not None
            protocol, transport = made
            protocol.dataReceived(request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "), transport.value()[:60])
            self.assertTrue(transport.disconnecting)

    def test_a_slow_body_is_cut_as_a_slow_head_is(self) -> None:
        clock = Clock()
        site = BoundedSite(Ok(), SiteLimits(head_timeout=2.0, max_body=100), clock)
        made = channel(site)
        assert made is not None
        protocol, transport = made
        protocol.dataReceived(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nab")
        clock.advance(2.0)
        self.assertTrue(transport.disconnecting or transport.disconnected)


def flood(port: int, idle: int, slow: int) -> list[socket.socket]:
    """C{idle} keep-alive clients (one request, then nothing) and C{slow} slowloris heads."""
    sockets = []
    for _ in range(idle + slow):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        sockets.append(sock)
    time.sleep(0.2)  # the connects complete (non-blocking): not an assertion's wait
    for index, sock in enumerate(sockets):
        head = (
            b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n" if index < idle else b"GET /version HTTP/1.1\r\nX-a: "
        )
        try:
            sock.send(head)
        except OSError:
            pass
    return sockets


def operator_call(port: int, method: str, path: str, within: float) -> int:
    """The operator's call, tried again while the port turns it away, for at most C{within} seconds."""
    end = time.monotonic() + within
    while True:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=within)
            connection.request(method, path)
            status = connection.getresponse().status
            connection.close()
            return status
        except (OSError, http.client.HTTPException):
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


class ApiAttackTests(TestCase):
    async def test_idle_and_slow_clients_are_cut_and_the_operator_gets_through(self) -> None:
        proxies = Proxies(reactor=reactor)
        limits = SiteLimits(**{**API_LIMITS.__dict__, "head_timeout": 3.0})
        api = api_service(proxies, LOOP, reactor, limits)
        proxies.startService()
        api.privilegedStartService()
        api.startService()
        self.addCleanup(proxies.stopService)
        self.addCleanup(api.stopService)
        site: Any = api.factory  # type: ignore[attr-defined]
        port = api.port.getHost().port  # type: ignore[union-attr]
        held = DESCRIPTORS.open  # before the proxy: its listener holds one until the DELETE gives it back
        proxies.add(proxies.make(proxies_spec()))
        sockets = await deferToThread(flood, port, 500, 300)
        self.addCleanup(lambda: [sock.close() for sock in sockets])
        self.assertLessEqual(site.live, limits.max_connections + limits.probe_slots, "the cap holds")
        # An operator's calls get through within a couple of seconds (the grace is one).
        self.assertEqual(await deferToThread(operator_call, port, "GET", "/version", 2.5), 200)
        self.assertEqual(await deferToThread(operator_call, port, "DELETE", "/proxies/d", 2.5), 204)
        await wait_until(lambda: site.live == 0, "every idle and slow client cut by the deadline")

        # What the server holds is bounded by the cap, and let go by the deadline;
        # clients past the listen backlog were never accepted (the kernel holds them).
        await wait_until(lambda: DESCRIPTORS.open == held, "the API's descriptors given back")


def proxies_spec() -> Any:
    from echoapp._proxy.schema import ProxySpec

    return ProxySpec("d", "127.0.0.1:0", "127.0.0.1:1")


class DescriptorTests(SynchronousTestCase):
    def test_idle_api_connections_leave_proxied_clients_their_descriptors(self) -> None:
        def low_limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

        echo = Twistd(["echoapp-echo", "--listen", LOOP, "--max-per-peer=1000"])
        self.addCleanup(echo.stop)
        proxy = Twistd(["echoapp-proxy", "--api", LOOP, "--max-per-peer=1000"], preexec=low_limit)
        self.addCleanup(proxy.stop)
        api = proxy.address_port("echoapp-proxy")
        connection = http.client.HTTPConnection("127.0.0.1", api, timeout=DEADLINE)
        upstream = f"127.0.0.1:{echo.address_port('echoapp-echo')}"
        body = f'{{"name": "e", "listen": "127.0.0.1:0", "upstream": "{upstream}"}}'
        connection.request("POST", "/proxies", body=body)
        response = connection.getresponse()
        listen = response.read().decode().split('"listen":"', 1)[1].split('"', 1)[0]
        connection.close()
        self.assertEqual(response.status, 201)
        idle = []
        for _ in range(250):  # more than the ceiling (about 160 at this limit) allows
            sock = socket.socket()
            sock.connect(("127.0.0.1", api))
            idle.append(sock)
        self.addCleanup(lambda: [sock.close() for sock in idle])
        # The API holds at most 64 + 4 of them, and while the rest come out
        # of the listen backlog each displaces one that waited a second,
        # whose descriptor is given back a reactor turn later: up to an
        # accept batch (50) at once.  Each proxied client holds two
        # descriptors (its own and its upstream's) from its admission; what
        # is left of the ceiling is theirs.
        ceiling = int(proxy.output.split("; at most ", 1)[1].split(" connections", 1)[0])
        room = (ceiling - 68 - 50) // 2
        self.assertGreaterEqual(room, 20, f"a ceiling of {ceiling} leaves proxied clients too little to test")
        clients = []
        for _ in range(room):
            sock = socket.create_connection(("127.0.0.1", int(listen.rsplit(":", 1)[1])), timeout=DEADLINE)
            clients.append(sock)
        answers = []
        for sock in clients:
            sock.sendall(b"ping")
            answers.append(sock.recv(4))
            sock.close()
        self.assertEqual(answers, [b"ping"] * room, "every proxied client served, none told busy")
        self.assertEqual(operator_call(api, "GET", "/version", 2.5), 200)
